//! Feeds arbitrary bytes to the decoder of every shipped spec. A decoded message
//! must re-encode, and the re-encoded bytes must decode to the same message.
#![no_main]

use isoswitch::iso8583::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (name, _) in isoswitch::specs::BUILTIN {
        let Some(Ok(spec)) = isoswitch::specs::builtin(name) else {
            continue;
        };
        if let Ok(msg) = Message::decode_slice(&spec, data) {
            let wire = msg.encode(&spec).expect("a decoded message re-encodes");
            let again = Message::decode_slice(&spec, &wire).expect("re-encoded bytes decode");
            assert_eq!(msg, again);
        }
    }
});
