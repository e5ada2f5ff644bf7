//! Refunds (processing code 20): the switch finds the original sale in its
//! journal and checks the refund against it before any issuer hears of it —
//! same card, same merchant, same currency, young enough, and never more
//! than what earlier refunds left of it. Refunds of one original go one at a
//! time (a lock per original, held until the refund's outcome is recorded),
//! so two at once cannot both take what is left.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::outcome::Refusal;
use super::Switch;
use crate::config::RefundOriginal;
use crate::iso8583::fields::ProcessingCode;
use crate::iso8583::Message;
use crate::journal::{now_ms, ClearPan, TxnId, TxnQuery, TxnRecord};

/// Why a refund is refused: 12 when there is no original, 13 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefusal {
    #[error("no original sale found")]
    NoOriginal,
    #[error("the original is not an approved sale that stands")]
    NotRefundable,
    #[error("the original was paid with another card")]
    OtherCard,
    #[error("the original was taken by another merchant")]
    OtherMerchant,
    #[error("the original is older than {max_age_days} days")]
    TooOld { max_age_days: u32 },
    #[error("the original was in another currency")]
    OtherCurrency,
    #[error("above what is left of the original ({remaining} minor units)")]
    AboveRemaining { remaining: i64 },
}

/// One lock per original with a refund in progress; the entry goes with its
/// last holder.
#[derive(Default)]
pub(super) struct RefundLocks(DashMap<TxnId, Arc<Mutex<()>>>);

/// A refund's hold on its original, from its checks until its outcome is
/// recorded (dropped at the end of the handler).
pub(super) struct RefundHold<'a> {
    locks: &'a RefundLocks,
    original: TxnId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl RefundLocks {
    async fn hold(&self, original: TxnId) -> RefundHold<'_> {
        let lock = self.0.entry(original).or_default().clone();
        RefundHold {
            locks: self,
            original,
            guard: Some(lock.lock_owned().await),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for RefundHold<'_> {
    fn drop(&mut self) {
        // The map's Arc and this guard's: nobody else waits, so the entry
        // goes (under the shard lock, so no one can take it meanwhile).
        self.locks
            .0
            .remove_if(&self.original, |_, lock| Arc::strong_count(lock) == 2);
        self.guard = None;
    }
}

/// Whether `request` is a refund.
pub(super) fn is_refund(request: &Message) -> bool {
    request
        .processing_code()
        .is_ok_and(|pc| pc.transaction_type == ProcessingCode::REFUND)
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Checks the refund `request` against its original, which it holds until
/// dropped; the original's id goes into the refund's journal record.
pub(super) async fn check_refund<'a>(
    sw: &'a Switch,
    listener: &str,
    request: &Message,
) -> Result<(RefundHold<'a>, TxnId), Refusal> {
    let (mode, max_age_days) = {
        let snapshot = sw.snapshot.load();
        let mode = snapshot
            .config
            .listeners
            .iter()
            .find(|l| l.name == listener)
            .map(|l| l.refund_original)
            .unwrap_or_default();
        (mode, snapshot.config.refunds.max_age_days)
    };
    let Some(base) = original_query(mode, request)? else {
        return Err(RefundRefusal::NoOriginal.into());
    };
    let journal = &sw.stores.journal;
    let mut candidates = journal.find(base.clone()).await.map_err(Refusal::Storage)?;
    // A refund carries its original's RRN too: refunds are not originals.
    candidates.retain(|r| !r.is_financial("20"));
    if mode == RefundOriginal::Field90 {
        candidates = sent_at_the_named_time(sw, request, candidates).await?;
    }
    if candidates.is_empty() {
        return Err(RefundRefusal::NoOriginal.into());
    }
    let Some(original) = candidates
        .into_iter()
        .rev()
        .find(|r| r.is_financial("00") && r.stands() && r.cancelled_at_ms.is_none())
    else {
        return Err(RefundRefusal::NotRefundable.into());
    };
    let hold = sw.refunds.hold(original.id).await;
    let pan = request.get_str(2).and_then(ClearPan::new);
    let same_card = TxnQuery {
        pan: pan.clone(),
        ..base
    };
    let same_card = pan.is_some()
        && journal
            .find(same_card)
            .await
            .map_err(Refusal::Storage)?
            .iter()
            .any(|r| r.id == original.id);
    if !same_card {
        return Err(RefundRefusal::OtherCard.into());
    }
    let merchant = request.get_str(42).map(|m| m.trim_end().to_owned());
    if merchant != original.merchant_id {
        return Err(RefundRefusal::OtherMerchant.into());
    }
    let age_ms = now_ms().saturating_sub(original.received_at_ms);
    if age_ms > i64::from(max_age_days) * DAY_MS {
        return Err(RefundRefusal::TooOld { max_age_days }.into());
    }
    let currency = request.get_str(49).and_then(|c| c.parse::<u16>().ok());
    if currency != original.currency {
        return Err(RefundRefusal::OtherCurrency.into());
    }
    let refunded = refunded_so_far(sw, original.id).await?;
    let remaining = original.amount.unwrap_or(0).saturating_sub(refunded);
    let amount = request
        .amount()
        .ok()
        .and_then(|a| i64::try_from(a.0).ok())
        .unwrap_or(i64::MAX);
    if amount > remaining {
        return Err(RefundRefusal::AboveRemaining { remaining }.into());
    }
    Ok((hold, original.id))
}

/// How the journal finds the refund's original; `None` when the refund does
/// not name one. A malformed field 90 is a format error.
fn original_query(mode: RefundOriginal, request: &Message) -> Result<Option<TxnQuery>, Refusal> {
    match mode {
        RefundOriginal::Rrn => Ok(request.get_str(37).map(|rrn| TxnQuery {
            rrn: Some(rrn.trim_end().to_owned()),
            ..TxnQuery::default()
        })),
        RefundOriginal::Field90 => {
            if !request.has(90) {
                return Ok(None);
            }
            let named = request.original_data()?;
            let Some(terminal) = request.get_str(41) else {
                return Ok(None);
            };
            Ok(Some(TxnQuery {
                terminal_stan: Some((terminal.trim_end().to_owned(), named.stan.to_string())),
                ..TxnQuery::default()
            }))
        }
    }
}

/// The candidates whose field 7 is the one field 90 names (all of them when
/// it names none).
async fn sent_at_the_named_time(
    sw: &Switch,
    request: &Message,
    candidates: Vec<TxnRecord>,
) -> Result<Vec<TxnRecord>, Refusal> {
    let time = request
        .original_data()
        .ok()
        .map(|o| o.transmission_time)
        .filter(|t| t.as_bytes().iter().any(|&b| b != b'0'));
    let Some(time) = time else {
        return Ok(candidates);
    };
    let mut kept = Vec::with_capacity(candidates.len());
    for record in candidates {
        let fields = sw
            .stores
            .journal
            .reversal_fields(record.id)
            .await
            .map_err(Refusal::Storage)?;
        if fields.and_then(|f| f.get(7).map(<[u8]>::to_vec)).as_deref()
            == Some(&time.as_bytes()[..])
        {
            kept.push(record);
        }
    }
    Ok(kept)
}

/// What approved refunds of `original` took back (the one in progress holds
/// the lock, so none is outstanding); refunds reversed since do not count.
async fn refunded_so_far(sw: &Switch, original: TxnId) -> Result<i64, Refusal> {
    let refunds = sw
        .stores
        .journal
        .find(TxnQuery {
            original: Some(original),
            ..TxnQuery::default()
        })
        .await
        .map_err(Refusal::Storage)?;
    Ok(refunds
        .iter()
        .filter(|r| r.is_financial("20") && r.stands() && r.cancelled_at_ms.is_none())
        .map(|r| r.amount.unwrap_or(0))
        .fold(0i64, i64::saturating_add))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_refund_of_one_original_waits_for_the_first_and_the_entry_goes_after() {
        let locks = RefundLocks::default();
        let first = locks.hold(TxnId(1)).await;
        let waits = tokio::select! {
            biased;
            _ = locks.hold(TxnId(1)) => false,
            _ = std::future::ready(()) => true,
        };
        assert!(
            waits,
            "a second refund waits while the first holds the original"
        );
        let other = locks.hold(TxnId(2)).await;
        drop(other);
        assert_eq!(locks.len(), 1, "the other original's entry went with it");
        drop(first);
        let second = locks.hold(TxnId(1)).await;
        drop(second);
        assert_eq!(locks.len(), 0, "no entry outlives its holders");
    }
}
