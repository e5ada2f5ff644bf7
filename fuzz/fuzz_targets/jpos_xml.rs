//! The jPOS packager XML importer: any text is imported or refused with an
//! error that starts with the origin; none panics.
#![no_main]

use isoswitch::iso8583::import::from_jpos_xml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = from_jpos_xml(&text, "fuzz.xml") {
        assert!(e.to_string().starts_with("fuzz.xml"), "{e}");
    }
});
