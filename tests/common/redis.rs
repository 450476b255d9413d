//! A real `redis-server` for tests: started on a free loopback port in a temporary directory,
//! with nothing saved to disk, stopped (killed) when dropped, panics included. It can be
//! stopped and started again on the same port, and frozen (SIGSTOP) to play a hung server.
//!
//! Without a `redis-server` on the machine the tests fail, saying so: they never skip.
//! `GRAPHGUARD_REDIS_SERVER` names another binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running (or stopped) redis-server owned by a test.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A server without a password.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server whose default user needs `password`.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(&["--requirepass", password])
    }

    /// A server with extra command-line settings.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut server = RedisServer {
            port,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, with `userinfo` (`user:pass@` or `:pass@`) if given.
    pub fn url(&self, userinfo: &str) -> String {
        format!("redis://{userinfo}127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: a crash, not a shutdown) and wait for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server (again) on the same port and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let binary = binary();
        let child = Command::new(&binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--logfile", "redis.log"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}. The Redis tests need a real redis-server \
                     (Debian: apt-get install redis-server; or set GRAPHGUARD_REDIS_SERVER)",
                    binary.display()
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Freeze the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Let a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Wait until the server answers PING (NOAUTH counts: it is up, it wants a password).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                panic!("redis-server exited with {status}:\n{}", self.log());
            }
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server did not answer PING within {START_TIMEOUT:?}:\n{}",
            self.log()
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL ends a frozen server too.
        self.stop();
    }
}

fn binary() -> PathBuf {
    std::env::var_os("GRAPHGUARD_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"),
        Err(_) => false,
    }
}
