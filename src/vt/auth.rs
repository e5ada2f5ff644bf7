//! Who may use the virtual terminal: argon2 password checks against the
//! configured operators, sessions (a random id in an HttpOnly, SameSite=Strict
//! cookie, gone after the idle timeout), a CSRF token per session that every
//! write sends back, and login limits per username and per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock, so tests of the idle timeout and the lock run on paused time.
use tokio::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::vt_config::{LoginLimits, OperatorConfig};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vt_session";

/// `count` random bytes as lowercase hex; None only if the OS has no randomness.
pub fn random_hex(count: usize) -> Option<String> {
    let mut bytes = vec![0u8; count];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the system's random number generator failed")]
    Random,
    #[error("argon2: {0}")]
    Argon2(String),
}

/// An argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash checked when the username is unknown, so an unknown name costs as
/// long as a wrong password and timing does not tell them apart.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$ZGVjb3lkZWNveWRlY295$8m1Q2ZbGqLzFhlB5yQy5qCwXk9l4nT3t0yk3sLr9u8E";

/// One logged-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// Index into the configured operators.
    pub operator: usize,
    pub csrf: String,
    last_seen: Instant,
}

/// Why a login was refused. The message never tells whether the username exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    #[error("wrong username or password")]
    Wrong,
    #[error(
        "too many failed logins: this account or address is locked for {minutes} more minute(s)"
    )]
    Locked { minutes: u64 },
    #[error("the system's random number generator failed")]
    Random,
}

/// Failed logins of one username or one address.
#[derive(Debug, Default)]
struct Failures {
    /// When each failure in the window happened.
    times: Vec<Instant>,
    locked_until: Option<Instant>,
}

impl Failures {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn fail(&mut self, now: Instant, limits: &LoginLimits) {
        let window = Duration::from_secs(limits.window_s);
        self.times.retain(|t| now.duration_since(*t) < window);
        self.times.push(now);
        if self.times.len() >= limits.max_failures as usize {
            self.locked_until = Some(now + Duration::from_secs(limits.lock_s));
            self.times.clear();
        }
    }
}

/// Sessions and login limits of one virtual terminal.
pub struct Auth {
    operators: Vec<OperatorConfig>,
    limits: LoginLimits,
    idle: Duration,
    sessions: Mutex<HashMap<String, Session>>,
    by_username: Mutex<HashMap<String, Failures>>,
    by_address: Mutex<HashMap<IpAddr, Failures>>,
}

/// Locks a map whose entries are whole values: a poisoned one is intact.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    pub fn new(operators: Vec<OperatorConfig>, limits: LoginLimits, idle: Duration) -> Auth {
        Auth {
            operators,
            limits,
            idle,
            sessions: Mutex::new(HashMap::new()),
            by_username: Mutex::new(HashMap::new()),
            by_address: Mutex::new(HashMap::new()),
        }
    }

    pub fn operators(&self) -> &[OperatorConfig] {
        &self.operators
    }

    pub fn operator(&self, index: usize) -> Option<&OperatorConfig> {
        self.operators.get(index)
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Checks a login; on success a new session id and its session. Locked
    /// usernames and addresses are refused before the password is checked.
    /// The argon2 check runs on the blocking pool.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<(String, Session), LoginRefused> {
        let now = Instant::now();
        let locked = {
            let users = lock(&self.by_username);
            let addresses = lock(&self.by_address);
            let user = users.get(username).and_then(|f| f.locked(now));
            let addr = addresses.get(&address).and_then(|f| f.locked(now));
            user.max(addr)
        };
        if let Some(left) = locked {
            return Err(LoginRefused::Locked {
                minutes: left.as_secs().div_ceil(60).max(1),
            });
        }
        let found = self
            .operators
            .iter()
            .position(|o| o.username.as_bytes().ct_eq(username.as_bytes()).into());
        let hash = found
            .and_then(|i| self.operators.get(i))
            .map_or(DECOY_HASH.to_owned(), |o| o.password_hash.clone());
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        let operator = match found {
            Some(index) if matches => index,
            _ => {
                let now = Instant::now();
                lock(&self.by_username)
                    .entry(username.to_owned())
                    .or_default()
                    .fail(now, &self.limits);
                lock(&self.by_address)
                    .entry(address)
                    .or_default()
                    .fail(now, &self.limits);
                return Err(LoginRefused::Wrong);
            }
        };
        lock(&self.by_username).remove(username);
        let (Some(id), Some(csrf)) = (random_hex(32), random_hex(32)) else {
            return Err(LoginRefused::Random);
        };
        let session = Session {
            operator,
            csrf,
            last_seen: Instant::now(),
        };
        let mut sessions = lock(&self.sessions);
        let idle = self.idle;
        sessions.retain(|_, s| s.last_seen.elapsed() < idle);
        sessions.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The live session `id`, its idle clock restarted; None when unknown or idle too long.
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut sessions = lock(&self.sessions);
        let session = sessions.get_mut(id)?;
        if session.last_seen.elapsed() >= self.idle {
            sessions.remove(id);
            return None;
        }
        session.last_seen = Instant::now();
        Some(session.clone())
    }

    pub fn logout(&self, id: &str) {
        lock(&self.sessions).remove(id);
    }
}

/// Whether `sent` is the session's CSRF token (constant time).
pub fn csrf_matches(session: &Session, sent: &str) -> bool {
    session.csrf.as_bytes().ct_eq(sent.as_bytes()).into()
}

/// The value of cookie `name` in a Cookie header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The Set-Cookie value of a session: HttpOnly, SameSite=Strict, Path=/,
/// Secure when served over TLS. No Max-Age: the cookie lives with the
/// browser session and the server ends the session after the idle timeout
/// (a Max-Age would end an operator's session mid-shift however busy).
pub fn session_cookie(id: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Clears the session cookie.
pub fn expired_cookie(secure: bool) -> String {
    format!("{}; Max-Age=0", session_cookie("", secure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vt_config::Role;

    fn auth(limits: LoginLimits) -> Auth {
        let operator = OperatorConfig {
            username: "ann".into(),
            password_hash: hash_password("right").expect("hash"),
            merchant: "M1".into(),
            terminal: "T1".into(),
            role: Role::Operator,
        };
        Auth::new(vec![operator], limits, Duration::from_secs(60))
    }

    const ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("s3cret ", &hash));
        assert!(!verify_password("s3cret", "not a hash"));
    }

    #[tokio::test]
    async fn a_right_login_gets_a_session_with_its_own_csrf_token() {
        let auth = auth(LoginLimits::default());
        let (id, session) = auth.login("ann", "right", ADDRESS).await.expect("login");
        let again = auth.session(&id).expect("live session");
        assert_eq!(again.csrf, session.csrf);
        assert!(csrf_matches(&again, &session.csrf));
        assert!(!csrf_matches(&again, "forged"));
        auth.logout(&id);
        assert!(auth.session(&id).is_none());
    }

    #[tokio::test]
    async fn failures_lock_the_username_without_telling_whether_it_exists() {
        let limits = LoginLimits {
            max_failures: 2,
            window_s: 60,
            lock_s: 60,
        };
        let auth = auth(limits);
        for name in ["ann", "nobody"] {
            let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, u8::from(name == "ann")));
            for _ in 0..2 {
                assert_eq!(
                    auth.login(name, "wrong", other).await.expect_err("wrong"),
                    LoginRefused::Wrong
                );
            }
            let locked = auth.login(name, "right", other).await.expect_err("locked");
            assert!(matches!(locked, LoginRefused::Locked { .. }), "{name}");
        }
        // The same message for a real and an unknown username.
        let real = auth.login("ann", "x", ADDRESS).await.expect_err("locked");
        let unknown = auth
            .login("nobody", "x", ADDRESS)
            .await
            .expect_err("locked");
        assert_eq!(real.to_string(), unknown.to_string());
    }

    #[tokio::test]
    async fn failures_from_one_address_lock_it_for_every_username() {
        let limits = LoginLimits {
            max_failures: 3,
            window_s: 60,
            lock_s: 60,
        };
        let auth = auth(limits);
        for name in ["a", "b", "c"] {
            let _ = auth.login(name, "wrong", ADDRESS).await;
        }
        let locked = auth
            .login("ann", "right", ADDRESS)
            .await
            .expect_err("locked");
        assert!(matches!(locked, LoginRefused::Locked { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_idle_past_its_timeout_is_gone_and_use_keeps_it_alive() {
        let auth = auth(LoginLimits::default());
        let (id, _) = auth.login("ann", "right", ADDRESS).await.expect("login");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(auth.session(&id).is_some(), "used after 50 s");
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(auth.session(&id).is_some(), "idle 50 s since its last use");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(auth.session(&id).is_none(), "idle past the 60 s timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_ends_after_lock_s() {
        let limits = LoginLimits {
            max_failures: 1,
            window_s: 60,
            lock_s: 120,
        };
        let auth = auth(limits);
        let _ = auth.login("ann", "wrong", ADDRESS).await;
        let locked = auth
            .login("ann", "right", ADDRESS)
            .await
            .expect_err("locked");
        assert_eq!(locked, LoginRefused::Locked { minutes: 2 });
        tokio::time::advance(Duration::from_secs(121)).await;
        assert!(auth.login("ann", "right", ADDRESS).await.is_ok());
    }

    #[test]
    fn cookies_are_read_by_name_and_set_strict() {
        assert_eq!(
            cookie("a=1; vt_session=abc; b=2", SESSION_COOKIE),
            Some("abc")
        );
        assert_eq!(cookie("a=1", SESSION_COOKIE), None);
        let set = session_cookie("abc", true);
        for part in ["HttpOnly", "SameSite=Strict", "Secure"] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Max-Age"), "the server times the session out");
        assert!(!session_cookie("abc", false).contains("Secure"));
        assert!(expired_cookie(false).contains("Max-Age=0"));
    }
}
