//! The server-rendered pages: log in, take a payment (outcome and advice on
//! the same page), today's operations with cancel, refund and receipt, the
//! printable receipt, and the shift close. Every form carries the session's
//! CSRF token (the login form a token of its own, double-submitted in a
//! cookie) and every write form an idempotency key, so a double click runs
//! once. Pages are never cached (`Cache-Control: no-store`). One file per
//! screen; this one routes and holds what every screen uses.

mod login;
mod operations;
mod payment;
mod receipt;
mod recurring;
mod shift;

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
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/pay", get(payment::form).post(payment::submit))
        .route("/operations", get(operations::list))
        .route("/operations/{id}/cancel", post(operations::cancel))
        .route("/operations/{id}/refund", post(operations::refund))
        .route("/receipt/{id}", get(receipt::show))
        .route("/shift", get(shift::show))
        .route("/shift/close", post(shift::close))
        .route("/cards", post(recurring::save_card))
        .route("/schedules", get(recurring::show).post(recurring::create))
}

pub(super) type Fields = HashMap<String, String>;

/// An HTML answer that is never cached.
pub(super) fn html(status: StatusCode, body: String) -> Response {
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
pub(super) struct Ctx<'s> {
    pub(super) id: String,
    pub(super) session: Session,
    pub(super) operator: &'s OperatorConfig,
}

impl Ctx<'_> {
    pub(super) fn header(&self) -> Header<'_> {
        Header {
            username: &self.operator.username,
            role: self.operator.role.as_str(),
            terminal: &self.operator.terminal,
            merchant: &self.operator.merchant,
            csrf: &self.session.csrf,
            supervisor: is_supervisor(self.operator),
        }
    }

    pub(super) fn csrf_input(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            escape(&self.session.csrf)
        )
    }
}

/// A page answered instead of the one asked for (boxed: a response is large).
pub(super) type Instead = Box<Response>;

/// The session's operator, or a redirect to the login page.
pub(super) fn ctx<'s>(state: &'s VtState, headers: &HeaderMap) -> Result<Ctx<'s>, Instead> {
    let to_login = || Box::new(Redirect::to("/login").into_response());
    let (id, session) = session_of(state, headers).map_err(|_| to_login())?;
    let operator = state.auth.operator(session.operator).ok_or_else(to_login)?;
    Ok(Ctx {
        id,
        session,
        operator,
    })
}

/// As [`ctx`], for a form post: its `csrf` field must be the session's.
pub(super) fn ctx_for_write<'s>(
    state: &'s VtState,
    headers: &HeaderMap,
    form: &Fields,
) -> Result<Ctx<'s>, Instead> {
    let ctx = ctx(state, headers)?;
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    if !csrf_matches(&ctx.session, sent) {
        return Err(Box::new(message_page(
            Some(&ctx),
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form is no longer valid (it was opened in another session). Open the page again.",
        )));
    }
    Ok(ctx)
}

pub(super) fn message_page(
    ctx: Option<&Ctx<'_>>,
    status: StatusCode,
    title: &str,
    text: &str,
) -> Response {
    let header = ctx.map(Ctx::header);
    let body = format!(
        "<h1>{}</h1><div class=\"card\"><p>{}</p></div>",
        escape(title),
        escape(text)
    );
    html(status, page(title, header.as_ref(), "", &body))
}

pub(super) fn key_input() -> String {
    format!(
        "<input type=\"hidden\" name=\"idempotency_key\" value=\"{}\">",
        random_hex(16).unwrap_or_default()
    )
}

pub(super) fn form_key(form: &Fields) -> Option<&str> {
    form.get("idempotency_key")
        .map(String::as_str)
        .filter(|k| !k.is_empty() && k.len() <= 200)
}

async fn home(State(state): State<Arc<VtState>>, headers: HeaderMap) -> Response {
    match ctx(&state, &headers) {
        Ok(_) => Redirect::to("/pay").into_response(),
        Err(to_login) => *to_login,
    }
}
