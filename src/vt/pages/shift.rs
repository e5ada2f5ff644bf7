//! The shift close: the open shift's totals, and closing it.

use super::*;

/// The shift's totals; amounts in `currency` when the shift had only one.
fn totals_table(totals: &crate::journal::ShiftTotals, currency_hint: Option<u16>) -> String {
    let row = |label: &str, tally: &crate::journal::Tally| {
        format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(label),
            tally.count,
            escape(&format_amount(tally.amount, currency_hint))
        )
    };
    format!(
        "<table id=\"totals\"><thead><tr><th></th><th class=\"num\">Count</th><th class=\"num\">Amount</th></tr></thead><tbody>{}{}{}{}\
         <tr><td><b>Net</b></td><td></td><td class=\"num\"><b>{}</b></td></tr></tbody></table>",
        row("Sales", &totals.debits),
        row("Sales cancelled", &totals.debit_reversals),
        row("Refunds", &totals.credits),
        row("Refunds cancelled", &totals.credit_reversals),
        escape(&format_amount(totals.net(), currency_hint)),
    )
}

pub(super) async fn show(State(state): State<Arc<VtState>>, headers: HeaderMap) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    if !is_supervisor(ctx.operator) {
        return message_page(
            Some(&ctx),
            StatusCode::FORBIDDEN,
            "Shift close",
            "Closing the shift needs a supervisor.",
        );
    }
    let (totals, batch, currency) = match state.engine.shift_totals(ctx.operator).await {
        Ok(found) => found,
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Shift close", &message);
        }
    };
    let body = format!(
        "<h1>Shift close</h1><div class=\"card\"><h2>Open shift, batch {batch}</h2>{}\
         <form method=\"post\" action=\"/shift/close\">{}{}\
         <div class=\"actions\"><button type=\"submit\" id=\"close_shift\">Close the shift</button>\
         <span class=\"muted\">Sales in a closed shift can no longer be cancelled, only refunded.</span></div></form></div>",
        totals_table(&totals, currency),
        ctx.csrf_input(),
        key_input(),
        batch = escape(&batch),
    );
    html(
        StatusCode::OK,
        page("Shift close", Some(&ctx.header()), "/shift", &body),
    )
}

pub(super) async fn close(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let result = match state
        .engine
        .close_shift(ctx.operator, form_key(&form))
        .await
    {
        Ok(result) => result,
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Shift close", &message);
        }
    };
    let agreed = result.status == "closed";
    let heading = if agreed {
        format!("Shift closed — batch {}", result.batch)
    } else {
        format!("Shift closed out of balance — batch {}", result.batch)
    };
    let facts = [(
        "Response code",
        format!("{} — {}", result.response_code, result.message),
    )];
    let body = format!(
        "<h1>Shift close</h1>{}<div class=\"card\"><h2>Totals of the closed shift</h2>{}</div>",
        outcome_box(agreed, &heading, &facts, None),
        totals_table(&result.totals, result.currency)
    );
    html(
        StatusCode::OK,
        page("Shift close", Some(&ctx.header()), "/shift", &body),
    )
}
