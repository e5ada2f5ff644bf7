//! The kinds of traffic a listener carries. Config, risk, switch and server all
//! speak of them, so they live here rather than in any one of those modules.

use std::fmt;

use serde::Deserialize;

/// Which rules apply to a listener's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    Pos,
    VirtualTerminal,
    Host,
}

impl Channel {
    /// The config spelling, also used as the `channel` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Pos => "pos",
            Channel::VirtualTerminal => "virtual-terminal",
            Channel::Host => "host",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
