//! An issuer that answers in process, without a socket (the simulator implements
//! it, tests script it), and the link transport that talks to it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::session::Closed;
use super::transport::Incoming;
use crate::iso8583::Message;

/// An issuer that answers in process, without a socket: the simulator, or a
/// scripted stand-in in tests. The link treats it as just another transport.
pub trait InProcessIssuer: Send + Sync + 'static {
    fn decide(&self, request: &Message) -> Decision;
}

/// What an in-process issuer does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send `response`, after `delay` when there is one.
    Respond {
        response: Message,
        delay: Option<Duration>,
    },
    /// Never answer (the requester times out).
    Drop,
    /// Close the connection the request came on.
    Close,
}

/// A "connection" to the in-process simulator: its decisions, delivered after
/// their delay. Closing drops the delayed answers, as a socket would.
pub(super) struct InProcess {
    issuer: Arc<dyn InProcessIssuer>,
    ready: VecDeque<Incoming>,
    delayed: JoinSet<Message>,
}

impl InProcess {
    pub(super) fn new(issuer: Arc<dyn InProcessIssuer>) -> InProcess {
        InProcess {
            issuer,
            ready: VecDeque::new(),
            delayed: JoinSet::new(),
        }
    }

    pub(super) fn feed(&mut self, request: &Message) {
        match self.issuer.decide(request) {
            Decision::Respond {
                response,
                delay: None,
            } => self.ready.push_back(Incoming::Message(response)),
            Decision::Respond {
                response,
                delay: Some(delay),
            } => {
                self.delayed.spawn(async move {
                    tokio::time::sleep(delay).await;
                    response
                });
            }
            Decision::Drop => {}
            Decision::Close => self.ready.push_back(Incoming::Closed(Closed::BySimulator)),
        }
    }

    pub(super) async fn receive(&mut self) -> Incoming {
        if let Some(incoming) = self.ready.pop_front() {
            return incoming;
        }
        loop {
            match self.delayed.join_next().await {
                Some(Ok(response)) => return Incoming::Message(response),
                // A delayed answer cannot fail; skip one that was aborted.
                Some(Err(_)) => continue,
                None => std::future::pending::<()>().await,
            }
        }
    }
}
