//! The JSON API under `/api/v1`, for QA teams to script: log in for a
//! session cookie and a CSRF token, then payments, cancels, refunds and the
//! shift close, each write sending `X-CSRF-Token` and, to be safe to
//! repeat, `Idempotency-Key`. Errors are `{"error": "..."}` with the status
//! that fits; bad input is a 400 naming the field.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::auth::{self, csrf_matches, LoginRefused, Session};
use super::engine::EngineError;
use super::payment::{parse_amount, InputError, PaymentRequest};
use super::{ClientAddr, VtState};
use crate::journal::TimeRange;
use crate::vt_config::OperatorConfig;

/// An error answer: its status and message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Input(_) => StatusCode::BAD_REQUEST,
            EngineError::SupervisorOnly(_) => StatusCode::FORBIDDEN,
            EngineError::NotAllowed(_) => StatusCode::CONFLICT,
            EngineError::NoAnswer => StatusCode::BAD_GATEWAY,
            EngineError::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %e, "virtual terminal: journal");
        }
        ApiError(status, e.to_string())
    }
}

impl From<LoginRefused> for ApiError {
    fn from(e: LoginRefused) -> Self {
        let status = match e {
            LoginRefused::Wrong => StatusCode::UNAUTHORIZED,
            LoginRefused::Locked { .. } => StatusCode::TOO_MANY_REQUESTS,
            LoginRefused::Random => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

pub fn routes() -> Router<Arc<VtState>> {
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/payments", post(create_payment).get(list_payments))
        .route("/api/v1/payments/{id}", get(get_payment))
        .route("/api/v1/payments/{id}/cancel", post(cancel_payment))
        .route("/api/v1/payments/{id}/refund", post(refund_payment))
        .route("/api/v1/shift/close", post(close_shift))
        .route("/api/v1/cards", post(save_card).get(list_cards))
        .route(
            "/api/v1/schedules",
            post(create_schedule).get(list_schedules),
        )
}

/// A JSON object body; anything else is a 400 saying so.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "body: expected a JSON object".into(),
        )),
        Err(e) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("body: expected JSON ({e})"),
        )),
    }
}

fn string_field(map: &Map<String, Value>, name: &'static str) -> Result<String, ApiError> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name}: expected a string"),
        )),
    }
}

async fn login(
    State(state): State<Arc<VtState>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let map = object(&body)?;
    let username = string_field(&map, "username")?;
    let password = string_field(&map, "password")?;
    let (id, session) = state.auth.login(&username, &password, peer.ip()).await?;
    let cookie = auth::session_cookie(&id, state.secure);
    let mut response = Json(json!({ "csrf_token": session.csrf })).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The session the request's cookie names.
pub fn session_of(state: &VtState, headers: &HeaderMap) -> Result<(String, Session), ApiError> {
    let unauthorized = || {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "not logged in (or the session expired): POST /api/v1/login first".into(),
        )
    };
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| auth::cookie(v, auth::SESSION_COOKIE))
        .filter(|id| !id.is_empty())
        .ok_or_else(unauthorized)?;
    let session = state.auth.session(id).ok_or_else(unauthorized)?;
    Ok((id.to_owned(), session))
}

/// The session's operator, for a read.
fn reader<'s>(state: &'s VtState, headers: &HeaderMap) -> Result<&'s OperatorConfig, ApiError> {
    let (_, session) = session_of(state, headers)?;
    operator_of(state, &session)
}

fn operator_of<'s>(state: &'s VtState, session: &Session) -> Result<&'s OperatorConfig, ApiError> {
    state.auth.operator(session.operator).ok_or_else(|| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "the session's operator is gone".into(),
        )
    })
}

/// The session's operator, for a write: the CSRF header must match.
fn writer<'s>(state: &'s VtState, headers: &HeaderMap) -> Result<&'s OperatorConfig, ApiError> {
    let (_, session) = session_of(state, headers)?;
    let sent = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !csrf_matches(&session, sent) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "X-CSRF-Token: expected the csrf_token the login returned".into(),
        ));
    }
    operator_of(state, &session)
}

/// The `Idempotency-Key` header: 1 to 200 printable characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= 200 => Ok(Some(key.to_owned())),
        _ => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key: expected 1 to 200 printable characters".into(),
        )),
    }
}

async fn logout(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    writer(&state, &headers)?;
    let (id, _) = session_of(&state, &headers)?;
    state.auth.logout(&id);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&auth::expired_cookie(state.secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn create_payment(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let operator = writer(&state, &headers)?;
    let key = idempotency_key(&headers)?;
    let request = PaymentRequest::from_fields(&object(&body)?)?;
    let result = state.engine.pay(operator, &request, key.as_deref()).await?;
    Ok(Json(result).into_response())
}

/// `YYYY-MM-DD` as a UTC day; today when absent.
pub fn day_range(date: Option<&str>) -> Result<TimeRange, ApiError> {
    let day = match date {
        None => time::OffsetDateTime::now_utc().date(),
        Some(text) => {
            let format = time::format_description::parse_borrowed::<2>("[year]-[month]-[day]")
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            time::Date::parse(text, &format).map_err(|_| {
                ApiError(StatusCode::BAD_REQUEST, "date: expected YYYY-MM-DD".into())
            })?
        }
    };
    let start = day.midnight().assume_utc().unix_timestamp() * 1000;
    Ok(TimeRange {
        since_ms: Some(start),
        until_ms: Some(start + 86_400_000),
    })
}

async fn list_payments(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let operator = reader(&state, &headers)?;
    let range = day_range(query.get("date").map(String::as_str))?;
    let operations = state.engine.operations(operator, range).await?;
    Ok(Json(json!({ "payments": operations })).into_response())
}

fn payment_id(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "id: expected a payment id (a positive number)".into(),
            )
        })
}

async fn get_payment(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let operator = reader(&state, &headers)?;
    let operation = state.engine.operation(operator, payment_id(&id)?).await?;
    Ok(Json(operation).into_response())
}

async fn cancel_payment(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let operator = writer(&state, &headers)?;
    let key = idempotency_key(&headers)?;
    let id = payment_id(&id)?;
    let result = state.engine.cancel(operator, id, key.as_deref()).await?;
    Ok(Json(result).into_response())
}

async fn refund_payment(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let operator = writer(&state, &headers)?;
    let key = idempotency_key(&headers)?;
    let id = payment_id(&id)?;
    let map = object(&body)?;
    let amount = match map.get("amount") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(parse_amount(&n.to_string())?),
        Some(Value::String(s)) => Some(parse_amount(s)?),
        Some(_) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "amount: expected an amount in minor units".into(),
            ))
        }
    };
    let result = state
        .engine
        .refund(operator, id, amount, key.as_deref())
        .await?;
    Ok(Json(result).into_response())
}

async fn close_shift(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let operator = writer(&state, &headers)?;
    let key = idempotency_key(&headers)?;
    let result = state.engine.close_shift(operator, key.as_deref()).await?;
    Ok(Json(result).into_response())
}

async fn save_card(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let operator = writer(&state, &headers)?;
    let map = object(&body)?;
    let payment_id = match map.get("payment_id") {
        Some(Value::Number(n)) => n.as_i64().filter(|id| *id > 0),
        Some(Value::String(s)) => s.parse::<i64>().ok().filter(|id| *id > 0),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "payment_id: expected the id of an approved payment".into(),
        )
    })?;
    let consent = map.get("consent") == Some(&Value::Bool(true));
    if !consent {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "consent: expected true (the customer agreed to keep the card on file)".into(),
        ));
    }
    let card = super::vault::save_card(
        &state.engine,
        state.recurring.as_ref(),
        operator,
        payment_id,
        consent,
    )
    .await?;
    Ok(Json(card).into_response())
}

async fn list_cards(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let operator = reader(&state, &headers)?;
    let cards = super::vault::cards(state.recurring.as_ref(), operator).await?;
    Ok(Json(json!({ "cards": cards })).into_response())
}

async fn create_schedule(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let operator = writer(&state, &headers)?;
    let request = super::recurring::ScheduleRequest::from_fields(&object(&body)?)?;
    let schedule = super::recurring::create(&state, operator, request).await?;
    Ok(Json(super::recurring::view(&schedule)).into_response())
}

async fn list_schedules(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let operator = reader(&state, &headers)?;
    let schedules = super::recurring::list(state.recurring.as_ref(), operator).await?;
    let views: Vec<Value> = schedules.iter().map(super::recurring::view).collect();
    Ok(Json(json!({ "schedules": views })).into_response())
}
