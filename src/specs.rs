//! The specs shipped in `specs/`, embedded in the binary so `--spec iso87ascii`
//! and the embedded default config work from any directory.

use std::path::Path;

use crate::iso8583::{Spec, SpecError};

/// (name, TOML text) of every shipped spec.
pub const BUILTIN: &[(&str, &str)] = &[
    ("iso87ascii", include_str!("../specs/iso87ascii.toml")),
    (
        "iso87ascii-hexbitmap",
        include_str!("../specs/iso87ascii-hexbitmap.toml"),
    ),
    ("iso87bcd", include_str!("../specs/iso87bcd.toml")),
    ("iso87ebcdic", include_str!("../specs/iso87ebcdic.toml")),
    ("iso93ascii", include_str!("../specs/iso93ascii.toml")),
];

/// A shipped spec by name (`iso87ascii`, or `specs/iso87ascii.toml`).
pub fn builtin(name: &str) -> Option<Result<Spec, SpecError>> {
    builtin_entry(name).map(|(n, text)| Spec::from_toml_str(text, &format!("built-in spec {n}")))
}

/// Whether `name` names a shipped spec, without compiling it.
pub fn is_builtin(name: &str) -> bool {
    builtin_entry(name).is_some()
}

fn builtin_entry(name: &str) -> Option<&'static (&'static str, &'static str)> {
    let stem = name
        .strip_prefix("specs/")
        .unwrap_or(name)
        .trim_end_matches(".toml");
    BUILTIN.iter().find(|(n, _)| *n == stem)
}

/// A spec file if `path` exists, else the shipped spec of that name. A bare
/// name that is neither (`iso87asci`) is answered with the built-in names.
pub fn resolve(path: &Path) -> Result<Spec, SpecError> {
    if !path.exists() {
        if let Some(spec) = path.to_str().and_then(builtin) {
            return spec;
        }
        let bare_name = path.parent() == Some(Path::new("")) && path.extension().is_none();
        if bare_name {
            return Err(SpecError::Invalid {
                origin: path.display().to_string(),
                message: format!(
                    "no such spec file, nor a built-in spec (built-in: {})",
                    builtin_names()
                ),
            });
        }
    }
    Spec::load(path)
}

/// The built-in spec names, comma-separated.
pub fn builtin_names() -> String {
    let names: Vec<&str> = BUILTIN.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_spec_compiles() {
        for (name, _) in BUILTIN {
            let spec = builtin(name).expect("listed").expect("compiles");
            assert!(spec.field(2).is_some(), "{name} defines field 2");
        }
    }

    #[test]
    fn resolves_names_and_paths_of_shipped_specs() {
        assert!(resolve(Path::new("iso87bcd")).is_ok());
        assert!(resolve(Path::new("specs/iso87ebcdic.toml")).is_ok());
        let err = resolve(Path::new("no-such-spec")).expect_err("unknown");
        assert!(err.to_string().contains("no-such-spec"), "{err}");
    }

    #[test]
    fn a_misspelled_builtin_name_is_answered_with_the_builtin_names() {
        let err = resolve(Path::new("iso87asci")).expect_err("misspelled");
        let text = err.to_string();
        assert!(text.starts_with("iso87asci: "), "{text}");
        for (name, _) in BUILTIN {
            assert!(text.contains(name), "{name} in {text}");
        }
        let err = resolve(Path::new("no-such-dir/my.toml")).expect_err("a path");
        assert!(matches!(err, SpecError::Read { .. }), "{err}");
    }
}
