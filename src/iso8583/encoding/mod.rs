//! Byte-level encodings used on the wire: EBCDIC text, packed BCD digits and hex
//! text (ASCII or EBCDIC) for binary values. ASCII and raw binary need no conversion. Each file holds
//! one encoding and its tests.

pub mod bcd;
pub mod ebcdic;
pub mod ebcdic_hex;
pub mod hex;
