//! Where a rule applies (`applies_to`): channels, listeners, merchants, MCCs,
//! compiled so the common case (no scope) costs one branch.

use super::config::Scope;
use super::merchant::{trim_id, MccSet};
use super::state::id_key;
use super::Facts;
use crate::config::Channel;

fn channel_bit(channel: Channel) -> u8 {
    match channel {
        Channel::Pos => 1,
        Channel::VirtualTerminal => 2,
        Channel::Host => 4,
    }
}

/// A compiled [`Scope`].
#[derive(Debug)]
pub(crate) struct Applies {
    everything: bool,
    /// Bits of [`channel_bit`]; 0 = every channel.
    channels: u8,
    listeners: Box<[Box<str>]>,
    /// Keys of field 42 values, sorted: scopes name a few merchants,
    /// where a binary search beats a hash set.
    merchants: Option<Box<[u64]>>,
    mccs: Option<MccSet>,
}

impl Applies {
    /// `default_channels` stand in when the scope names none (the
    /// card-not-present rules default to the virtual terminal).
    pub fn new(scope: &Scope, default_channels: &[Channel]) -> Applies {
        let channels = if scope.channels.is_empty() {
            default_channels
        } else {
            &scope.channels
        };
        let channels = channels.iter().fold(0, |bits, &c| bits | channel_bit(c));
        let merchants = (!scope.merchants.is_empty()).then(|| {
            let mut keys: Vec<u64> = scope
                .merchants
                .iter()
                .map(|m| id_key(trim_id(m.as_bytes())))
                .collect();
            keys.sort_unstable();
            keys.into_boxed_slice()
        });
        let mccs = (!scope.mccs.is_empty()).then(|| MccSet::new(&scope.mccs));
        Applies {
            everything: channels == 0
                && scope.listeners.is_empty()
                && merchants.is_none()
                && mccs.is_none(),
            channels,
            listeners: scope.listeners.iter().map(|l| l.as_str().into()).collect(),
            merchants,
            mccs,
        }
    }

    #[inline]
    pub fn matches(&self, facts: &Facts<'_>) -> bool {
        if self.everything {
            return true;
        }
        if self.channels != 0 && self.channels & channel_bit(facts.channel) == 0 {
            return false;
        }
        if !self.listeners.is_empty() && !self.listeners.iter().any(|l| **l == *facts.listener) {
            return false;
        }
        if let Some(merchants) = &self.merchants {
            if !facts
                .merchant_key()
                .is_some_and(|k| merchants.binary_search(&k).is_ok())
            {
                return false;
            }
        }
        if let Some(mccs) = &self.mccs {
            if !facts.mcc.is_some_and(|m| mccs.contains(m)) {
                return false;
            }
        }
        true
    }

    /// The scope as `rules check` prints it.
    pub fn describe(scope: &Scope, default_channels: &[Channel]) -> String {
        let mut parts = Vec::new();
        let channels = if scope.channels.is_empty() {
            default_channels
        } else {
            &scope.channels
        };
        if !channels.is_empty() {
            let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
            parts.push(format!("channels {}", names.join(",")));
        }
        if !scope.listeners.is_empty() {
            parts.push(format!("listeners {}", scope.listeners.join(",")));
        }
        if !scope.merchants.is_empty() {
            parts.push(format!("merchants {}", scope.merchants.join(",")));
        }
        if !scope.mccs.is_empty() {
            let mccs: Vec<String> = scope.mccs.iter().map(ToString::to_string).collect();
            parts.push(format!("mccs {}", mccs.join(",")));
        }
        if parts.is_empty() {
            "all".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso8583::{Message, Mti};
    use crate::risk::{RiskContext, Timestamp};

    fn scope(text: &str) -> Scope {
        toml::from_str(text).expect("scope")
    }

    fn matches(applies: &Applies, ctx: RiskContext<'_>, fields: &[(u8, &str)]) -> bool {
        let mut msg = Message::new(Mti::from_static("0100"));
        for (n, v) in fields {
            msg.set(*n, v).expect("field");
        }
        applies.matches(&Facts::new(&ctx, &msg, Timestamp::from_unix_ms(0)))
    }

    #[test]
    fn an_empty_scope_matches_everything() {
        let applies = Applies::new(&Scope::default(), &[]);
        assert!(matches(&applies, RiskContext::pos(), &[]));
        assert_eq!(Applies::describe(&Scope::default(), &[]), "all");
    }

    #[test]
    fn every_list_given_must_match() {
        let applies = Applies::new(
            &scope(
                "channels = [\"pos\"]\nmerchants = [\"SHOP1\"]\nmccs = [\"5411\", \"5960-5969\"]",
            ),
            &[],
        );
        let pos = RiskContext::pos();
        assert!(matches(&applies, pos, &[(42, "SHOP1   "), (18, "5962")]));
        assert!(!matches(&applies, pos, &[(42, "SHOP2"), (18, "5962")]));
        assert!(!matches(&applies, pos, &[(42, "SHOP1"), (18, "5999")]));
        assert!(
            !matches(&applies, pos, &[(42, "SHOP1")]),
            "no MCC, no match"
        );
        assert!(!matches(
            &applies,
            RiskContext::virtual_terminal(),
            &[(42, "SHOP1"), (18, "5411")]
        ));
    }

    #[test]
    fn listeners_match_by_name() {
        let applies = Applies::new(&scope("listeners = [\"ecom\"]"), &[]);
        let ecom = RiskContext {
            channel: Channel::VirtualTerminal,
            listener: "ecom",
        };
        assert!(matches(&applies, ecom, &[]));
        assert!(!matches(&applies, RiskContext::pos(), &[]));
    }

    #[test]
    fn default_channels_apply_when_the_scope_names_none() {
        let applies = Applies::new(&Scope::default(), &[Channel::VirtualTerminal]);
        assert!(!matches(&applies, RiskContext::pos(), &[]));
        assert!(matches(&applies, RiskContext::virtual_terminal(), &[]));
        let explicit = Applies::new(&scope("channels = [\"pos\"]"), &[Channel::VirtualTerminal]);
        assert!(matches(&explicit, RiskContext::pos(), &[]));
    }
}
