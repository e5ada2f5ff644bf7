//! The printable receipt: merchant and customer copies.

use super::operations::{path_id, time_of};
use super::*;

fn receipt_copy(copy: &str, op: &Operation) -> String {
    let row = |label: &str, value: &str| {
        format!(
            "<div class=\"row\"><span>{}</span><span>{}</span></div>",
            escape(label),
            escape(value)
        )
    };
    let mut html = format!("<div class=\"receipt\"><h3>{}</h3>", escape(copy));
    html.push_str(&row("Merchant", op.merchant.as_deref().unwrap_or("")));
    html.push_str(&row("Terminal", op.terminal.as_deref().unwrap_or("")));
    html.push_str(&row("Date", &time_of(op.received_at_ms)));
    html.push_str(&row("Type", &op.kind.to_uppercase()));
    html.push_str(&row("Card", op.card.as_deref().unwrap_or("")));
    html.push_str(&row("Entry", "keyed, card not present"));
    html.push_str(&format!(
        "<div class=\"row big\"><span>AMOUNT</span><span>{}</span></div>",
        escape(&op.amount_text)
    ));
    html.push_str(&row("Auth code", op.auth_code.as_deref().unwrap_or("")));
    html.push_str(&row("RRN", op.rrn.as_deref().unwrap_or("")));
    html.push_str(&row(
        "Result",
        &format!(
            "{} ({})",
            op.status.to_uppercase(),
            op.response_code.as_deref().unwrap_or("")
        ),
    ));
    html.push_str("<p style=\"text-align:center;margin:10px 0 0\">Thank you</p></div>");
    html
}

pub(super) async fn show(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    let Some(id) = path_id(&id) else {
        return message_page(
            Some(&ctx),
            StatusCode::NOT_FOUND,
            "Receipt",
            "No such payment.",
        );
    };
    let op = match state.engine.operation(ctx.operator, id).await {
        Ok(op) => op,
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Receipt", &message);
        }
    };
    let body = format!(
        "<h1>Receipt</h1><div class=\"receipts\" id=\"receipts\">{}{}</div>\
         <div class=\"actions noprint\"><button type=\"button\" onclick=\"window.print()\">Print</button>\
         <a class=\"button secondary\" href=\"/operations\">Back to operations</a></div>",
        receipt_copy("MERCHANT COPY", &op),
        receipt_copy("CUSTOMER COPY", &op)
    );
    html(
        StatusCode::OK,
        page("Receipt", Some(&ctx.header()), "/operations", &body),
    )
}
