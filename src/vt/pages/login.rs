//! The login page (its own double-submitted CSRF token) and logging out.

use super::*;

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

pub(super) async fn form() -> Response {
    login_page(StatusCode::OK, None)
}

pub(super) async fn submit(
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
            let cookie = auth::session_cookie(&id, state.secure);
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

pub(super) async fn logout(
    State(state): State<Arc<VtState>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let ctx = match ctx_for_write(&state, &headers, &form) {
        Ok(ctx) => ctx,
        Err(response) => return *response,
    };
    state.auth.logout(&ctx.id);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&auth::expired_cookie(state.secure)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
