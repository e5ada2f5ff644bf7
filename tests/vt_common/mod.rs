//! What the virtual terminal's tests share: the shipped default config's
//! switch (in-process simulator, the virtual terminal with its demo
//! supervisor and a clerk who is a plain operator) on 127.0.0.1:0, journaling
//! to SQLite in a temporary directory, and an HTTP client.

#![allow(dead_code)]

pub mod http;
pub mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use isoswitch::config::Config;
use isoswitch::journal::{DataKey, SqliteJournal, SqliteOptions, Stores};
use isoswitch::simulator::Simulator;
use isoswitch::switch::Switch;
use isoswitch::upstream::SafSettings;
use isoswitch::vt::auth::hash_password;
use isoswitch::vt::{BoundVt, VtState, VtStores};
use isoswitch::vt_config::{OperatorConfig, Role};
use tokio_util::sync::CancellationToken;

pub const DEMO: (&str, &str) = ("demo", "demo-password");
pub const CLERK: (&str, &str) = ("clerk", "clerk-password");
/// A card the simulator knows (balance 1000.00 USD).
pub const VISA: &str = "4111111111111111";
/// The simulator declines it with 05.
pub const DECLINED: &str = "4000000000000002";
/// On the test hotlist as lost (41).
pub const HOTLISTED: &str = "4000000000000010";
pub const UNIONPAY: &str = "6212345678901232";

/// A running switch with its virtual terminal; stopped when dropped.
pub struct TestVt {
    pub addr: SocketAddr,
    /// The virtual terminal's own state: recurring charges run through it.
    pub state: Arc<VtState>,
    pub switch: Arc<Switch>,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    shutdown: CancellationToken,
}

impl Drop for TestVt {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The shipped default config, every address on port 0, with a hotlist.
pub fn config(dir: &std::path::Path) -> Config {
    let hotlist = dir.join("hotlist.txt");
    std::fs::write(&hotlist, format!("{HOTLISTED} lost\n")).expect("hotlist written");
    let text = isoswitch::config::DEFAULT_TOML
        .replace("\"127.0.0.1:8583\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9583\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"")
        .replace("\"127.0.0.1:9100\"", "\"127.0.0.1:0\"")
        + &format!(
            "\n[[risk.rule]]\nname = \"hotlist\"\nkind = \"hotlist\"\nfile = {:?}\n",
            hotlist.display().to_string()
        );
    let mut config = Config::from_toml_str(&text, "test config").expect("test config is valid");
    let vt = config
        .virtual_terminal
        .as_mut()
        .expect("the default has a virtual terminal");
    vt.operators.push(OperatorConfig {
        username: CLERK.0.into(),
        password_hash: hash_password(CLERK.1).expect("hash"),
        merchant: "DEMOMERCHANT001".into(),
        terminal: "VT000001".into(),
        role: Role::Operator,
    });
    config
}

impl TestVt {
    pub async fn start() -> TestVt {
        let dir = tempfile::tempdir().expect("temp dir");
        TestVt::start_in(dir).await
    }

    /// Starts on the journal in `dir` (a second start plays a restart).
    pub async fn start_in(dir: tempfile::TempDir) -> TestVt {
        let config = config(dir.path());
        let db = dir.path().join("journal.db");
        let key = DataKey::from_bytes([7u8; 32]);
        let journal = Arc::new(SqliteJournal::open(SqliteOptions::new(&db, key)).expect("journal"));
        let stores = Stores::new(journal.clone(), true);
        let vt_stores = VtStores::sqlite(journal);
        let shutdown = CancellationToken::new();
        let vt_config = config.virtual_terminal.clone().expect("virtual terminal");
        let switch = Switch::start_with(config, stores, SafSettings::default(), shutdown.clone())
            .expect("switch starts");
        let bound = BoundVt::bind(&vt_config, switch.clone(), vt_stores)
            .await
            .expect("virtual terminal binds");
        let addr = bound.local_addr().expect("bound address");
        let state = bound.state();
        tokio::spawn(bound.run(shutdown.clone()));
        TestVt {
            addr,
            state,
            switch,
            dir,
            db,
            shutdown,
        }
    }

    pub fn simulator(&self) -> &Arc<Simulator> {
        self.switch
            .simulator()
            .expect("the default runs the simulator in process")
    }

    /// Approvals the simulator gave.
    pub fn approvals(&self) -> u64 {
        self.simulator()
            .stats()
            .responses
            .get("00")
            .copied()
            .unwrap_or(0)
    }

    /// Stops the switch and hands its directory back, for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.switch.stop_issuers().await;
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }
}

/// A sale's JSON body.
pub fn sale(card: &str, amount: u64) -> String {
    serde_json::json!({
        "type": "sale", "card_number": card, "expiry": "12/30", "cvv": "123",
        "amount": amount, "currency": "USD", "reason": "telephone-order"
    })
    .to_string()
}
