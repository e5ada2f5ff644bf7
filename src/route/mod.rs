//! Routing: which issuer a transaction goes to, decided by the card's BIN.
//! The [`BinTable`] is built when a config snapshot is loaded and only read afterwards.

pub mod bin_table;

pub use bin_table::{BinPattern, BinPatternError, BinTable, BinTableError, MAX_BIN_DIGITS};
