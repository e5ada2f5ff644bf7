//! Simulator rules, compiled once from the config: MTIs and response codes are
//! parsed and field numbers checked up front, so matching a request costs a few
//! byte comparisons and no allocation.

use std::time::Duration;

use super::config::{SimResponse, SimRule};
use crate::iso8583::message::is_data_field;
use crate::iso8583::{Message, Mti, ResponseCode};

use super::SimulatorError;

/// What the simulator does with a request a rule (or the default) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Respond {
        code: ResponseCode,
        delay: Option<Duration>,
    },
    Drop,
    Close,
}

impl Action {
    /// `rule` is 1-based for rules and 0 for `default_response`, as errors name it.
    pub(crate) fn compile(
        response: &SimResponse,
        delay_ms: u64,
        rule: usize,
    ) -> Result<Action, SimulatorError> {
        Ok(match response {
            SimResponse::Code(code) => Action::Respond {
                code: code.parse().map_err(|e| rule_error(rule, e))?,
                delay: (delay_ms > 0).then(|| Duration::from_millis(delay_ms)),
            },
            SimResponse::Drop => Action::Drop,
            SimResponse::Close => Action::Close,
        })
    }
}

fn rule_error(rule: usize, problem: impl ToString) -> SimulatorError {
    if rule == 0 {
        SimulatorError::DefaultResponse(problem.to_string())
    } else {
        SimulatorError::Rule {
            rule,
            problem: problem.to_string(),
        }
    }
}

/// One rule; an absent condition always holds.
#[derive(Debug)]
struct Rule {
    mti: Option<Mti>,
    pan_prefix: Option<Box<[u8]>>,
    amount_min: Option<u64>,
    amount_max: Option<u64>,
    processing_code: Option<Box<[u8]>>,
    fields: Box<[(u8, Box<[u8]>)]>,
    action: Action,
}

/// The rules in config order; the first match wins.
#[derive(Debug)]
pub(crate) struct Rules(Box<[Rule]>);

impl Rules {
    pub(crate) fn compile(rules: &[SimRule]) -> Result<Rules, SimulatorError> {
        rules
            .iter()
            .enumerate()
            .map(|(index, rule)| compile_rule(rule, index + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(|rules| Rules(rules.into_boxed_slice()))
    }

    /// The action of the first rule `request` satisfies. Rules without an MTI apply
    /// to authorization and financial requests only; a rule naming an MTI (say
    /// "0400", to drop reversals) applies to that MTI and its repeat.
    pub(crate) fn first_match(&self, request: &Message) -> Option<Action> {
        let mti = request.mti();
        let authorization = super::is_authorization(mti);
        // Parsed at most once per request, and only when some rule asks.
        let mut amount: Option<Option<u64>> = None;
        self.0
            .iter()
            .find(|rule| {
                let mti_holds = match rule.mti {
                    Some(wanted) => wanted == mti || wanted == mti.original(),
                    None => authorization,
                };
                mti_holds && rule.matches(request, &mut amount)
            })
            .map(|rule| rule.action)
    }
}

fn compile_rule(rule: &SimRule, index: usize) -> Result<Rule, SimulatorError> {
    let mti = rule
        .mti
        .as_deref()
        .map(str::parse::<Mti>)
        .transpose()
        .map_err(|e| rule_error(index, e))?;
    if let (Some(min), Some(max)) = (rule.amount_min, rule.amount_max) {
        if min > max {
            return Err(rule_error(
                index,
                format!("expected amount_min <= amount_max, found {min} > {max}"),
            ));
        }
    }
    let fields = rule
        .fields
        .iter()
        .map(|(&number, value)| match u8::try_from(number) {
            Ok(n) if is_data_field(n) => Ok((n, value.as_bytes().into())),
            _ => Err(rule_error(
                index,
                format!("fields: {number} is not a data field (expected 2-192 other than 65)"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        mti,
        pan_prefix: rule.pan_prefix.as_deref().map(|p| p.as_bytes().into()),
        amount_min: rule.amount_min,
        amount_max: rule.amount_max,
        processing_code: rule.processing_code.as_deref().map(|p| p.as_bytes().into()),
        fields: fields.into_boxed_slice(),
        action: Action::compile(&rule.respond, rule.delay_ms, index)?,
    })
}

impl Rule {
    /// Every condition but the MTI; `amount` caches field 4 across rules.
    fn matches(&self, request: &Message, amount: &mut Option<Option<u64>>) -> bool {
        if let Some(prefix) = &self.pan_prefix {
            if !request.get(2).is_some_and(|pan| pan.starts_with(prefix)) {
                return false;
            }
        }
        if let Some(prefix) = &self.processing_code {
            if !request.get(3).is_some_and(|pc| pc.starts_with(prefix)) {
                return false;
            }
        }
        if self.amount_min.is_some() || self.amount_max.is_some() {
            // A missing or malformed amount satisfies no amount condition.
            let Some(value) = *amount.get_or_insert_with(|| request.amount().ok().map(|a| a.0))
            else {
                return false;
            };
            if self.amount_min.is_some_and(|min| value < min)
                || self.amount_max.is_some_and(|max| value > max)
            {
                return false;
            }
        }
        self.fields
            .iter()
            .all(|(n, wanted)| request.get(*n) == Some(&wanted[..]))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn rule(respond: &str) -> SimRule {
        SimRule {
            mti: None,
            pan_prefix: None,
            amount_min: None,
            amount_max: None,
            processing_code: None,
            fields: BTreeMap::new(),
            respond: respond.parse().expect("valid response"),
            delay_ms: 0,
        }
    }

    fn request(mti: &str, fields: &[(u8, &str)]) -> Message {
        let mut message = Message::new(mti.parse().expect("valid MTI"));
        for (n, v) in fields {
            message.set(*n, v).expect("data field");
        }
        message
    }

    fn code(text: &str) -> Action {
        Action::Respond {
            code: text.parse().expect("valid code"),
            delay: None,
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = Rules::compile(&[
            SimRule {
                pan_prefix: Some("5".into()),
                ..rule("05")
            },
            SimRule {
                pan_prefix: Some("4111".into()),
                ..rule("51")
            },
            rule("drop"),
        ])
        .expect("compiles");
        let visa = request("0100", &[(2, "4111111111111111")]);
        assert_eq!(rules.first_match(&visa), Some(code("51")));
        let other = request("0100", &[(2, "6011000000000004")]);
        assert_eq!(rules.first_match(&other), Some(Action::Drop));
    }

    #[test]
    fn amount_bounds_are_inclusive_and_need_a_readable_amount() {
        let rules = Rules::compile(&[SimRule {
            amount_min: Some(100),
            amount_max: Some(200),
            ..rule("close")
        }])
        .expect("compiles");
        for (amount, hit) in [
            ("000000000099", false),
            ("000000000100", true),
            ("000000000200", true),
            ("000000000201", false),
            ("00000000x150", false),
        ] {
            let hit = hit.then_some(Action::Close);
            assert_eq!(
                rules.first_match(&request("0200", &[(4, amount)])),
                hit,
                "{amount}"
            );
        }
        assert_eq!(rules.first_match(&request("0200", &[])), None);
    }

    #[test]
    fn mti_condition_matches_the_repeat_and_other_classes_only_when_named() {
        let rules = Rules::compile(&[
            SimRule {
                mti: Some("0100".into()),
                ..rule("05")
            },
            SimRule {
                mti: Some("0400".into()),
                ..rule("drop")
            },
            rule("12"),
        ])
        .expect("compiles");
        assert_eq!(rules.first_match(&request("0101", &[])), Some(code("05")));
        assert_eq!(rules.first_match(&request("0200", &[])), Some(code("12")));
        assert_eq!(rules.first_match(&request("0401", &[])), Some(Action::Drop));
        // Unnamed-MTI rules leave reversals, advices and echoes alone.
        assert_eq!(rules.first_match(&request("0420", &[])), None);
        assert_eq!(rules.first_match(&request("0800", &[])), None);
    }

    #[test]
    fn processing_code_prefix_and_exact_field_values_must_all_hold() {
        let rules = Rules::compile(&[SimRule {
            processing_code: Some("01".into()),
            fields: BTreeMap::from([(41, "TERM0001".to_owned())]),
            delay_ms: 250,
            ..rule("91")
        }])
        .expect("compiles");
        let hit = request("0200", &[(3, "010000"), (41, "TERM0001")]);
        assert_eq!(
            rules.first_match(&hit),
            Some(Action::Respond {
                code: "91".parse().expect("valid code"),
                delay: Some(Duration::from_millis(250)),
            })
        );
        let wrong_terminal = request("0200", &[(3, "010000"), (41, "TERM0002")]);
        assert_eq!(rules.first_match(&wrong_terminal), None);
        let wrong_code = request("0200", &[(3, "000000"), (41, "TERM0001")]);
        assert_eq!(rules.first_match(&wrong_code), None);
    }

    #[test]
    fn impossible_rules_are_refused_by_number() {
        let err = Rules::compile(&[
            rule("00"),
            SimRule {
                fields: BTreeMap::from([(65, "x".to_owned())]),
                ..rule("00")
            },
        ])
        .expect_err("field 65 is a bitmap");
        assert!(err.to_string().contains("rule #2"), "{err}");
        let err = Rules::compile(&[SimRule {
            amount_min: Some(5),
            amount_max: Some(1),
            ..rule("00")
        }])
        .expect_err("empty range");
        assert!(err.to_string().contains("amount_min"), "{err}");
        let err = Rules::compile(&[SimRule {
            mti: Some("01x0".into()),
            ..rule("00")
        }])
        .expect_err("bad MTI");
        assert!(err.to_string().contains("01x0"), "{err}");
    }
}
