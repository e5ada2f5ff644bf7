//! What the risk tests share: the example config, loadable from any working
//! directory, and a purchase that passes every rule in it.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::path::Path;

use isoswitch::iso8583::Message;

/// `config/risk-example.toml`, its hotlist (named relative to the config
/// file) made absolute.
pub fn example_config_text() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(Path::new(root).join("config/risk-example.toml"))
        .expect("example config readable");
    text.replace(
        "../tests/fixtures/risk/hotlist.txt",
        &format!("{root}/tests/fixtures/risk/hotlist.txt"),
    )
}

/// The fields of a purchase that passes every rule of the example config and
/// every rule the tests write for it.
pub const PURCHASE: [(u8, &str); 12] = [
    (2, "4111111111111111"),
    (3, "000000"),
    (4, "000000001000"),
    (7, "1123184105"),
    (11, "000001"),
    (14, "2812"),
    (18, "5411"),
    (22, "010"),
    (25, "00"),
    (41, "TERM0001"),
    (42, "MERCHANT0000001"),
    (49, "840"),
];

/// A 0200 [`PURCHASE`] with `changes` applied (an empty value removes the field).
pub fn purchase(changes: &[(u8, &str)]) -> Message {
    let mut m = Message::new("0200".parse().expect("mti"));
    for (n, v) in PURCHASE.iter().chain(changes) {
        if v.is_empty() {
            m.remove(*n);
        } else {
            m.set(*n, v).expect("field");
        }
    }
    m
}
