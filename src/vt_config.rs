//! The `[virtual_terminal]` section: where the web virtual terminal listens,
//! how long a session lives, how many failed logins lock an account or an
//! address, and the operators (`[[virtual_terminal.operator]]`).
//!
//! A top-level module of its own rather than `vt::config`: `config` reads
//! this section and `vt` runs on the switch, which imports `config`, so the
//! section cannot live under `vt` without a module cycle.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::config_values::{socket_addr, ConfigDir};
use crate::tls::ListenerTls;

/// `[virtual_terminal]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualTerminalConfig {
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// HTTPS with the same `tls` table (and rustls setup) as terminal listeners.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// A session unused this long is gone; the operator logs in again.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    #[serde(default)]
    pub login: LoginLimits,
    /// The merchant category code sent in field 18 (5969: direct marketing).
    #[serde(default = "default_mcc")]
    pub mcc: String,
    /// Recurring charges: how often the switch looks for due ones.
    #[serde(default = "default_recurring_poll_s")]
    pub recurring_poll_s: u64,
    /// After a soft decline (51, 91, 96, ...) a recurring charge is tried
    /// again this many hours after it was due, once per entry.
    #[serde(default = "default_dunning_hours")]
    pub dunning_hours: Vec<u32>,
    #[serde(rename = "operator", default)]
    pub operators: Vec<OperatorConfig>,
}

/// `[virtual_terminal.login]`: after `max_failures` failed logins within
/// `window_s` for one username, or from one client address, that username or
/// address is locked for `lock_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginLimits {
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    #[serde(default = "default_lock_s")]
    pub lock_s: u64,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            max_failures: default_max_failures(),
            window_s: default_window_s(),
            lock_s: default_lock_s(),
        }
    }
}

/// One `[[virtual_terminal.operator]]`: a service point's login, the
/// merchant (field 42) and terminal (field 41) its payments carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    pub username: String,
    /// An argon2 PHC string, as `isoswitch vt hash-password` prints it.
    pub password_hash: String,
    pub merchant: String,
    pub terminal: String,
    #[serde(default)]
    pub role: Role,
}

/// What an operator may do: a supervisor may also refund and close the shift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Operator,
    Supervisor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
        }
    }
}

fn default_idle_timeout_s() -> u64 {
    900
}
fn default_max_failures() -> u32 {
    5
}
fn default_window_s() -> u64 {
    900
}
fn default_lock_s() -> u64 {
    900
}
fn default_recurring_poll_s() -> u64 {
    60
}
fn default_dunning_hours() -> Vec<u32> {
    vec![24, 48, 72]
}
fn default_mcc() -> String {
    "5969".to_owned()
}

/// What is wrong with the section: the item (`virtual_terminal.operator
/// "ann"`) and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidVirtualTerminal {
    pub item: String,
    pub problem: String,
}

impl VirtualTerminalConfig {
    pub fn resolve_paths(&mut self, dir: ConfigDir<'_>) {
        if let Some(tls) = &mut self.tls {
            dir.resolve(&mut tls.cert);
            dir.resolve(&mut tls.key);
            dir.resolve_optional(&mut tls.client_ca);
        }
    }

    pub fn validate(&self) -> Result<(), InvalidVirtualTerminal> {
        let section = |problem: String| InvalidVirtualTerminal {
            item: "virtual_terminal".to_owned(),
            problem,
        };
        if self.idle_timeout_s == 0 {
            return Err(section("idle_timeout_s: expected at least 1 second".into()));
        }
        if self.login.max_failures == 0 || self.login.window_s == 0 || self.login.lock_s == 0 {
            return Err(section(
                "login: max_failures, window_s and lock_s must each be at least 1".into(),
            ));
        }
        if self.recurring_poll_s == 0 {
            return Err(section(
                "recurring_poll_s: expected at least 1 second".into(),
            ));
        }
        if self.dunning_hours.windows(2).any(|w| w[0] >= w[1]) || self.dunning_hours.contains(&0) {
            return Err(section(format!(
                "dunning_hours: expected increasing hours above 0, found {:?}",
                self.dunning_hours
            )));
        }
        if self.mcc.len() != 4 || !self.mcc.bytes().all(|b| b.is_ascii_digit()) {
            return Err(section(format!(
                "mcc: expected 4 digits, found {:?}",
                self.mcc
            )));
        }
        let mut seen = HashSet::new();
        for operator in &self.operators {
            let item = format!("virtual_terminal.operator {:?}", operator.username);
            let invalid = |problem: String| InvalidVirtualTerminal {
                item: item.clone(),
                problem,
            };
            if operator.username.trim().is_empty() {
                return Err(section("operator: expected a non-empty username".into()));
            }
            if !seen.insert(operator.username.as_str()) {
                return Err(invalid("username defined twice".into()));
            }
            if let Err(e) = argon2::PasswordHash::new(&operator.password_hash) {
                return Err(invalid(format!(
                    "password_hash: expected an argon2 PHC string from `isoswitch vt hash-password`: {e}"
                )));
            }
            if !operator.password_hash.starts_with("$argon2") {
                return Err(invalid(
                    "password_hash: expected an argon2 hash ($argon2id$...)".into(),
                ));
            }
            check_id("terminal", &operator.terminal, 8).map_err(&invalid)?;
            check_id("merchant", &operator.merchant, 15).map_err(&invalid)?;
        }
        Ok(())
    }
}

/// Terminal (41, ans 8) and merchant (42, ans 15) ids: printable, not blank,
/// not longer than their field.
fn check_id(key: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() || value.len() > max || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "{key}: expected 1 to {max} printable characters without spaces, found {value:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$3uZcYYL9j1OUEYqPzP/pujk7sYGZqDFEK6s3m0K0WRY";

    fn parse(text: &str) -> VirtualTerminalConfig {
        toml::from_str(text).expect("section parses")
    }

    fn operator(username: &str, terminal: &str) -> String {
        format!(
            "[[operator]]\nusername = {username:?}\npassword_hash = {HASH:?}\nmerchant = \"M1\"\nterminal = {terminal:?}\n"
        )
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = parse(&format!(
            "bind = \"127.0.0.1:0\"\n{}",
            operator("ann", "T1")
        ));
        assert_eq!(config.idle_timeout_s, 900);
        assert_eq!(config.login, LoginLimits::default());
        assert_eq!(config.operators[0].role, Role::Operator);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn a_username_twice_is_refused_by_name() {
        let config = parse(&format!(
            "bind = \"127.0.0.1:0\"\n{}{}",
            operator("ann", "T1"),
            operator("ann", "T2")
        ));
        let error = config.validate().expect_err("duplicate username");
        assert!(error.item.contains("\"ann\""), "{error:?}");
        assert!(error.problem.contains("twice"), "{error:?}");
    }

    #[test]
    fn a_terminal_id_longer_than_field_41_is_refused() {
        let config = parse(&format!(
            "bind = \"127.0.0.1:0\"\n{}",
            operator("ann", "TERMINAL9")
        ));
        let error = config.validate().expect_err("long terminal id");
        assert!(error.problem.starts_with("terminal:"), "{error:?}");
    }

    #[test]
    fn a_password_in_clear_is_refused() {
        let text = "bind = \"127.0.0.1:0\"\n[[operator]]\nusername = \"ann\"\npassword_hash = \"secret\"\nmerchant = \"M\"\nterminal = \"T\"\n";
        let error = parse(text).validate().expect_err("clear password");
        assert!(error.problem.starts_with("password_hash:"), "{error:?}");
    }
}
