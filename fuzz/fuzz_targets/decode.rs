//! Feeds arbitrary bytes to the decoder of every shipped spec and of the
//! composite test spec. A decoded message must re-encode, and the re-encoded
//! bytes must decode to the same message; the subfields of every composite
//! field are decoded too, and those that decode must encode back to the same
//! bytes.
#![no_main]

use std::sync::OnceLock;

use isoswitch::iso8583::{Message, Spec};
use libfuzzer_sys::fuzz_target;

/// The test spec with composite fields 48 (tlv), 60 (positional, nested tlv),
/// 62 (BCD and binary inside b) and 126 (subfield bitmap).
const COMPOSITE_SPEC: &str =
    include_str!("../../tests/fixtures/specs/composite-iso87ascii.toml");

/// The specs, compiled once: compiling them per input held the target to
/// about 40 executions a second.
fn specs() -> &'static [Spec] {
    static SPECS: OnceLock<Vec<Spec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut specs: Vec<Spec> = isoswitch::specs::BUILTIN
            .iter()
            .filter_map(|(name, _)| isoswitch::specs::builtin(name).and_then(Result::ok))
            .collect();
        specs.extend(Spec::from_toml_str(COMPOSITE_SPEC, "composite-iso87ascii").ok());
        specs
    })
}

fuzz_target!(|data: &[u8]| {
    for spec in specs() {
        if let Ok(msg) = Message::decode_slice(spec, data) {
            let wire = msg.encode(spec).expect("a decoded message re-encodes");
            let again = Message::decode_slice(spec, &wire).expect("re-encoded bytes decode");
            assert_eq!(msg, again);
            for (n, value) in msg.iter() {
                if let Ok(Some(subfields)) = msg.subfields(spec, n) {
                    let mut built = Message::new(msg.mti());
                    built
                        .set_subfields(spec, n, &subfields)
                        .expect("decoded subfields encode");
                    assert_eq!(built.get(n), Some(value));
                }
            }
        }
    }
});
