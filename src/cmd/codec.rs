//! `parse`, `build` and `explain`: one message between stdin and stdout.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use isoswitch::iso8583::{explain as table, json, Message, Spec};

#[derive(clap::Args)]
pub struct CodecArgs {
    /// Spec file (TOML), or the name of a built-in spec such as `iso87ascii`.
    #[arg(long)]
    spec: PathBuf,
    /// Read (or write) hex text instead of raw bytes.
    #[arg(long)]
    hex: bool,
}

fn load_spec(args: &CodecArgs) -> Result<Spec> {
    Ok(isoswitch::specs::resolve(&args.spec)?)
}

fn read_stdin() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading stdin")?;
    Ok(input)
}

/// Hex text with any whitespace between the digits.
fn unhex(text: &[u8]) -> Result<Vec<u8>> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(digits.len() / 2);
    if let Err(i) = isoswitch::iso8583::encoding::hex::decode_into(&digits, &mut out) {
        match digits.get(i) {
            Some(&c) => bail!(
                "stdin: expected hex text, found {:?} at hex digit {i}",
                char::from(c)
            ),
            None => bail!(
                "stdin: expected an even number of hex digits, found {}",
                digits.len()
            ),
        }
    }
    Ok(out)
}

fn read_message(args: &CodecArgs, spec: &Spec) -> Result<Message> {
    let input = read_stdin()?;
    let bytes = if args.hex { unhex(&input)? } else { input };
    if bytes.is_empty() {
        bail!("stdin: expected one message, found no input");
    }
    let msg = Message::decode(spec, Bytes::from(bytes))?;
    // parse and explain show every subfield, so they are checked here too.
    msg.check_subfields(spec)?;
    Ok(msg)
}

pub fn parse(args: &CodecArgs) -> Result<()> {
    let spec = load_spec(args)?;
    let msg = read_message(args, &spec)?;
    super::stdout::println(json::to_json(&spec, &msg))?;
    Ok(())
}

pub fn build(args: &CodecArgs) -> Result<()> {
    let spec = load_spec(args)?;
    let input = read_stdin()?;
    let text = std::str::from_utf8(&input).context("stdin: expected UTF-8 JSON")?;
    let msg = json::from_json_str(&spec, text)?;
    let wire = msg.encode(&spec)?;
    if args.hex {
        super::stdout::println(isoswitch::iso8583::encoding::hex::to_string(&wire))?;
    } else {
        super::stdout::print(&wire)?;
    }
    Ok(())
}

pub fn explain(args: &CodecArgs) -> Result<()> {
    let spec = load_spec(args)?;
    let msg = read_message(args, &spec)?;
    super::stdout::print(table::explain(&spec, &msg))?;
    Ok(())
}
