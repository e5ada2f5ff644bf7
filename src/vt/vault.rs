//! Cards on file: after an approved payment (or zero-amount verification) and
//! with the customer's consent, the card that paid is saved under a token.
//! The card number comes from the payment's own sealed journal data (never
//! typed again) and goes into the vault sealed with the journal's data key;
//! the merchant sees only token, brand, last 4 and expiry.

use serde::Serialize;

use super::auth::random_hex;
use super::engine::{kind_of, Engine, EngineError};
use super::payment::brand_of;
use crate::journal::{now_ms, ClearPan, RecurringStore, SavedCard};
use crate::vt_config::OperatorConfig;

/// A saved card as the merchant sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardOnFile {
    pub token: String,
    pub brand: String,
    pub last4: String,
    /// MM/YY.
    pub expiry: String,
    pub payment_id: i64,
    pub created_at_ms: i64,
}

impl CardOnFile {
    pub fn of(card: &SavedCard) -> CardOnFile {
        let expiry = match (card.expiry.get(..2), card.expiry.get(2..4)) {
            (Some(yy), Some(mm)) => format!("{mm}/{yy}"),
            _ => card.expiry.clone(),
        };
        CardOnFile {
            token: card.token.clone(),
            brand: card.brand.clone(),
            last4: card.last4.clone(),
            expiry,
            payment_id: card.payment_id,
            created_at_ms: card.created_at_ms,
        }
    }
}

/// Saves the card of approved payment `payment_id` of this terminal.
pub async fn save_card(
    engine: &Engine,
    store: &dyn RecurringStore,
    operator: &OperatorConfig,
    payment_id: i64,
    consent: bool,
) -> Result<CardOnFile, EngineError> {
    if !consent {
        return Err(EngineError::NotAllowed(
            "consent: a card is saved only when the customer agrees (send \"consent\": true)"
                .into(),
        ));
    }
    let record = engine.record(operator, payment_id).await?;
    let kind = kind_of(&record);
    if !record.stands()
        || record.cancelled_at_ms.is_some()
        || !matches!(kind, "sale" | "pre-authorization" | "verification")
    {
        return Err(EngineError::NotAllowed(format!(
            "payment {payment_id} is not an approved sale, pre-authorization or verification"
        )));
    }
    let fields = engine
        .switch()
        .stores()
        .journal
        .reversal_fields(record.id)
        .await?
        .ok_or_else(|| EngineError::NotAllowed(format!("payment {payment_id} has no card data")))?;
    let pan = fields
        .get(2)
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(ClearPan::new)
        .ok_or_else(|| {
            EngineError::NotAllowed(format!("payment {payment_id} has no card number"))
        })?;
    let expiry = fields
        .get(14)
        .and_then(|e| std::str::from_utf8(e).ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            EngineError::NotAllowed(format!("payment {payment_id} has no expiry date"))
        })?;
    let token = random_hex(12)
        .map(|hex| format!("card_{hex}"))
        .ok_or_else(|| EngineError::NotAllowed("no randomness for a token".into()))?;
    let card = SavedCard {
        token,
        terminal_id: operator.terminal.clone(),
        merchant_id: operator.merchant.clone(),
        brand: brand_of(pan.reveal()).to_owned(),
        last4: pan.last4().to_owned(),
        expiry,
        created_at_ms: now_ms(),
        payment_id,
        pan: Some(pan),
    };
    store.save_card(card.clone()).await?;
    Ok(CardOnFile::of(&card))
}

/// The cards on file of this terminal.
pub async fn cards(
    store: &dyn RecurringStore,
    operator: &OperatorConfig,
) -> Result<Vec<CardOnFile>, EngineError> {
    Ok(store
        .cards(&operator.terminal)
        .await?
        .iter()
        .map(CardOnFile::of)
        .collect())
}

/// Tells the risk rules again, after a start, of the cardholder-initiated
/// approvals behind the cards on file of `terminals`: the `recurring` rule
/// keeps them in memory only, and without them every merchant-initiated
/// charge after a restart would be refused (57). How many were told.
pub async fn restore_consents(
    engine: &Engine,
    store: &dyn RecurringStore,
    terminals: &[(String, String)],
) -> Result<usize, EngineError> {
    let risk = engine.switch().snapshot().risk.clone();
    if !risk.records_approvals() {
        return Ok(0);
    }
    let mut told = 0;
    for (terminal, merchant) in terminals {
        for listed in store.cards(terminal).await? {
            let Some(card) = store.card(terminal, &listed.token).await? else {
                continue;
            };
            let Some(pan) = card.pan else { continue };
            let mut consent =
                crate::iso8583::Message::new(crate::iso8583::Mti::from_static("0200"));
            for (n, v) in [
                (2, pan.reveal()),
                (3, "000000"),
                (25, super::engine::MAIL_TELEPHONE_ORDER),
                (42, merchant.as_str()),
                (60, "RC"),
            ] {
                let _ = consent.set(n, v);
            }
            let at = u64::try_from(card.created_at_ms).unwrap_or(0);
            risk.record_approval(&consent, crate::risk::Timestamp::from_unix_ms(at));
            told += 1;
        }
    }
    Ok(told)
}
