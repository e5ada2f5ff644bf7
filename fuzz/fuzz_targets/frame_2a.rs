//! The 2a length-header frame decoder, with and without TPDU and self-counting
//! header (see shared/framing.rs).
#![no_main]

#[path = "shared/framing.rs"]
mod framing;

use isoswitch::frame::LengthHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| framing::run(LengthHeader::Ascii2, data));
