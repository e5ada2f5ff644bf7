//! Cards on file and schedules in SQLite: the card number sealed with the
//! journal's data key before it reaches the writer thread, opened only when
//! a charge asks for it.

use super::writer::{CardRow, Write};
use super::SqliteJournal;
use crate::journal::card_data::card_record;
use crate::journal::recurring::{RecurringStore, SavedCard, ScheduleRecord};
use crate::journal::{JournalError, StoreFuture};

impl RecurringStore for SqliteJournal {
    fn save_card(&self, card: SavedCard) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let pan = card.pan.as_ref().ok_or_else(|| JournalError::Unknown {
                op: "save_card",
                what: "card number for card",
                id: card.payment_id,
            })?;
            let sealed = self
                .vault
                .seal(&card_record(&card.token), pan.reveal().as_bytes())?;
            let row = CardRow {
                token: card.token,
                terminal_id: card.terminal_id,
                merchant_id: card.merchant_id,
                brand: card.brand,
                last4: card.last4,
                expiry: card.expiry,
                created_at_ms: card.created_at_ms,
                payment_id: card.payment_id,
                pan: sealed,
            };
            self.submit_and_wait(Write::SaveCard(Box::new(row)))
                .await
                .map(drop)
        })
    }

    fn card(&self, terminal: &str, token: &str) -> StoreFuture<'_, Option<SavedCard>> {
        let (terminal, token) = (terminal.to_owned(), token.to_owned());
        self.read(move |reader| {
            Ok(reader
                .cards(&terminal, Some(&token), true)?
                .into_iter()
                .next())
        })
    }

    fn cards(&self, terminal: &str) -> StoreFuture<'_, Vec<SavedCard>> {
        let terminal = terminal.to_owned();
        self.read(move |reader| reader.cards(&terminal, None, false))
    }

    fn save_schedule(&self, schedule: ScheduleRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.submit_and_wait(Write::SaveSchedule(Box::new(schedule)))
                .await
                .map(drop)
        })
    }

    fn schedules(&self, terminal: &str) -> StoreFuture<'_, Vec<ScheduleRecord>> {
        let terminal = terminal.to_owned();
        self.read(move |reader| reader.schedules(Some(&terminal), 0))
    }

    fn due_schedules(&self, now_ms: i64) -> StoreFuture<'_, Vec<ScheduleRecord>> {
        self.read(move |reader| reader.schedules(None, now_ms))
    }
}
