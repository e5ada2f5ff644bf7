//! `spec import`, `spec export` and `spec show`: bring the specs users already
//! have (jPOS GenericPackager XML, moov-io JSON) and look at ours.

use std::path::PathBuf;

use anyhow::{Context, Result};
use isoswitch::iso8583::{import, Spec};

#[derive(clap::Subcommand)]
pub enum SpecCommand {
    /// Convert a jPOS GenericPackager XML or moov-io JSON spec to our TOML (stdout).
    #[command(after_help = import::supported_help())]
    Import {
        /// The file to import; its format is told by extension or first character.
        file: PathBuf,
    },
    /// Write a spec as TOML or moov-io JSON (stdout).
    Export {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long, value_enum, default_value = "toml")]
        format: ExportFormat,
    },
    /// Print the field table of a spec.
    Show {
        #[arg(long)]
        spec: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ExportFormat {
    Toml,
    Moov,
}

pub fn run(command: SpecCommand) -> Result<()> {
    match command {
        SpecCommand::Import { file } => {
            let origin = file.display().to_string();
            let bytes = std::fs::read(&file).with_context(|| format!("reading {origin}"))?;
            match import::from_bytes(&bytes, &origin) {
                Ok(imported) => {
                    print_lines(&imported.warnings);
                    super::stdout::print(imported.spec.to_toml())?;
                }
                Err(failed) => {
                    print_lines(&failed.warnings);
                    print_lines(&failed.problems);
                    anyhow::bail!(
                        "{origin}: not imported: {} problem{} (listed above)",
                        failed.problems.len(),
                        if failed.problems.len() == 1 { "" } else { "s" }
                    );
                }
            }
        }
        SpecCommand::Export { spec, format } => {
            let spec = isoswitch::specs::resolve(&spec)?;
            match format {
                ExportFormat::Toml => super::stdout::print(spec.to_toml())?,
                ExportFormat::Moov => super::stdout::println(import::to_moov_json(&spec)?)?,
            }
        }
        SpecCommand::Show { spec } => {
            super::stdout::print(show(&isoswitch::specs::resolve(&spec)?))?
        }
    }
    Ok(())
}

/// One line each on stderr: an import's warnings and problems.
fn print_lines(lines: &[impl std::fmt::Display]) {
    for line in lines {
        eprintln!("{line}");
    }
}

/// The field table `spec show` prints.
fn show(spec: &Spec) -> String {
    let mut out = format!(
        "{}  (MTI {}, bitmap {})\n",
        spec.name, spec.mti_encoding, spec.bitmap_encoding
    );
    for f in spec.fields() {
        let prefix = match f.length {
            isoswitch::iso8583::spec::LengthKind::Fixed => String::new(),
            _ => format!(" prefix {}", f.prefix),
        };
        out.push_str(&format!(
            "{:>4}  {:<45} {:<14} {}{}\n",
            f.number,
            f.name,
            f.layout(),
            f.encoding,
            prefix
        ));
    }
    out
}
