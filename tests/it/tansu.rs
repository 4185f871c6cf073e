//! A tansu broker process owned by one test: its own port and sqlite file, so it can be killed
//! and restarted (storage kept) without disturbing any other test; optionally with SASL/SCRAM
//! authentication required ([`Tansu::authenticated`]).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker process owned by one test: started, killed and restarted on the same port
/// with the same sqlite file; killed on drop.
pub struct Tansu {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Whether clients must authenticate (`--authentication`).
    authentication: bool,
    /// Bootstrap address.
    pub addr: String,
}

/// A SCRAM user to create on an authenticated broker.
pub struct User<'a> {
    pub name: &'a str,
    pub password: &'a str,
    /// `scram512` or `scram256`.
    pub mechanism: &'a str,
}

/// The tansu binary `scripts/test.sh` installs and caches. Fails, never skips, when missing.
fn tansu_binary() -> PathBuf {
    let cache = match std::env::var_os("DRIFTD_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/driftd"),
    };
    let bin = cache.join("tansu-0.6.0/bin/tansu");
    assert!(
        bin.is_file(),
        "the tansu broker binary is missing at {}: these tests start and stop their own \
         tansu. Run `scripts/test.sh` once, which installs it there (cached afterwards).",
        bin.display()
    );
    bin
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Tansu {
    /// A broker address with nothing listening on it yet.
    pub fn reserve() -> Tansu {
        // Fail at once, not when the test first starts the broker.
        tansu_binary();
        let port = free_port();
        Tansu {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            authentication: false,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// A running broker that requires SASL/SCRAM, with `users`. tansu stores users with its
    /// topics and takes them only from a broker that does not require authentication yet: the
    /// users are created first, then the broker is restarted with `--authentication`.
    pub fn authenticated(users: &[User<'_>]) -> Tansu {
        let mut t = Tansu::started();
        for u in users {
            let out = Command::new(tansu_binary())
                .args(["user", "create", u.name, u.password])
                .args(["--mechanism", u.mechanism])
                .args(["--broker", &format!("tcp://{}", t.addr)])
                .stdin(Stdio::null())
                .output()
                .expect("run tansu user create");
            assert!(
                out.status.success(),
                "tansu user create {}: {}{}",
                u.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        t.kill();
        t.authentication = true;
        t.start();
        t
    }

    /// A running broker.
    pub fn started() -> Tansu {
        let mut t = Tansu::reserve();
        t.start();
        t
    }

    /// Starts the process and waits until it says it is ready (it accepts connections, and
    /// resets them, a moment before that).
    pub fn start(&mut self) {
        let ready_before = self.log().matches("ready in").count();
        assert!(self.child.is_none(), "tansu already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        let url = format!("tcp://{}", self.addr);
        let child = Command::new(tansu_binary())
            .current_dir(self.dir.path())
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(self.authentication.then_some("--authentication"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let start = Instant::now();
        while self.log().matches("ready in").count() == ready_before
            || TcpStream::connect_timeout(
                &([127, 0, 0, 1], self.port).into(),
                Duration::from_millis(200),
            )
            .is_err()
        {
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && start.elapsed() < Duration::from_secs(30),
                "tansu did not get ready on {} ({exited:?}); its log:\n{}",
                self.addr,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL: no goodbye to the clients) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
