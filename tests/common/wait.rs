//! The one way a test waits for state it cannot be told about: look again and
//! again, briefly, until it holds or an explicit deadline passes. Needs only
//! tokio and std, so the load generator's tests include this file by path.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Pause between two looks at a polled condition (virtual under paused time).
pub const POLL: Duration = Duration::from_millis(5);

/// Looks at `probe` every [`POLL`] until it yields a value and returns it;
/// fails the test naming `what` once `deadline` has passed. The probe is async
/// so it can ask over the network (an HTTP scrape, say).
pub async fn poll_until<T, F>(what: &str, deadline: Duration, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let give_up = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < give_up,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
