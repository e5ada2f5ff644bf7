//! Routing: which issuer a transaction goes to, decided by the card's BIN,
//! and what a route may approve when its issuer cannot be reached. The
//! [`BinTable`] is built when a config snapshot is loaded and only read afterwards.

pub mod bin_table;
pub mod stand_in;

pub use bin_table::{BinPattern, BinPatternError, BinTable, BinTableError, MAX_BIN_DIGITS};
pub use stand_in::StandInConfig;
