//! Issuer links: multiplexed, STAN-matched connections to issuer hosts (or the
//! in-process simulator), with sign-on, echo, failover and timeouts; and the
//! sender that delivers the persistent store-and-forward queue of advices and
//! reversals. [`Issuer`] is the entry point.

mod backoff;
pub mod config;
mod deliver;
mod in_process;
mod issuer;
mod link;
mod saf;
mod session;
mod stan;
mod telemetry;
mod transport;
pub use crate::tls;

pub use deliver::{Deliver, Delivery};
pub use in_process::{Decision, InProcessIssuer};
pub use issuer::{EndpointStatus, Issuer, IssuerStatus};
pub use link::UnmatchedApprovalSink;
pub use saf::{
    is_reversible, repeat_of, reversal_for, IssuerDirectory, SafSender, SafSettings,
    REVERSAL_FIELDS,
};
pub use tls::TlsError;

use crate::frame::FrameError;
use crate::iso8583::{CodecError, Stan};

/// Why a message could not be exchanged with an issuer. [`is_upstream_fault`]
/// separates the issuer's failures (answer 91) from ours (answer 96).
///
/// [`is_upstream_fault`]: UpstreamError::is_upstream_fault
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Sent, but no answer within the issuer's timeout: the issuer may have
    /// approved it, so the sender of an authorization reverses it.
    #[error("issuer did not answer in time (issuer STAN {issuer_stan})")]
    Timeout { issuer_stan: Stan },
    /// No link to the issuer is up (or none could take the request in time): the
    /// request was not sent.
    #[error("no link to the issuer is available")]
    Unavailable,
    /// Sent, then the connection closed before the answer: reversed as for a
    /// timeout.
    #[error("connection to the issuer lost before it answered (issuer STAN {issuer_stan})")]
    ConnectionLost { issuer_stan: Stan },
    /// The message does not fit the issuer's spec: nothing was sent.
    #[error("message does not encode with the issuer's spec: {0}")]
    Encode(CodecError),
    /// The encoded message does not fit the issuer's framing: nothing was sent.
    #[error("message does not fit the issuer's framing: {0}")]
    Frame(FrameError),
    /// The issuer's configuration cannot be used (found at start).
    #[error("issuer {issuer:?}: {problem}")]
    Config { issuer: String, problem: String },
    #[error("issuer {issuer:?}: {source}")]
    Tls {
        issuer: String,
        #[source]
        source: TlsError,
    },
}

impl UpstreamError {
    /// Whether the issuer (or the network to it) failed, as opposed to the switch
    /// (a message or configuration that is ours to fix).
    pub fn is_upstream_fault(&self) -> bool {
        match self {
            UpstreamError::Timeout { .. }
            | UpstreamError::Unavailable
            | UpstreamError::ConnectionLost { .. } => true,
            UpstreamError::Encode(_)
            | UpstreamError::Frame(_)
            | UpstreamError::Config { .. }
            | UpstreamError::Tls { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_failures_are_upstream_faults_and_ours_are_not() {
        let stan = Stan(1);
        assert!(UpstreamError::Timeout { issuer_stan: stan }.is_upstream_fault());
        assert!(UpstreamError::ConnectionLost { issuer_stan: stan }.is_upstream_fault());
        assert!(UpstreamError::Unavailable.is_upstream_fault());
        assert!(!UpstreamError::Frame(FrameError::EmptyPayload).is_upstream_fault());
        let config = UpstreamError::Config {
            issuer: "visa".into(),
            problem: "bad header".into(),
        };
        assert!(!config.is_upstream_fault());
        assert_eq!(config.to_string(), "issuer \"visa\": bad header");
    }
}
