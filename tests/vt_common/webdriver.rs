//! A W3C WebDriver client just big enough for the virtual terminal's browser
//! tests, over the tests' HTTP client: start Debian's chromedriver on a free
//! port, open a headless chromium session, navigate, find, type, click, read
//! text, run a script and take screenshots. Written here rather than taken
//! from fantoccini: these ten endpoints are all the tests need, and
//! fantoccini would add its HTTP client stack (hyper-util, a TLS connector,
//! cookie and friends) to every test build on a shared two-core machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::http::request;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian puts the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser tests can run here. Without chromium they are
/// skipped (saying so and how to install it), except under `CI=true`,
/// where a missing browser fails.
pub fn browser_available() -> bool {
    let found = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and {CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install chromium chromium-driver");
        }
        eprintln!(
            "skipped: the browser tests need {CHROMIUM} and {CHROMEDRIVER}; \
             run `apt-get install chromium chromium-driver`, then `cargo test --test vt_browser`"
        );
    }
    found
}

/// A running chromedriver and one browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    pub screenshots: PathBuf,
}

/// A free loopback port: bound, read and released (chromedriver binds it
/// itself; a lost race shows as a driver that never answers, and is retried).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    pub async fn start() -> Browser {
        for _ in 0..3 {
            if let Some(browser) = Browser::try_start().await {
                return browser;
            }
        }
        panic!("chromedriver did not start (3 tries)");
    }

    async fn try_start() -> Option<Browser> {
        let port = free_port();
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let status = request(addr, "GET", "/status", &[], b"").await;
                if status.json()["value"]["ready"] == true {
                    break;
                }
            }
            if tokio::time::Instant::now() > deadline || driver.try_wait().ok().flatten().is_some()
            {
                let _ = driver.kill();
                let _ = driver.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--force-device-scale-factor=1"]
            }
        }}});
        let created = post(addr, "/session", &capabilities).await;
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/vt-screenshots");
        std::fs::create_dir_all(&screenshots).expect("screenshot dir");
        Some(Browser {
            driver,
            addr,
            session,
            screenshots,
        })
    }

    fn path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        post(self.addr, &self.path("/url"), &json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        let reply = get(self.addr, &self.path("/url")).await;
        reply["value"].as_str().unwrap_or("").to_owned()
    }

    /// The element `css` selects, failing the test if there is none.
    pub async fn find(&self, css: &str) -> String {
        self.try_find(css)
            .await
            .unwrap_or_else(|| panic!("no element {css:?} on {}", self.url_for_errors()))
    }

    fn url_for_errors(&self) -> String {
        format!("session {}", self.session)
    }

    pub async fn try_find(&self, css: &str) -> Option<String> {
        let reply = post(
            self.addr,
            &self.path("/element"),
            &json!({ "using": "css selector", "value": css }),
        )
        .await;
        if let Some(element) = reply["value"][ELEMENT].as_str() {
            return Some(element.to_owned());
        }
        let error = reply["value"]["error"].as_str().unwrap_or("");
        assert_eq!(error, "no such element", "finding {css:?}: {reply}");
        None
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        post(
            self.addr,
            &self.path(&format!("/element/{element}/clear")),
            &json!({}),
        )
        .await;
        post(
            self.addr,
            &self.path(&format!("/element/{element}/value")),
            &json!({ "text": text }),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        post(
            self.addr,
            &self.path(&format!("/element/{element}/click")),
            &json!({}),
        )
        .await;
    }

    /// Clicks `css` and waits (up to 10 s) until another document has loaded
    /// in place of this one (a form posted to the same URL looks the same).
    pub async fn click_to_new_page(&self, css: &str) {
        self.execute_async("document.body.dataset.stale = '1'; arguments[0]();")
            .await;
        self.click(css).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let fresh = self
                .execute_async(
                    "arguments[0](document.readyState === 'complete' && document.body && !document.body.dataset.stale);",
                )
                .await;
            if fresh == Value::Bool(true) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no new page after clicking {css}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let reply = get(self.addr, &self.path(&format!("/element/{element}/text"))).await;
        reply["value"].as_str().unwrap_or("").to_owned()
    }

    pub async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css).await;
        let reply = get(
            self.addr,
            &self.path(&format!("/element/{element}/attribute/{name}")),
        )
        .await;
        reply["value"].as_str().map(str::to_owned)
    }

    /// Runs `script` (an async function body that ends by calling
    /// `arguments[arguments.length - 1](result)`; with no arguments given,
    /// that is `arguments[0]`) and returns its result.
    pub async fn execute_async(&self, script: &str) -> Value {
        let reply = post(
            self.addr,
            &self.path("/execute/async"),
            &json!({ "script": script, "args": [] }),
        )
        .await;
        reply["value"].clone()
    }

    /// Saves a PNG of the page as `target/vt-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let reply = get(self.addr, &self.path("/screenshot")).await;
        let encoded = reply["value"].as_str().expect("base64 PNG");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, base64_decode(encoded)).expect("screenshot written");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the driver ends its browser.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    let reply = request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    reply.json()
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    request(addr, "GET", path, &[], b"").await.json()
}

/// Standard base64 (the screenshot's encoding).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
