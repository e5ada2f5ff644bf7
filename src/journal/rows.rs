//! The first rows of a transaction and of a queue item as both stores'
//! writers take them: built and sealed by the caller, so that work runs in
//! parallel, and only inserted by the writer.

use super::card_data::Sealed;
use super::record::{SafKind, TxnRecord};

/// A transaction's first row as [`TxnRecord::begun`] builds it, with the
/// last four digits to index and the reversal fields sealed by the caller.
#[derive(Debug)]
pub(crate) struct TxnRow {
    pub record: TxnRecord,
    pub pan_last4: Option<String>,
    pub fields: Option<Sealed>,
}

/// A queue item's first row, its fields sealed by the caller.
#[derive(Debug)]
pub(crate) struct SafRow {
    pub id: i64,
    pub issuer: String,
    pub kind: SafKind,
    pub mti: String,
    pub txn_id: Option<i64>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub fields: Sealed,
}
