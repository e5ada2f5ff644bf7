//! The operations listener: the Prometheus recorder (installed once per
//! process), `/metrics`, `/healthz`, `/readyz`, and the token-guarded admin
//! endpoints (`/admin/routes`, `/admin/issuers`, `POST /admin/reload`), which can
//! also run on an address of their own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::switch::Switch;

/// Latency buckets, 250 µs to 10 s: authorizations live in the low
/// milliseconds, and issuer timeouts sit at a few seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use, with the build
/// info gauge set. A second switch in the same process (tests) shares it.
pub fn recorder() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("bucket list is non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; ours still renders.
        let _ = metrics::set_global_recorder(recorder);
        metrics::gauge!(
            "isoswitch_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "commit" => env!("ISOSWITCH_GIT_COMMIT"),
        )
        .set(1.0);
        handle
    })
}

/// What the endpoints read.
pub struct OpsState {
    pub switch: Arc<Switch>,
    /// Set once every listener is bound.
    pub listeners_bound: AtomicBool,
    /// The file `POST /admin/reload` re-reads; None = the embedded default.
    pub config_path: Option<PathBuf>,
    pub admin_token: Option<String>,
}

impl OpsState {
    pub fn new(
        switch: Arc<Switch>,
        config_path: Option<PathBuf>,
        admin_token: Option<String>,
    ) -> Arc<OpsState> {
        Arc::new(OpsState {
            switch,
            listeners_bound: AtomicBool::new(false),
            config_path,
            admin_token,
        })
    }
}

/// `/metrics`, `/healthz` and `/readyz`.
pub fn metrics_routes(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/metrics", get(|| async { recorder().render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/admin/*`, every route behind the admin token.
pub fn admin_routes(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/admin/routes", get(admin_routes_json))
        .route("/admin/issuers", get(admin_issuers_json))
        .route("/admin/reload", post(admin_reload))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Ready when every listener is bound, the journal takes writes and every
/// route's issuer has a live link.
async fn readyz(State(state): State<Arc<OpsState>>) -> Response {
    let mut problems = Vec::new();
    if !state.listeners_bound.load(Ordering::Acquire) {
        problems.push("listeners not bound yet".to_string());
    }
    let journal = state.switch.stores().journal.health();
    if !journal.ready {
        let reason = journal
            .last_error
            .map_or_else(|| "unknown".to_string(), |(message, _)| message);
        problems.push(format!(
            "journal cannot be written (requests are answered 96): {reason}"
        ));
    }
    let snapshot = state.switch.snapshot();
    for route in &snapshot.route_list {
        if !route.issuer.is_available() {
            problems.push(format!(
                "route {}: issuer {} has no live link",
                route.name,
                route.issuer.name()
            ));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "problems": problems })),
        )
            .into_response()
    }
}

/// Compares in constant time, so the response time does not tell how much of
/// a guess was right. (A wrong length answers early; the length is not the secret.)
fn token_matches(given: &[u8], token: &[u8]) -> bool {
    given.ct_eq(token).into()
}

/// Lets a request through to the admin handlers only with the admin token.
async fn require_admin_token(
    State(state): State<Arc<OpsState>>,
    request: Request,
    next: Next,
) -> Response {
    match refusal(&state, request.headers()) {
        Some(denied) => denied,
        None => next.run(request).await,
    }
}

/// The refusal for a request without the admin token; None lets it through.
fn refusal(state: &OpsState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = state.admin_token.as_deref() else {
        return Some(
            (
                StatusCode::FORBIDDEN,
                Json(
                    json!({ "error": "admin endpoints are off: set [admin] token in the config" }),
                ),
            )
                .into_response(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if token_matches(g.as_bytes(), token.as_bytes()) => None,
        _ => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": "expected Authorization: Bearer <admin token>" })),
            )
                .into_response(),
        ),
    }
}

async fn admin_routes_json(State(state): State<Arc<OpsState>>) -> Response {
    let snapshot = state.switch.snapshot();
    let routes: Vec<_> = snapshot
        .config
        .routes
        .iter()
        .map(|r| {
            let available = snapshot.issuer(&r.issuer).is_some_and(|i| i.is_available());
            json!({
                "name": r.name,
                "bins": r.bins.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
                "issuer": r.issuer,
                "issuer_available": available,
            })
        })
        .collect();
    Json(json!({ "generation": snapshot.generation, "routes": routes })).into_response()
}

async fn admin_issuers_json(State(state): State<Arc<OpsState>>) -> Response {
    let snapshot = state.switch.snapshot();
    let issuers: Vec<_> = snapshot
        .issuers
        .iter()
        .map(|e| {
            let mut status = json!(e.issuer.status());
            status["saf_depth"] = json!(state.switch.saf_depth(e.issuer.name()));
            status
        })
        .collect();
    Json(json!({ "generation": snapshot.generation, "issuers": issuers })).into_response()
}

async fn admin_reload(State(state): State<Arc<OpsState>>) -> Response {
    match state.switch.reload_from(state.config_path.as_deref()).await {
        Ok(generation) => {
            Json(json!({ "reloaded": true, "generation": generation })).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "reloaded": false, "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The admin router of the embedded default, with `token`, on a free port.
    async fn admin_on_loopback(
        token: Option<&str>,
        shutdown: &CancellationToken,
    ) -> std::net::SocketAddr {
        let config = Config::embedded_default().expect("embedded default");
        let switch = Switch::start(config, shutdown.clone()).expect("switch starts");
        let state = OpsState::new(switch, None, token.map(str::to_owned));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("loopback");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(serve(listener, admin_routes(state), shutdown.clone()));
        addr
    }

    /// The status code of one plain HTTP/1.1 request.
    async fn status(addr: std::net::SocketAddr, method: &str, path: &str, auth: &str) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("writes");
        let mut raw = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut raw),
        )
        .await
        .expect("answered in time")
        .expect("reads");
        let text = String::from_utf8_lossy(&raw);
        text.split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("an HTTP status line: {text}"))
    }

    #[tokio::test]
    async fn every_admin_route_is_behind_the_token() {
        let shutdown = CancellationToken::new();
        let addr = admin_on_loopback(Some("s3cret"), &shutdown).await;
        for (method, path) in [
            ("GET", "/admin/routes"),
            ("GET", "/admin/issuers"),
            ("POST", "/admin/reload"),
        ] {
            assert_eq!(status(addr, method, path, "").await, 401, "{path}");
            let wrong = "Authorization: Bearer s3cre\r\n";
            assert_eq!(status(addr, method, path, wrong).await, 401, "{path}");
            let right = "Authorization: Bearer s3cret\r\n";
            assert_eq!(status(addr, method, path, right).await, 200, "{path}");
        }
        shutdown.cancel();
    }

    #[tokio::test]
    async fn without_a_configured_token_the_admin_routes_are_off() {
        let shutdown = CancellationToken::new();
        let addr = admin_on_loopback(None, &shutdown).await;
        let any = "Authorization: Bearer anything\r\n";
        assert_eq!(status(addr, "GET", "/admin/routes", any).await, 403);
        assert_eq!(status(addr, "POST", "/admin/reload", any).await, 403);
        shutdown.cancel();
    }

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secret", b"secreT"));
        assert!(!token_matches(b"secret", b"secret2"));
        assert!(!token_matches(b"", b"x"));
    }
}
