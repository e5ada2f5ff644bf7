//! Cards on file and recurring schedules.

use super::operations::{path_id, time_of};
use super::payment::minor_units;
use super::*;

pub(super) async fn save_card(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let Some(id) = form.get("payment_id").and_then(|id| path_id(id)) else {
        return message_page(
            Some(&ctx),
            StatusCode::BAD_REQUEST,
            "Save card",
            "No such payment.",
        );
    };
    let consent = form
        .get("consent")
        .is_some_and(|c| c == "on" || c == "true");
    let notice = match crate::vt::vault::save_card(
        &state.engine,
        state.recurring.as_ref(),
        ctx.operator,
        id,
        consent,
    )
    .await
    {
        Ok(card) => outcome_box(
            true,
            "Card saved",
            &[
                ("Token", card.token.clone()),
                ("Card", format!("{} ****{}", card.brand, card.last4)),
                ("Expiry", card.expiry.clone()),
            ],
            None,
        ),
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Save card", &message);
        }
    };
    schedules_page(
        &state,
        &ctx,
        StatusCode::OK,
        Some(notice),
        &Fields::new(),
        None,
    )
    .await
}

pub(super) async fn show(State(state): State<Arc<VtState>>, headers: HeaderMap) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    schedules_page(&state, &ctx, StatusCode::OK, None, &Fields::new(), None).await
}

pub(super) async fn create(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let mut fields = crate::vt::recurring::form_fields(&form);
    let currency = form.get("currency").and_then(|c| Currency::parse(c));
    let checked = match fields.get("amount").cloned() {
        Some(amount) => minor_units(&amount, currency).map(|minor| {
            fields.insert("amount".into(), minor);
        }),
        None => Ok(()),
    }
    .and_then(|()| crate::vt::recurring::ScheduleRequest::from_fields(&fields));
    let request = match checked {
        Ok(request) => request,
        Err(error) => {
            return schedules_page(
                &state,
                &ctx,
                StatusCode::BAD_REQUEST,
                None,
                &form,
                Some(&error),
            )
            .await
        }
    };
    match crate::vt::recurring::create(&state, ctx.operator, request).await {
        Ok(schedule) => {
            let notice = outcome_box(
                true,
                "Schedule created",
                &[
                    ("Card", schedule.card.clone()),
                    ("First charge", schedule.start.clone()),
                ],
                None,
            );
            schedules_page(
                &state,
                &ctx,
                StatusCode::OK,
                Some(notice),
                &Fields::new(),
                None,
            )
            .await
        }
        Err(crate::vt::engine::EngineError::Input(error)) => {
            schedules_page(
                &state,
                &ctx,
                StatusCode::BAD_REQUEST,
                None,
                &form,
                Some(&error),
            )
            .await
        }
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            message_page(Some(&ctx), status, "Recurring", &message)
        }
    }
}

/// Cards on file, the schedule form and the schedules of this terminal.
async fn schedules_page(
    state: &VtState,
    ctx: &Ctx<'_>,
    status: StatusCode,
    notice: Option<String>,
    values: &Fields,
    error: Option<&InputError>,
) -> Response {
    let store = state.recurring.as_ref();
    let (cards, schedules) = match (
        crate::vt::vault::cards(store, ctx.operator).await,
        crate::vt::recurring::list(store, ctx.operator).await,
    ) {
        (Ok(cards), Ok(schedules)) => (cards, schedules),
        (Err(e), _) | (_, Err(e)) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(ctx), status, "Recurring", &message);
        }
    };
    let value = |name: &str| escape(values.get(name).map(String::as_str).unwrap_or(""));
    let error_html = error
        .map(|e| {
            format!(
                "<div class=\"outcome bad\" id=\"input_error\"><h2>Please check the form</h2><p>{}</p></div>",
                escape(&e.to_string())
            )
        })
        .unwrap_or_default();
    let card_options: String = cards
        .iter()
        .map(|c| {
            format!(
                "<option value=\"{0}\">{1} ****{2} (exp {3}) — {0}</option>",
                escape(&c.token),
                escape(&c.brand),
                escape(&c.last4),
                escape(&c.expiry)
            )
        })
        .collect();
    let form = if cards.is_empty() {
        "<div class=\"card\"><p class=\"muted\" id=\"no_cards\">No cards on file yet. After an approved payment, \
         tick the customer's consent and save the card; it then appears here.</p></div>"
            .to_owned()
    } else {
        let currencies: String = Currency::all()
            .iter()
            .map(|c| format!("<option value=\"{0}\">{0}</option>", c.alpha))
            .collect();
        let periods: String = crate::vt::recurring::Period::ALL
            .iter()
            .map(|p| format!("<option value=\"{0}\">{0}</option>", p.as_str()))
            .collect();
        let start = match values.get("start") {
            Some(start) => escape(start),
            None => time::OffsetDateTime::now_utc().date().to_string(),
        };
        format!(
            "<form method=\"post\" action=\"/schedules\" class=\"card\" id=\"schedule_form\">{csrf}\
             <h2>New schedule</h2><div class=\"grid\">\
             <div class=\"wide\"><label for=\"token\">Card on file</label><select id=\"token\" name=\"token\">{card_options}</select></div>\
             <div><label for=\"s_amount\">Amount</label><input id=\"s_amount\" name=\"amount\" placeholder=\"9.99\" value=\"{amount}\"></div>\
             <div><label for=\"s_currency\">Currency</label><select id=\"s_currency\" name=\"currency\">{currencies}</select></div>\
             <div><label for=\"period\">Every</label><select id=\"period\" name=\"period\">{periods}</select></div>\
             <div><label for=\"start\">First charge (UTC date)</label><input id=\"start\" name=\"start\" type=\"date\" value=\"{start}\"></div>\
             <div><label for=\"end_after\">End after (charges)</label><input id=\"end_after\" name=\"end_after\" inputmode=\"numeric\" placeholder=\"leave empty: no limit\" value=\"{end_after}\"></div>\
             <div><label for=\"end_on\">or end on (date)</label><input id=\"end_on\" name=\"end_on\" type=\"date\" value=\"{end_on}\"></div>\
             </div><div class=\"actions\"><button type=\"submit\" id=\"create_schedule\">Create schedule</button>\
             <span class=\"muted\">Charged by the switch when due; soft declines are retried, hard declines stop the schedule.</span></div></form>",
            csrf = ctx.csrf_input(),
            amount = value("amount"),
            end_after = value("end_after"),
            end_on = value("end_on"),
        )
    };
    let rows: String = schedules
        .iter()
        .map(|s| {
            let state_label = match s.state {
                crate::vt::recurring::State::Active => "approved",
                crate::vt::recurring::State::Finished => "cancelled",
                crate::vt::recurring::State::Stopped => "declined",
            };
            let state_text = format!("{:?}", s.state).to_lowercase();
            let next = s
                .next_due_ms
                .filter(|_| s.state == crate::vt::recurring::State::Active)
                .map(time_of)
                .unwrap_or_default();
            let last = s
                .last_result
                .as_ref()
                .map(|r| format!("{} ({})", r.status, r.response_code))
                .unwrap_or_default();
            format!(
                "<tr id=\"{id}\"><td>{card}</td><td class=\"num\">{amount}</td><td>{period}</td><td>{next}</td>\
                 <td class=\"num\">{made}</td><td><span class=\"badge {label}\">{state}</span></td><td>{last}</td><td>{flag}</td></tr>",
                id = escape(&s.id),
                card = escape(&s.card),
                amount = escape(&format_amount(i64::try_from(s.amount).unwrap_or(i64::MAX), Some(s.currency))),
                period = s.period.as_str(),
                next = escape(&next),
                made = s.charges_made,
                label = state_label,
                state = escape(&state_text),
                last = escape(&last),
                flag = escape(s.flag.as_deref().unwrap_or("")),
            )
        })
        .collect();
    let table = if schedules.is_empty() {
        "<p class=\"muted\" style=\"padding:14px\">No schedules yet.</p>".to_owned()
    } else {
        format!(
            "<table id=\"schedules\"><thead><tr><th>Card</th><th class=\"num\">Amount</th><th>Every</th><th>Next charge</th>\
             <th class=\"num\">Charges</th><th>State</th><th>Last result</th><th>Note</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let body = format!(
        "<h1>Recurring charges</h1>{notice}{error_html}{form}\
         <div class=\"card\" style=\"padding:0;overflow-x:auto\">{table}</div>",
        notice = notice.unwrap_or_default(),
    );
    html(
        status,
        page("Recurring", Some(&ctx.header()), "/schedules", &body),
    )
}
