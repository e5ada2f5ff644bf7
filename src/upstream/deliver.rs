//! The one thing store-and-forward needs from an issuer: send a message and wait
//! for its answer. [`Issuer`](super::Issuer) implements it; saf's tests script it.

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

use super::UpstreamError;
use crate::iso8583::Message;

/// A boxed future, so [`Deliver`] stays object-safe.
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<Message, UpstreamError>> + Send + 'a>>;

/// Sends one message to the issuer and returns its answer, giving up at
/// `deadline`. Nothing is reversed on failure: the caller repeats it.
pub trait Deliver: Send + Sync + 'static {
    fn deliver(&self, message: Message, deadline: Instant) -> Delivery<'_>;

    /// Whether a delivery could go out now (a live link). Store-and-forward
    /// waits rather than count attempts that could not be sent.
    fn ready(&self) -> bool {
        true
    }
}
