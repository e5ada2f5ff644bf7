//! Throw-away PostgreSQL and Redis servers for tests: started on a free
//! loopback port in a temporary directory, stopped (by their own pid) when
//! dropped. Where the program is missing, a test is skipped with a line
//! saying how to run it; under `CI=true` a missing program fails it.
//!
//! PostgreSQL refuses to run as root: as root, the data directory is given
//! to the `postgres` user (which Debian's package creates) and the server
//! runs as that user through `runuser`.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to start or stop.
const STARTUP: Duration = Duration::from_secs(30);

/// `program` on PATH, or in Debian's PostgreSQL directories.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = versions.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        versions.reverse();
        dirs.extend(versions);
    }
    dirs.into_iter()
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `program`, or `None` after saying the test is skipped; under `CI=true`
/// its absence fails the test.
pub fn required(program: &str, package: &str, test: &str) -> Option<PathBuf> {
    if let Some(found) = find_program(program) {
        return Some(found);
    }
    let hint = format!(
        "{test}: skipped: `{program}` not found; install it to run this test \
         (apt-get install {package})"
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{hint} — CI must have it (.ci/run installs it)");
    }
    eprintln!("{hint}");
    None
}

/// A port free on 127.0.0.1 a moment ago. A server that then finds it taken
/// fails to start, and is started again on another.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds 127.0.0.1:0");
    listener.local_addr().expect("bound").port()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of `user`, from `id`.
fn ids_of(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Runs `program` as the `postgres` user when we are root.
fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn give_to_server_user(path: &Path) {
    if !running_as_root() {
        return;
    }
    let (uid, gid) = ids_of("postgres").expect(
        "running as root, PostgreSQL needs the `postgres` user (apt-get install postgresql creates it)",
    );
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown the test directory");
}

/// Sends `signal` (a name `kill` knows) to `pid`.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A PostgreSQL server of its own: `initdb` into a temporary directory,
/// trust authentication for the user `isoswitch`, fsync off (the tests
/// kill switches, not the database machine).
pub struct PgServer {
    dir: tempfile::TempDir,
    postgres: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PgServer {
    /// `None` (skipped) without PostgreSQL's programs.
    pub fn start(test: &str) -> Option<PgServer> {
        let initdb = required("initdb", "postgresql", test)?;
        let postgres = required("postgres", "postgresql", test)?;
        let dir = tempfile::tempdir().expect("temp dir");
        give_to_server_user(dir.path());
        let data = dir.path().join("data");
        let out = as_server_user(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "isoswitch", "--auth=trust", "-N", "-E", "UTF8"])
            .output()
            .expect("runs initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            dir,
            postgres,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.run() {
                return Some(server);
            }
        }
        panic!("PostgreSQL did not start: {}", server.log());
    }

    pub fn url(&self) -> String {
        format!("postgresql://isoswitch@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server on `self.port`; false when it exited (port taken).
    fn run(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        give_to_server_user(&self.dir.path().join("server.log"));
        let child = as_server_user(&self.postgres)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starts postgres");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                self.child = None;
                return false;
            }
            if self.log().contains("ready to accept connections")
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("PostgreSQL not ready within {STARTUP:?}: {}", self.log());
    }

    /// The postmaster's pid, from its pid file (the child may be `runuser`).
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops the server (fast shutdown: sessions are cut, as in an outage).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        match self.postmaster_pid() {
            Some(pid) => signal(pid, "INT"),
            None => signal(child.id(), "INT"),
        }
        if !wait_exit(&mut child, STARTUP) {
            if let Some(pid) = self.postmaster_pid() {
                signal(pid, "KILL");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        assert!(self.run(), "PostgreSQL did not start again: {}", self.log());
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis server of its own, nothing saved to disk.
pub struct RedisServer {
    dir: tempfile::TempDir,
    program: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// `None` (skipped) without `redis-server`.
    pub fn start(test: &str) -> Option<RedisServer> {
        let program = required("redis-server", "redis-server", test)?;
        let mut server = RedisServer {
            dir: tempfile::tempdir().expect("temp dir"),
            program,
            port: 0,
            child: None,
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.run() {
                return Some(server);
            }
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) -> bool {
        let child = Command::new(&self.program)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if self
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                self.child = None;
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server not ready within {STARTUP:?}");
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        assert!(self.run(), "redis-server did not start again");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
