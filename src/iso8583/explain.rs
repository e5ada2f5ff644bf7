//! `explain`: a message as a table a person reads. Card data is masked here as in
//! logs (PAN first 6 / last 4, track data and PIN blocks hidden), so the output
//! can be pasted into a ticket. Subfields of composite fields are indented under
//! their field, with dotted ids (`48.22`).

use std::fmt::Write;

use super::composite::{Composite, SubValue};
use super::composite_spec::CompositeSpec;
use super::emv;
use super::fields::mask_pan;
use super::json::to_json;
use super::message::Message;
use super::response_code::ResponseCode;
use super::spec::{ContentClass, Spec};

/// What a message type means.
pub fn mti_meaning(mti: &str) -> &'static str {
    match mti.get(1..3) {
        Some("10") => "authorization request",
        Some("11") => "authorization response",
        Some("12") => "authorization advice",
        Some("13") => "authorization advice response",
        Some("20") => "financial request",
        Some("21") => "financial response",
        Some("22") => "financial advice",
        Some("23") => "financial advice response",
        Some("40") => "reversal request",
        Some("41") => "reversal response",
        Some("42") => "reversal advice",
        Some("43") => "reversal advice response",
        Some("80") => "network management request",
        Some("81") => "network management response",
        _ => "other",
    }
}

/// The value shown for field `n`, masked where it carries card secrets.
pub fn display_value(spec: &Spec, n: u8, value: &[u8]) -> String {
    let text = || String::from_utf8_lossy(value).into_owned();
    match n {
        2 => mask_pan(&text()),
        // Track 2: masked PAN, the rest (expiry, service code, CVV) hidden.
        35 => mask_track(&text()),
        // Track 3, track 1, PIN block, security data: never shown.
        36 | 45 | 52 | 53 => "*".repeat(value.len().clamp(4, 16)),
        // ICC data can carry the PAN (5A) and track 2 (57): only the masked
        // tag rows below the field are shown.
        55 if spec.field(55).is_some_and(|f| f.class.is_binary()) => {
            format!("({} bytes of BER-TLV, tags below)", value.len())
        }
        _ if spec.field(n).is_some_and(|f| f.composite.is_some()) => {
            format!("({} bytes, subfields below)", value.len())
        }
        _ => match to_json(spec, &single(n, value))["fields"][n.to_string()].as_str() {
            Some(s) => s.to_string(),
            None => text(),
        },
    }
}

/// Track data: the masked PAN, the rest (expiry, service code, CVV) hidden.
fn mask_track(t: &str) -> String {
    let pan_end = t.find(['=', 'D']).unwrap_or(t.len());
    format!(
        "{}{}",
        mask_pan(&t[..pan_end]),
        "*".repeat(t.len() - pan_end)
    )
}

fn single(n: u8, value: &[u8]) -> Message {
    let mut m = Message::new(super::message::Mti::from_static("0000"));
    // `n` comes from a decoded message, so it is a data field.
    let _ = m.set(n, value);
    m
}

/// The table for one message.
pub fn explain(spec: &Spec, msg: &Message) -> String {
    let mut out = String::new();
    let mti = msg.mti();
    let _ = writeln!(out, "MTI  {mti}  {}", mti_meaning(mti.as_str()));
    let _ = writeln!(out, "spec {}", spec.name);
    for (n, value) in msg.iter() {
        let name = spec.field(n).map_or("(not in spec)", |f| f.name.as_str());
        let shown = display_value(spec, n, value);
        let note = match n {
            39 => msg
                .response_code()
                .map(|c| c.meaning().to_string())
                .unwrap_or_default(),
            3 => msg
                .processing_code()
                .map(|p| p.describe().to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let _ = write!(out, "{n:>4}  {name:<40} {shown}");
        if !note.is_empty() {
            let _ = write!(out, "  ({note})");
        }
        out.push('\n');
        if let Some(composite) = spec.field(n).and_then(|f| f.composite.as_deref()) {
            match msg.subfields(spec, n) {
                Ok(Some(subfields)) => {
                    explain_subfields(&mut out, composite, &subfields, &n.to_string(), 1)
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = writeln!(out, "        (subfields do not decode: {e})");
                }
            }
        }
        if n == 55 && spec.field(55).is_some_and(|f| f.class.is_binary()) {
            match emv::describe(value) {
                Ok(rows) => {
                    for (tag, tag_name, hex) in rows {
                        let _ = writeln!(
                            out,
                            "        {tag:<6} {:<34} {hex}",
                            tag_name.unwrap_or("(unknown tag)")
                        );
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "        (not valid BER-TLV: {e})");
                }
            }
        }
    }
    out
}

/// One row per subfield, indented by `depth`, nested composites below theirs.
fn explain_subfields(
    out: &mut String,
    spec: &CompositeSpec,
    value: &Composite,
    path: &str,
    depth: usize,
) {
    for entry in value.entries() {
        let sub = spec.subfield(&entry.id);
        let id = format!("{path}.{}", entry.id);
        let name = sub.map_or("(not in spec)", |s| s.field.name.as_str());
        let indent = "  ".repeat(depth);
        let width = 40usize.saturating_sub(2 * depth);
        match &entry.value {
            SubValue::Value(v) => {
                let class = sub.map(|s| s.field.class);
                let _ = writeln!(
                    out,
                    "{indent}{id:<8}  {name:<width$} {}",
                    subfield_text(v, class)
                );
            }
            SubValue::Composite(c) => {
                let _ = writeln!(out, "{indent}{id:<8}  {name:<width$} (subfields below)");
                if let Some(nested) = sub.and_then(|s| s.field.composite.as_deref()) {
                    explain_subfields(out, nested, c, &id, depth + 1);
                }
            }
        }
    }
}

/// A subfield value as shown: binary as hex, track data (class `z`) masked as
/// field 35 is, and anything that looks like a card number (13–19 digits)
/// masked, since what a private subfield carries is not known here.
fn subfield_text(value: &[u8], class: Option<ContentClass>) -> String {
    let text = String::from_utf8_lossy(value);
    match class {
        Some(ContentClass::B) => return super::encoding::hex::to_string(value),
        Some(ContentClass::Z) => return mask_track(&text),
        _ => {}
    }
    if (13..=19).contains(&value.len()) && value.iter().all(u8::is_ascii_digit) {
        return mask_pan(&text);
    }
    text.into_owned()
}

/// Meaning of a response code, for callers that only have text.
pub fn response_code_meaning(code: &str) -> &'static str {
    code.parse::<ResponseCode>()
        .map(|c| c.meaning())
        .unwrap_or("not a response code")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::Mti;

    #[test]
    fn card_secrets_never_appear_in_the_table() {
        let spec = crate::specs::builtin("iso87ascii")
            .expect("shipped")
            .expect("compiles");
        let mut msg = Message::new(Mti::from_static("0100"));
        msg.set(2, "4111111111111111").expect("field");
        msg.set(35, "4111111111111111=28121010000000000000")
            .expect("field");
        msg.set(52, [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF])
            .expect("field");
        let mut icc = Vec::new();
        icc.extend_from_slice(&[0x5A, 0x08, 0x41, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11]);
        msg.set(55, icc).expect("field");
        msg.set(39, "05").expect("field");
        let table = explain(&spec, &msg);
        assert!(!table.contains("4111111111111111"), "{table}");
        assert!(!table.contains("0123456789ABCDEF"), "{table}");
        assert!(!table.contains("5A084111"), "{table}");
        assert!(table.contains("411111******1111"), "{table}");
        assert!(table.contains("do not honour"), "{table}");
    }
}
