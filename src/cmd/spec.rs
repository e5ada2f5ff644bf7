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
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {origin}"))?;
            let is_xml = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
                || text.trim_start().starts_with('<');
            let spec = if is_xml {
                import::from_jpos_xml(&text, &origin)?
            } else {
                import::from_moov_json(&text, &origin)?
            };
            super::stdout::print(spec.to_toml())?;
        }
        SpecCommand::Export { spec, format } => {
            let spec = isoswitch::specs::resolve(&spec)?;
            match format {
                ExportFormat::Toml => super::stdout::print(spec.to_toml())?,
                ExportFormat::Moov => super::stdout::println(import::to_moov_json(&spec))?,
            }
        }
        SpecCommand::Show { spec } => {
            super::stdout::print(show(&isoswitch::specs::resolve(&spec)?))?
        }
    }
    Ok(())
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
