//! The server-rendered pages.

use std::sync::Arc;

use axum::Router;

use super::VtState;

pub fn routes() -> Router<Arc<VtState>> {
    Router::new()
}
