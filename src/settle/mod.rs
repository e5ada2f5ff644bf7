//! The merchant settlement report: what each merchant took on a day, per
//! card scheme and operation type, less the acquirer's fee, from the journal.
//! Tariffs and the BIN → scheme table come from the config; the arithmetic
//! is integers in minor units, fees rounded half-up per transaction.

pub mod config;
pub mod fee;
pub mod render;
pub mod report;

pub use config::{SchemeConfig, SchemeTable, TariffConfig, Tariffs};
pub use fee::fee;
pub use report::{Excluded, Line, OperationType, Report, Total};
