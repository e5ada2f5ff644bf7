//! The day's operations of a terminal, with cancel and refund.

use super::payment::{minor_units, result_html};
use super::*;

pub(super) fn time_of(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}

fn operation_row(ctx: &Ctx<'_>, op: &Operation) -> String {
    let mut actions = String::new();
    if op.status == "approved" {
        actions.push_str(&format!(
            "<a class=\"button secondary small\" href=\"/receipt/{}\">Receipt</a> ",
            op.id
        ));
    }
    if op.cancellable {
        actions.push_str(&format!(
            "<form method=\"post\" action=\"/operations/{id}/cancel\" class=\"inline\">{csrf}{key}\
             <button type=\"submit\" class=\"small danger\" id=\"cancel_{id}\">Cancel</button></form> ",
            id = op.id,
            csrf = ctx.csrf_input(),
            key = key_input()
        ));
    }
    if op.refundable && is_supervisor(ctx.operator) {
        actions.push_str(&format!(
            "<form method=\"post\" action=\"/operations/{id}/refund\" class=\"inline\">{csrf}{key}\
             <input name=\"amount\" placeholder=\"all\" size=\"6\" style=\"width:70px;padding:4px 6px\" aria-label=\"refund amount\">\
             <button type=\"submit\" class=\"small secondary\" id=\"refund_{id}\">Refund</button></form>",
            id = op.id,
            csrf = ctx.csrf_input(),
            key = key_input()
        ));
    }
    let time = time_of(op.received_at_ms);
    format!(
        "<tr id=\"op_{id}\"><td>{time}</td><td>{kind}</td><td>{card}</td><td class=\"num\">{amount}</td>\
         <td><span class=\"badge {status}\">{status}</span></td><td>{code}</td><td>{auth}</td><td>{rrn}</td><td class=\"actions-cell\">{actions}</td></tr>",
        id = op.id,
        time = escape(time.get(11..19).unwrap_or(&time)),
        kind = escape(&op.kind),
        card = escape(op.card.as_deref().unwrap_or("")),
        amount = escape(&op.amount_text),
        status = escape(&op.status),
        code = escape(op.response_code.as_deref().unwrap_or("")),
        auth = escape(op.auth_code.as_deref().unwrap_or("")),
        rrn = escape(op.rrn.as_deref().unwrap_or("")),
    )
}

pub(super) async fn list(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    operations_page(&state, &ctx, query.get("date").map(String::as_str), None).await
}

async fn operations_page(
    state: &VtState,
    ctx: &Ctx<'_>,
    date: Option<&str>,
    notice: Option<String>,
) -> Response {
    let date = date.filter(|d| !d.is_empty());
    let range = match day_range(date) {
        Ok(range) => range,
        Err(ApiError(status, message)) => {
            return message_page(Some(ctx), status, "Today's operations", &message)
        }
    };
    let operations = match state.engine.operations(ctx.operator, range).await {
        Ok(ops) => ops,
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(ctx), status, "Today's operations", &message);
        }
    };
    let rows: String = operations.iter().map(|op| operation_row(ctx, op)).collect();
    let table = if operations.is_empty() {
        "<p class=\"muted\" id=\"no_operations\">No operations on this day.</p>".to_owned()
    } else {
        format!(
            "<table id=\"operations\"><thead><tr><th>Time (UTC)</th><th>Type</th><th>Card</th><th class=\"num\">Amount</th>\
             <th>Status</th><th>Code</th><th>Auth</th><th>RRN</th><th></th></tr></thead><tbody>{rows}</tbody></table>"
        )
    };
    let shown = date.map_or_else(
        || time::OffsetDateTime::now_utc().date().to_string(),
        str::to_owned,
    );
    let body = format!(
        "<h1>Operations of {date}</h1>{notice}\
         <form method=\"get\" action=\"/operations\" class=\"filters noprint\">\
         <div><label for=\"date\">Day (UTC)</label><input id=\"date\" name=\"date\" type=\"date\" value=\"{date}\"></div>\
         <button type=\"submit\" class=\"secondary\">Show</button></form>\
         <div class=\"card\" style=\"padding:0;overflow-x:auto\">{table}</div>",
        date = escape(&shown),
        notice = notice.unwrap_or_default(),
    );
    html(
        StatusCode::OK,
        page("Operations", Some(&ctx.header()), "/operations", &body),
    )
}

pub(super) fn path_id(id: &str) -> Option<i64> {
    id.parse::<i64>().ok().filter(|id| *id > 0)
}

pub(super) async fn cancel(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let Some(id) = path_id(&id) else {
        return message_page(
            Some(&ctx),
            StatusCode::BAD_REQUEST,
            "Cancel",
            "No such payment.",
        );
    };
    let notice = match state.engine.cancel(ctx.operator, id, form_key(&form)).await {
        Ok(result) => result_html(&result, None),
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Cancel", &message);
        }
    };
    operations_page(&state, &ctx, None, Some(notice)).await
}

pub(super) async fn refund(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let Some(id) = path_id(&id) else {
        return message_page(
            Some(&ctx),
            StatusCode::BAD_REQUEST,
            "Refund",
            "No such payment.",
        );
    };
    if !is_supervisor(ctx.operator) {
        return message_page(
            Some(&ctx),
            StatusCode::FORBIDDEN,
            "Refund",
            "Refunds need a supervisor.",
        );
    }
    let currency = match state.engine.operation(ctx.operator, id).await {
        Ok(op) => op.currency.and_then(Currency::of_numeric),
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Refund", &message);
        }
    };
    let amount = match form.get("amount").filter(|a| !a.trim().is_empty()) {
        None => None,
        Some(text) => match minor_units(text, currency).map(|m| m.parse::<u64>()) {
            Ok(Ok(minor)) => Some(minor),
            Ok(Err(_)) | Err(_) => {
                let e = minor_units(text, currency).err();
                let message = e.map_or("amount: too large".to_owned(), |e| e.to_string());
                return message_page(Some(&ctx), StatusCode::BAD_REQUEST, "Refund", &message);
            }
        },
    };
    let notice = match state
        .engine
        .refund(ctx.operator, id, amount, form_key(&form))
        .await
    {
        Ok(result) => result_html(&result, None),
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Refund", &message);
        }
    };
    operations_page(&state, &ctx, None, Some(notice)).await
}
