//! The shipped HAProxy config (deploy/haproxy.cfg) is one HAProxy accepts:
//! `haproxy -c -f` parses and checks it without starting anything.
//!
//! Skipped, saying so, without HAProxy (`apt-get install haproxy`); under
//! `CI=true` that is a failure.

#[path = "common/servers.rs"]
mod servers;

use std::path::Path;
use std::process::Command;

#[test]
fn the_shipped_haproxy_config_is_valid() {
    let Some(haproxy) =
        servers::required("haproxy", "haproxy", "the_shipped_haproxy_config_is_valid")
    else {
        return;
    };
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy.cfg");
    let out = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&config)
        .output()
        .expect("haproxy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "haproxy -c refused {}: {text}",
        config.display()
    );
    assert!(text.contains("Configuration file is valid"), "{text}");
    // Health checks go to each instance's /readyz on its metrics port.
    let cfg = std::fs::read_to_string(&config).expect("config readable");
    assert!(cfg.contains("option httpchk GET /readyz"), "{cfg}");
    assert_eq!(cfg.matches(" check port ").count(), 2, "{cfg}");
}
