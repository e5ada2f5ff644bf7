//! Where a rule applies (`applies_to`): channels, listeners, merchants, MCCs,
//! compiled so the common case (no scope) costs one branch.

use std::collections::HashMap;

use super::config::Scope;
use super::merchant::{trim_id, MccSet};
use super::state::{id_key, KeySet};
use super::Facts;
use crate::channel::Channel;

const CHANNELS: [Channel; 3] = [Channel::Pos, Channel::VirtualTerminal, Channel::Host];

fn channel_bit(channel: Channel) -> u8 {
    match channel {
        Channel::Pos => 1,
        Channel::VirtualTerminal => 2,
        Channel::Host => 4,
    }
}

/// MCCs are four digits.
const MCCS: u16 = 10_000;

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
            if !facts.mcc().is_some_and(|m| mccs.contains(m)) {
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

/// Rule positions as bits, 64 to a word.
type RuleBits = Box<[u64]>;

fn rule_bits(words: usize, rules: impl Iterator<Item = usize>) -> RuleBits {
    let mut bits = vec![0u64; words].into_boxed_slice();
    for rule in rules {
        bits[rule / 64] |= 1 << (rule % 64);
    }
    bits
}

/// Which of a list of rules apply to a request, found with one lookup per
/// kind of scope instead of a test per rule: with dozens of rules scoped to
/// MCCs or merchants, most do not apply to a given request, and are then
/// never looked at.
#[derive(Debug)]
pub(crate) struct ScopeIndex {
    words: usize,
    /// Per channel (in [`CHANNELS`] order), the rules that admit it.
    by_channel: [RuleBits; 3],
    /// Rules limited to some merchants; per merchant named, the rules naming it.
    merchant_scoped: RuleBits,
    by_merchant: KeySet<RuleBits>,
    /// Rules limited to some MCCs; per MCC, its entry in `mcc_sets` (empty
    /// when no rule names MCCs).
    mcc_scoped: RuleBits,
    mcc_class: Box<[u16]>,
    mcc_sets: Vec<RuleBits>,
    /// Rules limited to some listeners: tested one by one, as listeners are
    /// few and named by strings.
    listener_scoped: RuleBits,
}

impl ScopeIndex {
    /// Indexes `rules` (their positions are the indices it yields).
    pub fn new(rules: &[&Applies]) -> ScopeIndex {
        let words = rules.len().div_ceil(64);
        let positions = |keep: &dyn Fn(&Applies) -> bool| {
            rule_bits(
                words,
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| keep(a))
                    .map(|(i, _)| i),
            )
        };
        let by_channel = CHANNELS.map(|channel| {
            positions(&|a: &Applies| a.channels == 0 || a.channels & channel_bit(channel) != 0)
        });
        let mut by_merchant: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, applies) in rules.iter().enumerate() {
            for &key in applies.merchants.iter().flatten() {
                by_merchant.entry(key).or_default().push(i);
            }
        }
        let mcc_rules: Vec<(usize, &MccSet)> = rules
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.mccs.as_ref().map(|set| (i, set)))
            .collect();
        let (mut mcc_class, mut mcc_sets) = (Vec::new(), Vec::new());
        if !mcc_rules.is_empty() {
            let mut classes: HashMap<RuleBits, u16> = HashMap::new();
            for mcc in 0..MCCS {
                let set = rule_bits(
                    words,
                    mcc_rules
                        .iter()
                        .filter(|(_, set)| set.contains(mcc))
                        .map(|&(i, _)| i),
                );
                let next = u16::try_from(mcc_sets.len()).unwrap_or(u16::MAX);
                let class = *classes.entry(set.clone()).or_insert_with(|| {
                    mcc_sets.push(set);
                    next
                });
                mcc_class.push(class);
            }
        }
        ScopeIndex {
            words,
            by_channel,
            merchant_scoped: positions(&|a: &Applies| a.merchants.is_some()),
            by_merchant: by_merchant
                .into_iter()
                .map(|(key, rules)| (key, rule_bits(words, rules.into_iter())))
                .collect(),
            mcc_scoped: positions(&|a: &Applies| a.mccs.is_some()),
            mcc_class: mcc_class.into_boxed_slice(),
            mcc_sets,
            listener_scoped: positions(&|a: &Applies| !a.listeners.is_empty()),
        }
    }

    /// The rules that may apply to `facts`, a word of 64 at a time.
    pub fn candidates<'a>(&'a self, facts: &Facts<'_>) -> Candidates<'a> {
        let channel = CHANNELS
            .iter()
            .position(|&c| c == facts.channel)
            .unwrap_or(0);
        let merchant = if self.by_merchant.is_empty() {
            None
        } else {
            facts
                .merchant_key()
                .and_then(|key| self.by_merchant.get(&key))
        };
        // Read field 18 only if some rule is scoped by category.
        let mcc = if self.mcc_sets.is_empty() {
            None
        } else {
            facts
                .mcc()
                .and_then(|mcc| self.mcc_class.get(usize::from(mcc)))
                .and_then(|&class| self.mcc_sets.get(usize::from(class)))
        };
        Candidates {
            index: self,
            channel: &self.by_channel[channel],
            merchant,
            mcc,
        }
    }
}

/// The lookups [`ScopeIndex::candidates`] made for one request.
pub(crate) struct Candidates<'a> {
    index: &'a ScopeIndex,
    channel: &'a RuleBits,
    merchant: Option<&'a RuleBits>,
    mcc: Option<&'a RuleBits>,
}

impl Candidates<'_> {
    /// Per word of rules (bit `b` of word `w` is rule `64 w + b`): the rules
    /// that may apply, and those of them whose own [`Applies::matches`] must
    /// still be asked (the listener-scoped).
    pub fn words(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let index = self.index;
        let pick = |set: Option<&RuleBits>, word: usize| set.map_or(0, |bits| bits[word]);
        (0..index.words).map(move |word| {
            let bits = self.channel[word]
                & (!index.merchant_scoped[word] | pick(self.merchant, word))
                & (!index.mcc_scoped[word] | pick(self.mcc, word));
            (word, bits, index.listener_scoped[word])
        })
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

    #[test]
    fn the_index_yields_exactly_the_rules_that_match_in_order() {
        let scopes = [
            "",
            "channels = [\"pos\"]",
            "mccs = [\"5411\"]",
            "mccs = [\"5400-5499\"]\nchannels = [\"virtual-terminal\"]",
            "merchants = [\"SHOP1\", \"SHOP2\"]",
            "merchants = [\"SHOP2\"]\nmccs = [\"5999\"]",
            "listeners = [\"ecom\"]",
        ];
        // Enough rules to fill more than one word.
        let applies: Vec<Applies> = (0..150)
            .map(|i| Applies::new(&scope(scopes[i % scopes.len()]), &[]))
            .collect();
        let refs: Vec<&Applies> = applies.iter().collect();
        let index = ScopeIndex::new(&refs);
        let contexts = [
            RiskContext::pos(),
            RiskContext::virtual_terminal(),
            RiskContext {
                channel: Channel::VirtualTerminal,
                listener: "ecom",
            },
        ];
        let requests: [&[(u8, &str)]; 5] = [
            &[],
            &[(18, "5411"), (42, "SHOP1")],
            &[(18, "5999"), (42, "SHOP2  ")],
            &[(18, "5450"), (42, "SHOP3")],
            &[(42, "SHOP2")],
        ];
        for ctx in contexts {
            for fields in requests {
                let mut msg = Message::new(Mti::from_static("0100"));
                for (n, v) in fields {
                    msg.set(*n, v).expect("field");
                }
                let facts = Facts::new(&ctx, &msg, Timestamp::from_unix_ms(0));
                let mut found = Vec::new();
                for (word, bits, check) in index.candidates(&facts).words() {
                    for bit in (0..64).filter(|b| bits >> b & 1 != 0) {
                        let i = word * 64 + bit;
                        if check >> bit & 1 == 0 || applies[i].matches(&facts) {
                            found.push(i);
                        }
                    }
                }
                let expected: Vec<usize> = (0..applies.len())
                    .filter(|&i| applies[i].matches(&facts))
                    .collect();
                assert_eq!(found, expected, "{ctx:?} {fields:?}");
            }
        }
    }
}
