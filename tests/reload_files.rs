//! Reloads compare what the files a config reads contain, not only their
//! paths: an issuer's spec file edited in place, or its CA replaced at the same
//! path, rebuilds the issuer (its links reconnect with the new material); a
//! hotlist rewritten in place declines its new entries; files rewritten with
//! the same bytes keep the running issuer and its connections; a file that
//! cannot be read refuses the reload and the old config keeps serving.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{
    answer, code, parse_config, purchase, Act, FakeIssuer, Script, Seen, TestSwitch, TlsFiles,
};
use isoswitch::config::ListenerTls;
use isoswitch::iso8583::Message;
use isoswitch::journal::Stores;
use tokio::net::TcpListener;

/// A card the routes send to "bank" (Luhn-valid).
const CARD: &str = "4111111111111111";

/// Answers every request 00 and says nothing to anything else.
fn approve_everything() -> Script {
    Arc::new(|m: &Message| match m.mti().response() {
        Some(_) => Act::Answer(vec![answer(m, "00")]),
        None => Act::Hold,
    })
}

/// A path as a TOML string.
fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// One POS listener, issuer "bank" at `endpoint` with the given extra keys
/// (`spec = …`, `tls = …`), a route for cards starting 4, and `rest` after.
fn config(endpoint: &str, issuer_keys: &str, rest: &str) -> String {
    format!(
        r#"
[[listener]]
name = "pos"
bind = "127.0.0.1:0"

[[issuer]]
name = "bank"
endpoints = [{endpoint}]
timeout_ms = 2000
echo_interval_s = 0
sign_on = false
{issuer_keys}

[[route]]
name = "visa"
bins = ["4"]
issuer = "bank"
{rest}
"#
    )
}

/// The issuer's `tls` key trusting the CA in `ca`, checking the name "localhost".
fn tls_key(ca: &Path) -> String {
    format!(
        "tls = {{ ca = {}, server_name = \"localhost\" }}",
        toml_path(ca)
    )
}

/// A fake issuer speaking TLS with the server certificate of `pki`.
async fn tls_fake(pki: &TlsFiles) -> FakeIssuer {
    let acceptor = isoswitch::tls::acceptor(&ListenerTls {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: None,
    })
    .expect("server TLS");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    FakeIssuer::serve(listener, approve_everything(), Some(acceptor))
}

/// The shipped iso87ascii spec as text, to write as a spec file.
fn iso87ascii() -> &'static str {
    isoswitch::specs::BUILTIN
        .iter()
        .find(|(name, _)| *name == "iso87ascii")
        .map(|(_, text)| *text)
        .expect("iso87ascii is shipped")
}

/// A spec file in `dir` holding `text`.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("test file written");
    path
}

async fn reload(switch: &TestSwitch, toml: &str) -> u64 {
    switch
        .switch
        .reload(parse_config(toml))
        .await
        .expect("valid reload")
}

async fn pay(switch: &TestSwitch) -> String {
    let mut terminal = switch.terminal("pos").await;
    code(&terminal.exchange(&purchase(CARD, 1_000)).await).to_owned()
}

#[tokio::test]
async fn an_issuer_spec_file_edited_in_place_is_used_after_reload() {
    let mut fake = FakeIssuer::start(approve_everything()).await;
    let pki = TlsFiles::generate(); // only for its scratch directory
    let spec = write(&pki.dir, "issuer-spec.toml", iso87ascii());
    let toml = config(
        &fake.endpoint(),
        &format!("spec = {}", toml_path(&spec)),
        "",
    );
    let switch = TestSwitch::start(&toml).await;
    assert_eq!(pay(&switch).await, "00");
    assert_eq!(
        fake.next_of_class(2).await.0.get_str(4),
        Some("000000001000")
    );

    // Field 4 shrinks to 10 digits: a 12-digit amount no longer fits the issuer.
    let amount_line = "4 = { name = \"Amount, transaction\", max = 12, class = \"n\" }";
    assert!(
        iso87ascii().contains(amount_line),
        "the spec still has that line"
    );
    let shorter = iso87ascii().replace(amount_line, &amount_line.replace("12", "10"));
    std::fs::write(&spec, shorter).expect("spec rewritten");
    assert_eq!(reload(&switch, &toml).await, 2);

    assert_eq!(
        pay(&switch).await,
        "96",
        "the new spec cannot carry the amount, so nothing is forwarded"
    );
}

#[tokio::test]
async fn a_ca_replaced_at_the_same_path_reconnects_with_the_new_ca() {
    let old = TlsFiles::generate();
    let new = TlsFiles::generate();
    // The issuer host already presents a certificate of the new CA.
    let fake = tls_fake(&new).await;
    let ca = write(
        &old.dir,
        "issuer-ca.pem",
        &std::fs::read_to_string(&old.ca).expect("old CA"),
    );
    let toml = config(&fake.endpoint(), &tls_key(&ca), "");
    let switch = TestSwitch::start_with_issuers_down(&toml, Stores::in_memory()).await;
    assert_eq!(
        pay(&switch).await,
        "91",
        "the old CA does not trust the issuer"
    );

    std::fs::copy(&new.ca, &ca).expect("CA replaced in place");
    assert_eq!(reload(&switch, &toml).await, 2);
    switch.wait_for_issuers().await;
    assert_eq!(
        pay(&switch).await,
        "00",
        "the link verified with the new CA"
    );
}

#[tokio::test]
async fn files_rewritten_with_the_same_bytes_keep_the_issuer_and_its_connection() {
    let pki = TlsFiles::generate();
    let mut fake = tls_fake(&pki).await;
    let spec = write(&pki.dir, "issuer-spec.toml", iso87ascii());
    let keys = format!("spec = {}\n{}", toml_path(&spec), tls_key(&pki.ca));
    let toml = config(&fake.endpoint(), &keys, "");
    let switch = TestSwitch::start(&toml).await;
    assert_eq!(fake.next_connection().await, 0);

    write(&pki.dir, "issuer-spec.toml", iso87ascii());
    let ca_text = std::fs::read(&pki.ca).expect("CA");
    std::fs::write(&pki.ca, ca_text).expect("CA rewritten");
    assert_eq!(reload(&switch, &toml).await, 2);

    assert_eq!(pay(&switch).await, "00");
    // A rebuilt issuer would have connected before the reload returned.
    match fake.next().await {
        Seen::Message { connection, .. } => assert_eq!(connection, 0, "the first connection"),
        Seen::Connected(n) => {
            panic!("the issuer reconnected (connection {n}) over unchanged files")
        }
    }
}

#[tokio::test]
async fn a_hotlist_changed_at_the_same_path_declines_its_new_entries_after_reload() {
    let fake = FakeIssuer::start(approve_everything()).await;
    let pki = TlsFiles::generate(); // only for its scratch directory
    let hotlist = write(&pki.dir, "hotlist.txt", "400000 restricted\n");
    let rule = format!(
        "[[risk.rule]]\nname = \"hot\"\nkind = \"hotlist\"\nfile = {}\n",
        toml_path(&hotlist)
    );
    let toml = config(&fake.endpoint(), "", &rule);
    let switch = TestSwitch::start(&toml).await;
    assert_eq!(pay(&switch).await, "00");

    write(&pki.dir, "hotlist.txt", &format!("{CARD} stolen\n"));
    assert_eq!(reload(&switch, &toml).await, 2);
    assert_eq!(pay(&switch).await, "43");
}

#[tokio::test]
async fn an_unreadable_file_refuses_the_reload_and_the_old_issuer_keeps_serving() {
    let pki = TlsFiles::generate();
    let fake = tls_fake(&pki).await;
    let ca = write(
        &pki.dir,
        "issuer-ca.pem",
        &std::fs::read_to_string(&pki.ca).expect("CA"),
    );
    let toml = config(&fake.endpoint(), &tls_key(&ca), "");
    let switch = TestSwitch::start(&toml).await;

    std::fs::remove_file(&ca).expect("CA removed");
    let error = switch
        .switch
        .reload(parse_config(&toml))
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("issuer \"bank\"") && error.contains("issuer-ca.pem"),
        "{error}"
    );
    assert_eq!(switch.switch.snapshot().generation, 1);
    assert_eq!(pay(&switch).await, "00");
}
