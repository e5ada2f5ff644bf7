//! Recurring schedules: a card on file (saved from an approved,
//! cardholder-initiated payment) charged an amount every day, week, month or
//! year from a start date, until N charges, a date, or for ever. The switch
//! runs the charges at their due time as merchant-initiated payments (field
//! 60 `RM`, which the `recurring` risk rule checks against the
//! cardholder-initiated approval).
//!
//! Dunning: a soft decline is tried again `dunning_hours` after the charge was
//! due (24, 48 and 72 by default); a hard decline (04 07 14 41 43 54 57 62),
//! or soft declines past the last retry, stop the schedule and flag it for
//! the merchant. Each attempt has its own idempotency key (schedule, period,
//! attempt) and its STAN is stored in the schedule before it is sent, so a
//! period is never charged twice, across restarts too: a repeat finds the
//! first attempt's result, or its transaction in the journal.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{Date, Duration as Days, Month, OffsetDateTime};

use super::advice::is_hard_decline;
use super::auth::random_hex;
use super::engine::{EngineError, PaymentResult};
use super::payment::{
    format_amount, parse_amount, CardNumber, Currency, Expiry, InputError, PaymentKind,
    PaymentRequest, Reason,
};
use super::VtState;
use crate::journal::{now_ms, JournalError, RecurringStore, ScheduleRecord};
use crate::vt_config::{OperatorConfig, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 4] = [
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    fn parse(text: &str) -> Option<Period> {
        Period::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

/// When a schedule ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum End {
    Never,
    /// After this many merchant-initiated charges.
    AfterCharges {
        count: u32,
    },
    /// No charge due after this date (YYYY-MM-DD).
    OnDate {
        date: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Active,
    Finished,
    Stopped,
}

/// The attempt in flight: written before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub key: String,
    pub stan: String,
    /// When the STAN was reserved: the journal is searched from then on.
    pub at_ms: i64,
}

/// One schedule, stored whole as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: String,
    pub token: String,
    pub card: String,
    pub terminal: String,
    pub merchant: String,
    /// Minor units.
    pub amount: u64,
    /// ISO 4217 numeric.
    pub currency: u16,
    pub period: Period,
    /// The first merchant-initiated charge's date (YYYY-MM-DD, UTC).
    pub start: String,
    pub end: End,
    pub state: State,
    /// Charges approved so far.
    pub charges_made: u32,
    /// The period the next charge is for (0 = the start date).
    pub period_index: u32,
    /// Failed attempts for that period.
    pub attempt: u32,
    pub next_due_ms: Option<i64>,
    /// Why the schedule stopped, for the merchant.
    pub flag: Option<String>,
    pub last_result: Option<PaymentResult>,
    pub pending: Option<Pending>,
    pub created_at_ms: i64,
}

impl Schedule {
    fn start_date(&self) -> Option<Date> {
        parse_date(&self.start)
    }

    /// When period `index` is due: its date at 00:00 UTC.
    pub fn due_ms(&self, index: u32) -> Option<i64> {
        let date = nth_date(self.start_date()?, self.period, index)?;
        Some(date.midnight().assume_utc().unix_timestamp() * 1000)
    }

    fn record(&self) -> Result<ScheduleRecord, EngineError> {
        let body = serde_json::to_string(self)
            .map_err(|e| EngineError::NotAllowed(format!("schedule {}: {e}", self.id)))?;
        Ok(ScheduleRecord {
            id: self.id.clone(),
            terminal_id: self.terminal.clone(),
            next_due_ms: self.next_due_ms.filter(|_| self.state == State::Active),
            body,
        })
    }

    /// Moves on to the next period after an approval, or finishes.
    fn advance(&mut self) {
        self.charges_made += 1;
        self.period_index += 1;
        self.attempt = 0;
        let done = match &self.end {
            End::Never => false,
            End::AfterCharges { count } => self.charges_made >= *count,
            End::OnDate { date } => {
                let end = parse_date(date)
                    .map(|d| (d.midnight().assume_utc().unix_timestamp() + 86_400) * 1000);
                match (self.due_ms(self.period_index), end) {
                    (Some(due), Some(end)) => due >= end,
                    _ => true,
                }
            }
        };
        if done {
            self.state = State::Finished;
            self.next_due_ms = None;
        } else {
            self.next_due_ms = self.due_ms(self.period_index);
        }
    }
}

fn parse_date(text: &str) -> Option<Date> {
    let format = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]").ok()?;
    Date::parse(text, &format).ok()
}

/// `start` plus `n` periods; a monthly or yearly date past the end of its
/// month falls on the month's last day.
fn nth_date(start: Date, period: Period, n: u32) -> Option<Date> {
    match period {
        Period::Daily => start.checked_add(Days::days(i64::from(n))),
        Period::Weekly => start.checked_add(Days::weeks(i64::from(n))),
        Period::Monthly | Period::Yearly => {
            let months = if period == Period::Monthly {
                i64::from(n)
            } else {
                i64::from(n) * 12
            };
            let total =
                i64::from(start.year()) * 12 + i64::from(u8::from(start.month()) - 1) + months;
            let year = i32::try_from(total.div_euclid(12)).ok()?;
            let month = Month::try_from(u8::try_from(total.rem_euclid(12) + 1).ok()?).ok()?;
            let day = start.day().min(month.length(year));
            Date::from_calendar_date(year, month, day).ok()
        }
    }
}

fn bad(field: &'static str, expected: impl Into<String>) -> InputError {
    InputError {
        field,
        expected: expected.into(),
    }
}

/// What a new schedule asks for, checked field by field.
pub struct ScheduleRequest {
    pub token: String,
    pub amount: u64,
    pub currency: Currency,
    pub period: Period,
    pub start: String,
    pub end: End,
}

impl ScheduleRequest {
    /// From JSON (`end_after` a count, or `end_on` a date; neither: never) or form fields.
    pub fn from_fields(fields: &dyn super::payment::Fields) -> Result<ScheduleRequest, InputError> {
        let text = |name: &'static str| -> Result<Option<String>, InputError> {
            Ok(fields.text(name)?.map(|(t, _)| t))
        };
        let token = text("token")?.ok_or_else(|| bad("token", "a saved card's token"))?;
        let amount = parse_amount(&text("amount")?.unwrap_or_default())?;
        if amount == 0 {
            return Err(bad("amount", "more than 0"));
        }
        let currency = text("currency")?
            .as_deref()
            .and_then(Currency::parse)
            .ok_or_else(|| bad("currency", "a currency code such as USD or 840"))?;
        let period = text("period")?
            .as_deref()
            .and_then(Period::parse)
            .ok_or_else(|| bad("period", "daily, weekly, monthly or yearly"))?;
        let start = text("start")?.ok_or_else(|| bad("start", "a date YYYY-MM-DD"))?;
        let start_date = parse_date(&start).ok_or_else(|| bad("start", "a date YYYY-MM-DD"))?;
        if start_date < OffsetDateTime::now_utc().date() {
            return Err(bad("start", "today or a later date"));
        }
        let end = match (text("end_after")?, text("end_on")?) {
            (Some(_), Some(_)) => {
                return Err(bad("end_on", "either end_after or end_on, not both"))
            }
            (Some(count), None) => match count.parse::<u32>() {
                Ok(count) if count > 0 => End::AfterCharges { count },
                _ => return Err(bad("end_after", "a number of charges, at least 1")),
            },
            (None, Some(date)) => match parse_date(&date) {
                Some(end) if end >= start_date => End::OnDate { date },
                _ => return Err(bad("end_on", "a date YYYY-MM-DD on or after start")),
            },
            (None, None) => End::Never,
        };
        Ok(ScheduleRequest {
            token,
            amount,
            currency,
            period,
            start,
            end,
        })
    }
}

/// Creates a schedule on a card on file of this terminal.
pub async fn create(
    state: &VtState,
    operator: &OperatorConfig,
    request: ScheduleRequest,
) -> Result<Schedule, EngineError> {
    let card = state
        .recurring
        .card(&operator.terminal, &request.token)
        .await?
        .ok_or_else(|| bad("token", "the token of a card saved on this terminal"))?;
    let id = random_hex(8)
        .map(|hex| format!("sch_{hex}"))
        .ok_or_else(|| EngineError::NotAllowed("no randomness for an id".into()))?;
    let mut schedule = Schedule {
        id,
        token: card.token.clone(),
        card: format!("{} ****{}", card.brand, card.last4),
        terminal: operator.terminal.clone(),
        merchant: operator.merchant.clone(),
        amount: request.amount,
        currency: request.currency.numeric,
        period: request.period,
        start: request.start,
        end: request.end,
        state: State::Active,
        charges_made: 0,
        period_index: 0,
        attempt: 0,
        next_due_ms: None,
        flag: None,
        last_result: None,
        pending: None,
        created_at_ms: now_ms(),
    };
    schedule.next_due_ms = schedule.due_ms(0);
    state.recurring.save_schedule(schedule.record()?).await?;
    Ok(schedule)
}

/// The schedules of this terminal.
pub async fn list(
    store: &dyn RecurringStore,
    operator: &OperatorConfig,
) -> Result<Vec<Schedule>, EngineError> {
    let records = store.schedules(&operator.terminal).await?;
    Ok(records
        .iter()
        .filter_map(|r| serde_json::from_str(&r.body).ok())
        .collect())
}

/// Runs every charge due at `now_ms`; how many were attempted. The switch
/// calls it every `recurring_poll_s`; tests call it with the time they mean.
pub async fn run_due(state: &VtState, now_ms: i64) -> Result<usize, JournalError> {
    // One run at a time: two runs would settle one attempt's result twice.
    let _one_run = state.recurring_run.lock().await;
    let due = state.recurring.due_schedules(now_ms).await?;
    let mut attempted = 0;
    for record in due {
        let Ok(mut schedule) = serde_json::from_str::<Schedule>(&record.body) else {
            tracing::error!(
                schedule = record.id,
                "recurring schedule does not read; skipped"
            );
            continue;
        };
        match charge(state, &mut schedule).await {
            Ok(()) => attempted += 1,
            Err(e) => {
                tracing::warn!(schedule = schedule.id, error = %e, "recurring charge not made; tried again at the next run");
            }
        }
    }
    Ok(attempted)
}

/// One attempt at the schedule's current period.
async fn charge(state: &VtState, schedule: &mut Schedule) -> Result<(), EngineError> {
    if schedule.state != State::Active {
        return Ok(());
    }
    let key = format!(
        "schedule:{}:{}:{}",
        schedule.id, schedule.period_index, schedule.attempt
    );
    // The attempt and its STAN are on disk before anything is sent.
    let pending = match &schedule.pending {
        Some(p) if p.key == key => p.clone(),
        _ => Pending {
            key: key.clone(),
            stan: state.engine.reserve_stan(),
            at_ms: now_ms(),
        },
    };
    schedule.pending = Some(pending.clone());
    state.recurring.save_schedule(schedule.record()?).await?;

    let operator = OperatorConfig {
        username: format!("schedule {}", schedule.id),
        password_hash: String::new(),
        merchant: schedule.merchant.clone(),
        terminal: schedule.terminal.clone(),
        role: Role::Operator,
    };
    let result = match card_request(state, schedule).await {
        Ok(request) => {
            state
                .engine
                .charge_merchant_initiated(
                    &operator,
                    &request,
                    &pending.key,
                    &pending.stan,
                    pending.at_ms,
                )
                .await?
        }
        Err(problem) => {
            schedule.state = State::Stopped;
            schedule.flag = Some(problem);
            schedule.next_due_ms = None;
            schedule.pending = None;
            state.recurring.save_schedule(schedule.record()?).await?;
            return Ok(());
        }
    };
    settle(schedule, result, &state.dunning_hours);
    state.recurring.save_schedule(schedule.record()?).await?;
    Ok(())
}

/// The sale a charge sends; Err says why the card cannot be charged.
async fn card_request(state: &VtState, schedule: &Schedule) -> Result<PaymentRequest, String> {
    let card = state
        .recurring
        .card(&schedule.terminal, &schedule.token)
        .await
        .map_err(|e| format!("the saved card cannot be read: {e}"))?
        .ok_or_else(|| format!("the saved card {} is gone", schedule.token))?;
    let pan = card.pan.ok_or("the saved card has no number")?;
    let number = CardNumber::parse(pan.reveal()).map_err(|e| format!("saved card: {e}"))?;
    let expiry = match (card.expiry.get(..2), card.expiry.get(2..4)) {
        (Some(yy), Some(mm)) => Expiry::parse(&format!("{mm}{yy}")).ok(),
        _ => None,
    };
    let currency = Currency::of_numeric(schedule.currency).ok_or("unknown currency")?;
    Ok(PaymentRequest {
        kind: PaymentKind::Sale,
        card: number,
        expiry,
        cvv: None,
        amount: schedule.amount,
        currency,
        reason: Reason::Recurring,
        original_rrn: None,
    })
}

/// What an attempt's result does to the schedule.
fn settle(schedule: &mut Schedule, result: PaymentResult, dunning_hours: &[u32]) {
    schedule.pending = None;
    let code = result.response_code.clone();
    let approved = result.status == "approved";
    schedule.last_result = Some(result);
    if approved {
        schedule.flag = None;
        schedule.advance();
        return;
    }
    if is_hard_decline(&code) {
        schedule.state = State::Stopped;
        schedule.next_due_ms = None;
        schedule.flag = Some(format!(
            "stopped: the bank declined with {code} ({}), which is never retried",
            super::advice::advice_for(&code).reason
        ));
        return;
    }
    schedule.attempt += 1;
    match dunning_hours.get(schedule.attempt as usize - 1) {
        Some(hours) => {
            schedule.next_due_ms = schedule
                .due_ms(schedule.period_index)
                .map(|due| due + i64::from(*hours) * 3_600_000);
            schedule.flag = Some(format!(
                "declined {code} ({}); retry {} in {hours} h after the due time",
                super::advice::advice_for(&code).reason,
                schedule.attempt
            ));
        }
        None => {
            schedule.state = State::Stopped;
            schedule.next_due_ms = None;
            schedule.flag = Some(format!(
                "stopped: still declined ({code}) after {} retries",
                dunning_hours.len()
            ));
        }
    }
}

/// The schedule as the API shows it.
pub fn view(schedule: &Schedule) -> Value {
    let mut map = Map::new();
    let value = serde_json::to_value(schedule).unwrap_or(Value::Null);
    if let Value::Object(fields) = value {
        for (k, v) in fields {
            if k != "pending" {
                map.insert(k, v);
            }
        }
    }
    map.insert(
        "amount_text".into(),
        Value::String(format_amount(
            i64::try_from(schedule.amount).unwrap_or(i64::MAX),
            Some(schedule.currency),
        )),
    );
    Value::Object(map)
}

/// Form fields as the API's, for the pages.
pub fn form_fields(form: &HashMap<String, String>) -> HashMap<String, String> {
    form.iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), v.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(period: Period, start: &str, end: End) -> Schedule {
        Schedule {
            id: "sch_1".into(),
            token: "card_1".into(),
            card: "Visa ****1111".into(),
            terminal: "T1".into(),
            merchant: "M1".into(),
            amount: 500,
            currency: 840,
            period,
            start: start.into(),
            end,
            state: State::Active,
            charges_made: 0,
            period_index: 0,
            attempt: 0,
            next_due_ms: None,
            flag: None,
            last_result: None,
            pending: Some(Pending {
                key: "k".into(),
                stan: "000001".into(),
                at_ms: 0,
            }),
            created_at_ms: 0,
        }
    }

    fn result(code: &str) -> PaymentResult {
        PaymentResult {
            id: Some(1),
            status: if code == "00" { "approved" } else { "declined" }.into(),
            response_code: code.into(),
            auth_code: None,
            rrn: None,
            message: String::new(),
            advice: super::super::engine::AdviceView::of(code),
            kind: "sale".into(),
            card: None,
            amount: None,
        }
    }

    fn day_ms(date: &str) -> i64 {
        parse_date(date)
            .expect("date")
            .midnight()
            .assume_utc()
            .unix_timestamp()
            * 1000
    }

    #[test]
    fn monthly_dates_keep_their_day_or_the_month_end() {
        let start = parse_date("2027-01-31").expect("date");
        let dates: Vec<String> = (0..4)
            .map(|n| {
                nth_date(start, Period::Monthly, n)
                    .expect("date")
                    .to_string()
            })
            .collect();
        assert_eq!(
            dates,
            ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30"]
        );
        let leap = parse_date("2028-02-29").expect("date");
        assert_eq!(
            nth_date(leap, Period::Yearly, 1)
                .map(|d| d.to_string())
                .as_deref(),
            Some("2029-02-28")
        );
        assert_eq!(
            nth_date(start, Period::Weekly, 2)
                .map(|d| d.to_string())
                .as_deref(),
            Some("2027-02-14")
        );
    }

    #[test]
    fn soft_declines_are_retried_after_24_48_72_hours_then_stop() {
        let mut s = schedule(Period::Monthly, "2027-03-01", End::Never);
        let due = day_ms("2027-03-01");
        for (attempt, hours) in [24, 48, 72].into_iter().enumerate() {
            settle(&mut s, result("51"), &[24, 48, 72]);
            assert_eq!(s.state, State::Active);
            assert_eq!(s.attempt, attempt as u32 + 1);
            assert_eq!(s.next_due_ms, Some(due + hours * 3_600_000));
            assert_eq!(s.period_index, 0, "the same period is tried again");
        }
        settle(&mut s, result("91"), &[24, 48, 72]);
        assert_eq!(s.state, State::Stopped);
        assert!(s.flag.as_deref().unwrap_or("").contains("after 3 retries"));
        assert_eq!(s.record().expect("record").next_due_ms, None);
    }

    #[test]
    fn a_hard_decline_stops_and_flags_at_once() {
        for code in ["04", "07", "14", "41", "43", "54", "57", "62"] {
            let mut s = schedule(Period::Daily, "2027-03-01", End::Never);
            settle(&mut s, result(code), &[24, 48, 72]);
            assert_eq!(s.state, State::Stopped, "{code}");
            assert!(s.flag.as_deref().unwrap_or("").contains(code), "{code}");
        }
    }

    #[test]
    fn approvals_advance_until_the_end() {
        let mut s = schedule(Period::Weekly, "2027-03-01", End::AfterCharges { count: 2 });
        settle(&mut s, result("51"), &[24]);
        settle(&mut s, result("00"), &[24]);
        assert_eq!((s.charges_made, s.period_index, s.attempt), (1, 1, 0));
        assert_eq!(s.next_due_ms, Some(day_ms("2027-03-08")));
        assert_eq!(s.pending, None);
        settle(&mut s, result("00"), &[24]);
        assert_eq!(s.state, State::Finished);
        let mut by_date = schedule(
            Period::Daily,
            "2027-03-01",
            End::OnDate {
                date: "2027-03-02".into(),
            },
        );
        settle(&mut by_date, result("00"), &[24]);
        assert_eq!(by_date.state, State::Active);
        settle(&mut by_date, result("00"), &[24]);
        assert_eq!(by_date.state, State::Finished);
    }
}
