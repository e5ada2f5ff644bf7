//! The server-rendered pages: log in, take a payment (outcome and advice on
//! the same page), today's operations with cancel, refund and receipt, the
//! printable receipt, and the shift close. Every form carries the session's
//! CSRF token (the login form a token of its own, double-submitted in a
//! cookie) and every write form an idempotency key, so a double click runs
//! once. Pages are never cached (`Cache-Control: no-store`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};

use super::api::{day_range, session_of, ApiError};
use super::auth::{self, csrf_matches, random_hex, Session};
use super::engine::{is_supervisor, Operation, PaymentResult};
use super::html::{escape, outcome_box, page, Header, CARD_SCRIPT};
use super::payment::{
    brand_of, format_amount, Currency, InputError, PaymentKind, PaymentRequest, Reason,
};
use super::{ClientAddr, VtState};
use crate::vt_config::OperatorConfig;

const LOGIN_COOKIE: &str = "vt_login";

pub fn routes() -> Router<Arc<VtState>> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login_submit))
        .route("/logout", post(logout))
        .route("/pay", get(pay_form).post(pay_submit))
        .route("/operations", get(operations))
        .route("/operations/{id}/cancel", post(cancel))
        .route("/operations/{id}/refund", post(refund))
        .route("/receipt/{id}", get(receipt))
        .route("/shift", get(shift))
        .route("/shift/close", post(close_shift))
}

type Fields = HashMap<String, String>;

/// An HTML answer that is never cached.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The logged-in operator of a page request.
struct Ctx<'s> {
    id: String,
    session: Session,
    operator: &'s OperatorConfig,
}

impl Ctx<'_> {
    fn header(&self) -> Header<'_> {
        Header {
            username: &self.operator.username,
            role: self.operator.role.as_str(),
            terminal: &self.operator.terminal,
            merchant: &self.operator.merchant,
            csrf: &self.session.csrf,
            supervisor: is_supervisor(self.operator),
        }
    }

    fn csrf_input(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            escape(&self.session.csrf)
        )
    }
}

/// The session's operator, or a redirect to the login page.
fn ctx<'s>(state: &'s VtState, headers: &HeaderMap) -> Result<Ctx<'s>, Response> {
    let to_login = || Redirect::to("/login").into_response();
    let (id, session) = session_of(state, headers).map_err(|_| to_login())?;
    let operator = state.auth.operator(session.operator).ok_or_else(to_login)?;
    Ok(Ctx {
        id,
        session,
        operator,
    })
}

/// As [`ctx`], for a form post: its `csrf` field must be the session's.
fn ctx_for_write<'s>(
    state: &'s VtState,
    headers: &HeaderMap,
    form: &Fields,
) -> Result<Ctx<'s>, Response> {
    let ctx = ctx(state, headers)?;
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    if !csrf_matches(&ctx.session, sent) {
        return Err(message_page(
            Some(&ctx),
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form is no longer valid (it was opened in another session). Open the page again.",
        ));
    }
    Ok(ctx)
}

fn message_page(ctx: Option<&Ctx<'_>>, status: StatusCode, title: &str, text: &str) -> Response {
    let header = ctx.map(Ctx::header);
    let body = format!(
        "<h1>{}</h1><div class=\"card\"><p>{}</p></div>",
        escape(title),
        escape(text)
    );
    html(status, page(title, header.as_ref(), "", &body))
}

fn key_input() -> String {
    format!(
        "<input type=\"hidden\" name=\"idempotency_key\" value=\"{}\">",
        random_hex(16).unwrap_or_default()
    )
}

fn form_key(form: &Fields) -> Option<&str> {
    form.get("idempotency_key")
        .map(String::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 200)
}

async fn home(State(state): State<Arc<VtState>>, headers: HeaderMap) -> Response {
    match ctx(&state, &headers) {
        Ok(_) => Redirect::to("/pay").into_response(),
        Err(to_login) => to_login,
    }
}

// ------------------------------------------------------------------ login

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let Some(token) = random_hex(16) else {
        return html(StatusCode::INTERNAL_SERVER_ERROR, "no randomness".into());
    };
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"login_error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<div class=\"login card\"><h1>Log in</h1>{error}\
         <form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"login_csrf\" value=\"{token}\">\
         <p><label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus></p>\
         <p><label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></p>\
         <div class=\"actions\"><button type=\"submit\" id=\"login\">Log in</button></div>\
         </form></div>"
    );
    let mut response = html(status, page("Log in", None, "", &body));
    let cookie = format!("{LOGIN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/login");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

async fn login_submit(
    State(state): State<Arc<VtState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let cookie_token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| auth::cookie(v, LOGIN_COOKIE));
    let sent = form.get("login_csrf").map(String::as_str);
    if cookie_token.is_none() || cookie_token != sent {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The login form expired; please try again."),
        );
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    match state
        .auth
        .login(field("username"), field("password"), peer.ip())
        .await
    {
        Ok((id, _)) => {
            let mut response = Redirect::to("/pay").into_response();
            let cookie = auth::session_cookie(&id, state.secure, state.auth.idle_timeout());
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        Err(refused) => {
            let ApiError(status, message) = ApiError::from(refused);
            login_page(status, Some(&message))
        }
    }
}

async fn logout(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    state.auth.logout(&ctx.id);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&auth::expired_cookie(state.secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

// ---------------------------------------------------------------- payments

/// The payment form, filled with `values` (never the CVV2), with `error`
/// shown beside its field.
fn pay_form_html(ctx: &Ctx<'_>, values: &Fields, error: Option<&InputError>) -> String {
    let value = |name: &str| escape(values.get(name).map(String::as_str).unwrap_or(""));
    let error_for = |name: &str| match error {
        Some(e) if e.field == name => format!(
            "<div class=\"error\" id=\"error_{name}\">Expected {}</div>",
            escape(&e.expected)
        ),
        _ => String::new(),
    };
    let selected = |name: &str, option: &str, default: &str| {
        let current = values.get(name).map(String::as_str).unwrap_or(default);
        if current == option {
            " selected"
        } else {
            ""
        }
    };
    let kinds: String = PaymentKind::ALL
        .iter()
        .filter(|k| **k != PaymentKind::Refund || is_supervisor(ctx.operator))
        .map(|k| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                k.as_str(),
                selected("type", k.as_str(), "sale"),
                k.label()
            )
        })
        .collect();
    let currencies: String = Currency::all()
        .iter()
        .map(|c| {
            format!(
                "<option value=\"{0}\"{1}>{0}</option>",
                c.alpha,
                selected("currency", c.alpha, "USD")
            )
        })
        .collect();
    let reasons: String = Reason::ALL
        .iter()
        .map(|r| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                r.as_str(),
                selected("reason", r.as_str(), "telephone-order"),
                r.label()
            )
        })
        .collect();
    let refund_row = if is_supervisor(ctx.operator) {
        format!(
            "<div class=\"wide\"><label for=\"original_rrn\">Original sale's RRN (refunds only)</label>\
             <input id=\"original_rrn\" name=\"original_rrn\" maxlength=\"12\" value=\"{}\">{}</div>",
            value("original_rrn"),
            error_for("original_rrn")
        )
    } else {
        String::new()
    };
    format!(
        "<form method=\"post\" action=\"/pay\" class=\"card\" id=\"payment\" autocomplete=\"off\">\
         {csrf}{key}<div class=\"grid\">\
         <div><label for=\"type\">Type</label><select id=\"type\" name=\"type\">{kinds}</select>{e_type}</div>\
         <div><label for=\"reason\">Reason</label><select id=\"reason\" name=\"reason\">{reasons}</select>{e_reason}</div>\
         <div class=\"wide\"><label for=\"card_number\">Card number</label>\
         <input id=\"card_number\" name=\"card_number\" inputmode=\"numeric\" autocomplete=\"cc-number\" \
         placeholder=\"4111 1111 1111 1111\" value=\"{card}\">\
         <div class=\"hint\" id=\"card_hint\"></div>{e_card}</div>\
         <div><label for=\"expiry\">Expiry (MM/YY)</label>\
         <input id=\"expiry\" name=\"expiry\" placeholder=\"12/28\" autocomplete=\"cc-exp\" value=\"{expiry}\">{e_expiry}</div>\
         <div><label for=\"cvv\">CVV2</label>\
         <input id=\"cvv\" name=\"cvv\" inputmode=\"numeric\" maxlength=\"4\" autocomplete=\"cc-csc\" placeholder=\"3 or 4 digits\">\
         <div class=\"hint\">sent to the card's bank, never stored</div>{e_cvv}</div>\
         <div><label for=\"amount\">Amount</label>\
         <input id=\"amount\" name=\"amount\" inputmode=\"decimal\" placeholder=\"10.50\" value=\"{amount}\">{e_amount}</div>\
         <div><label for=\"currency\">Currency</label><select id=\"currency\" name=\"currency\">{currencies}</select>{e_currency}</div>\
         {refund_row}</div>\
         <div class=\"actions\"><button type=\"submit\" id=\"submit\">Submit payment</button>\
         <span class=\"muted\">Verification and balance inquiries take no amount.</span></div>\
         </form><script>{CARD_SCRIPT}</script>",
        csrf = ctx.csrf_input(),
        key = key_input(),
        e_type = error_for("type"),
        e_reason = error_for("reason"),
        card = value("card_number"),
        e_card = error_for("card_number"),
        expiry = value("expiry"),
        e_expiry = error_for("expiry"),
        e_cvv = error_for("cvv"),
        amount = value("amount"),
        e_amount = error_for("amount"),
        e_currency = error_for("currency"),
    )
}

async fn pay_form(State(state): State<Arc<VtState>>, headers: HeaderMap) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let body = format!(
        "<h1>New payment</h1>{}",
        pay_form_html(&ctx, &Fields::new(), None)
    );
    html(StatusCode::OK, page("New payment", Some(&ctx.header()), "/pay", &body))
}

/// An amount as people type it ("10.50") in minor units of the form's
/// currency; at most the currency's decimals.
fn minor_units(text: &str, currency: Option<Currency>) -> Result<String, InputError> {
    let exponent = usize::from(currency.map_or(2, |c| c.exponent));
    let text = text.trim();
    let expected = || InputError {
        field: "amount",
        expected: format!(
            "an amount such as {} (digits, at most {exponent} decimals)",
            if exponent == 0 { "1050" } else { "10.50" }
        ),
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > exponent {
        return Err(expected());
    }
    let minor = format!("{whole}{fraction:0<exponent$}");
    Ok(minor.trim_start_matches('0').to_owned()).map(|m| if m.is_empty() { "0".into() } else { m })
}

async fn pay_submit(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let mut fields = form.clone();
    let currency = form.get("currency").and_then(|c| Currency::parse(c));
    let checked = match form.get("amount").filter(|a| !a.trim().is_empty()) {
        Some(amount) => minor_units(amount, currency).map(|minor| {
            fields.insert("amount".into(), minor);
        }),
        None => Ok(()),
    }
    .and_then(|()| PaymentRequest::from_fields(&fields));
    let request = match checked {
        Ok(request) => request,
        Err(error) => {
            let body = format!(
                "<h1>New payment</h1><div class=\"outcome bad\" id=\"input_error\"><h2>Please check the form</h2><p>{}</p></div>{}",
                escape(&error.to_string()),
                pay_form_html(&ctx, &form, Some(&error))
            );
            return html(
                StatusCode::BAD_REQUEST,
                page("New payment", Some(&ctx.header()), "/pay", &body),
            );
        }
    };
    let result = state
        .engine
        .pay(ctx.operator, &request, form_key(&form))
        .await;
    let outcome = match result {
        Ok(result) => result_html(&result, Some(brand_of(request.card.digits()))),
        Err(e) => {
            let ApiError(status, message) = ApiError::from(e);
            return message_page(Some(&ctx), status, "Payment not made", &message);
        }
    };
    let body = format!(
        "<h1>New payment</h1>{outcome}{}",
        pay_form_html(&ctx, &Fields::new(), None)
    );
    html(StatusCode::OK, page("New payment", Some(&ctx.header()), "/pay", &body))
}

/// The outcome of a payment, cancel or refund.
fn result_html(result: &PaymentResult, brand: Option<&str>) -> String {
    let approved = matches!(result.status.as_str(), "approved" | "cancelled");
    let heading = match result.status.as_str() {
        "approved" => "Approved".to_owned(),
        "cancelled" => "Cancelled".to_owned(),
        _ => format!("Declined ({})", result.response_code),
    };
    let mut facts = vec![("Type", result.kind.clone())];
    if let Some(card) = &result.card {
        let card = match brand.filter(|b| *b != "card") {
            Some(brand) => format!("{card} ({brand})"),
            None => card.clone(),
        };
        facts.push(("Card", card));
    }
    if let Some(amount) = &result.amount {
        facts.push(("Amount", amount.clone()));
    }
    facts.push(("Response code", format!("{} — {}", result.response_code, result.message)));
    if let Some(auth) = &result.auth_code {
        facts.push(("Auth code", auth.clone()));
    }
    if let Some(rrn) = &result.rrn {
        facts.push(("RRN", rrn.clone()));
    }
    let mut html = outcome_box(approved, &heading, &facts, Some(&result.advice));
    if let Some(id) = result.id.filter(|_| result.status == "approved") {
        html.push_str(&format!(
            "<p class=\"noprint\"><a class=\"button secondary small\" href=\"/receipt/{id}\" id=\"receipt_link\">Receipt</a></p>"
        ));
    }
    html
}

// -------------------------------------------------------------- operations

fn time_of(ms: i64) -> String {
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

async fn operations(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return response,
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

fn path_id(id: &str) -> Option<i64> {
    id.parse::<i64>().ok().filter(|id| *id > 0)
}

async fn cancel(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let Some(id) = path_id(&id) else {
        return message_page(Some(&ctx), StatusCode::BAD_REQUEST, "Cancel", "No such payment.");
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

async fn refund(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let Some(id) = path_id(&id) else {
        return message_page(Some(&ctx), StatusCode::BAD_REQUEST, "Refund", "No such payment.");
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

// ----------------------------------------------------------------- receipt

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

async fn receipt(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let Some(id) = path_id(&id) else {
        return message_page(Some(&ctx), StatusCode::NOT_FOUND, "Receipt", "No such payment.");
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

// ------------------------------------------------------------------- shift

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

async fn shift(State(state): State<Arc<VtState>>, headers: HeaderMap) -> Response {
    let ctx = match ctx(&state, &headers) {
        Ok(ctx) => ctx,
        Err(response) => return response,
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
    html(StatusCode::OK, page("Shift close", Some(&ctx.header()), "/shift", &body))
}

async fn close_shift(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let result = match state.engine.close_shift(ctx.operator, form_key(&form)).await {
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
    html(StatusCode::OK, page("Shift close", Some(&ctx.header()), "/shift", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_amounts_become_minor_units_of_the_currency() {
        let usd = Currency::parse("USD");
        let jpy = Currency::parse("JPY");
        assert_eq!(minor_units("10.50", usd).as_deref(), Ok("1050"));
        assert_eq!(minor_units("10.5", usd).as_deref(), Ok("1050"));
        assert_eq!(minor_units("7", usd).as_deref(), Ok("700"));
        assert_eq!(minor_units("0", usd).as_deref(), Ok("0"));
        assert_eq!(minor_units("500", jpy).as_deref(), Ok("500"));
        for bad in ["10.505", "1,00", "-1", "", ".5", "1e3"] {
            assert_eq!(minor_units(bad, usd).map_err(|e| e.field), Err("amount"), "{bad}");
        }
        assert!(minor_units("10.5", jpy).is_err());
    }
}
