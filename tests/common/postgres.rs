//! A real PostgreSQL server for tests, in a temporary directory on a free port.
//!
//! [`Postgres::start`] finds the server's binaries (`GRAPHGUARD_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/<version>/bin`, Debian's layout, else `pg_config --bindir`, else
//! `PATH`), runs `initdb` (superuser `postgres`, password [`PASSWORD`] over TCP, trust on the
//! Unix socket) and `postgres -D DIR -p PORT -k SOCKDIR -c listen_addresses=127.0.0.1
//! -c fsync=off`, and waits until `pg_isready` says it accepts connections. Without
//! PostgreSQL it panics with how to install it: these tests fail, they never skip.
//!
//! PostgreSQL refuses to run as root. Run as root (CI), the harness runs `initdb`, `postgres`
//! and `psql` as the `postgres` system user (which Debian's package creates) and gives it the
//! temporary directory; run as anyone else, as that user.
//!
//! The server is stopped (SIGINT, PostgreSQL's fast shutdown, then waited for) when the
//! [`Postgres`] is dropped, which happens on a panic too; the directory is removed after it.
//! A test process killed outright (SIGKILL) leaves its server running. [`Postgres::stop`],
//! [`Postgres::restart`] (same data directory and port), [`Postgres::freeze`] and
//! [`Postgres::thaw`] (SIGSTOP and SIGCONT to the server and its children: a database that
//! accepts connections and never answers) are there for fault tests. [`Postgres::with_tls`]
//! also makes a test CA and a server certificate (with `openssl`, which Debian's `postgresql`
//! package pulls in) and turns `ssl` on.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The superuser's password for TCP connections.
pub const PASSWORD: &str = "graphguard-test-pw";

/// How long a server may take to start or stop before the test fails.
const STARTUP: Duration = Duration::from_secs(60);

/// A running (or deliberately stopped) PostgreSQL server. See the module documentation.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The `postgres` user's uid and gid when this process is root.
    run_as: Option<(u32, u32)>,
    tls: bool,
    child: Option<Child>,
}

impl Postgres {
    /// A fresh server, plain TCP only.
    pub fn start() -> Postgres {
        Self::create(false)
    }

    /// A fresh server with `ssl=on`: the CA is [`Postgres::ca_file`], the server certificate
    /// names `localhost` only (not `127.0.0.1`), so host-name checks can be told from chain
    /// checks.
    pub fn with_tls() -> Postgres {
        Self::create(true)
    }

    fn create(tls: bool) -> Postgres {
        let bin = find_bin();
        let run_as = if is_root() {
            Some(postgres_user())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("graphguard-pg-")
            .tempdir()
            .unwrap();
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            run_as,
            tls,
            child: None,
        };
        fs::create_dir(pg.sockdir()).unwrap();
        fs::write(pg.dir.path().join("pwfile"), PASSWORD).unwrap();
        if tls {
            pg.make_certificates();
        }
        pg.give_to_server_user(pg.dir.path());
        pg.initdb();
        if tls {
            pg.enable_tls();
        }
        // A free port can be taken by another test between the probe and the bind: retry.
        for attempt in 1..=5 {
            pg.port = free_port();
            match pg.launch() {
                Ok(()) => return pg,
                Err(log) if attempt < 5 && log.contains("could not bind") => continue,
                Err(log) => panic!("PostgreSQL did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` as the superuser, with the password, TLS off.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// A URL for the `postgres` database (see [`Postgres::url_for`]).
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A URL with no `sslmode`: the caller appends `?sslmode=...`.
    pub fn base_url(&self, host: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@{host}:{}/postgres",
            self.port
        )
    }

    /// The test CA's certificate (servers made by [`Postgres::with_tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Run SQL with `psql` over the Unix socket; its unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut cmd = self.command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.sockdir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        let out = run(&mut cmd, "psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A new empty database.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
    }

    /// Stop the server (fast shutdown: clients are disconnected) and wait for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.thaw_pid(child.id());
        signal("INT", &child.id().to_string());
        let deadline = Instant::now() + STARTUP;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("PostgreSQL did not stop in {STARTUP:?}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Start the server again on the same data directory and port.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.launch() {
            panic!("PostgreSQL did not restart on port {}:\n{log}", self.port);
        }
    }

    /// Stop every server process (SIGSTOP to the postmaster, then to its children; each
    /// backend is its own process group, so a group signal would miss them): connections are
    /// accepted by the kernel and never answered.
    pub fn freeze(&self) {
        if let Some(child) = &self.child {
            signal("STOP", &child.id().to_string());
            for pid in children(child.id()) {
                signal("STOP", &pid.to_string());
            }
        }
    }

    /// Undo [`Postgres::freeze`].
    pub fn thaw(&self) {
        if let Some(child) = &self.child {
            self.thaw_pid(child.id());
        }
    }

    fn thaw_pid(&self, pid: u32) {
        for child in children(pid) {
            signal("CONT", &child.to_string());
        }
        signal("CONT", &pid.to_string());
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sockdir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for binary `name`, as the `postgres` user when we are root.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn give_to_server_user(&self, path: &Path) {
        let Some((uid, gid)) = self.run_as else {
            return;
        };
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        if path.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                self.give_to_server_user(&entry.unwrap().path());
            }
        }
    }

    fn initdb(&self) {
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(self.data()).args([
            "-N",
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--pwfile=pwfile",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(&mut cmd, "initdb");
    }

    /// Start `postgres` and wait until it accepts connections; the log on failure.
    fn launch(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .unwrap();
        let mut cmd = self.command("postgres");
        cmd.arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.sockdir())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=50", "-c", "log_min_messages=warning"])
            // Its own process group: a Ctrl-C meant for the test runner does not reach the
            // server before Drop stops it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = fs::read_to_string(self.log_file()).unwrap_or_default();
                return Err(format!("postgres exited with {status}; its log:\n{log}"));
            }
            if self.is_ready() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("not ready in {STARTUP:?}"));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn is_ready(&self) -> bool {
        let mut cmd = self.command("pg_isready");
        cmd.args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-t",
            "1",
        ]);
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    fn make_certificates(&self) {
        let d = self.dir.path();
        // Arguments without spaces, so a command line can be split on them.
        let openssl = |args: &str| {
            let mut cmd = Command::new("openssl");
            cmd.current_dir(d).args(args.split(' '));
            run(&mut cmd, "openssl (needed for the TLS tests)");
        };
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(&format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=graphguard-test-CA"
        ));
        openssl(&format!(
            "req {ec} -keyout server.key -out server.csr -subj /CN=localhost"
        ));
        fs::write(
            d.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 \
             -extfile server.ext -out server.crt",
        );
        // PostgreSQL refuses a key others can read.
        let mut perms = fs::metadata(d.join("server.key")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        fs::set_permissions(d.join("server.key"), perms).unwrap();
    }

    fn enable_tls(&self) {
        let d = self.dir.path().display();
        let conf = format!(
            "\nssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\n"
        );
        let path = self.data().join("postgresql.conf");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        fs::write(&path, text).unwrap();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Never panic while a test is already unwinding: that would abort and hide its message.
        if let Some(mut child) = self.child.take() {
            self.thaw_pid(child.id());
            signal("INT", &child.id().to_string());
            let deadline = Instant::now() + STARTUP;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's effective user.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The `postgres` system user's uid and gid, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                return (uid, gid);
            }
        }
    }
    panic!(
        "running as root, the PostgreSQL tests run the server as the `postgres` user, and there \
         is none: install Debian's `postgresql` package (apt-get install postgresql), which \
         creates it, or run the tests as a normal user"
    );
}

/// The directory holding `initdb` and `postgres`.
fn find_bin() -> PathBuf {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = std::env::var_os("GRAPHGUARD_PG_BIN").map(PathBuf::from) {
        assert!(
            has(&d),
            "GRAPHGUARD_PG_BIN={} has no initdb and postgres",
            d.display()
        );
        return d;
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return d;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has(&d) {
            return d;
        }
    }
    for d in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has(&d) {
            return d;
        }
    }
    panic!(
        "PostgreSQL is required by these tests and was not found (looked in \
         GRAPHGUARD_PG_BIN, /usr/lib/postgresql/*/bin, pg_config --bindir and PATH): install it \
         (Debian: apt-get install postgresql) or set GRAPHGUARD_PG_BIN to the directory holding \
         initdb and postgres"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({:?}): {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The processes whose parent is `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

/// `kill -SIG PID`.
fn signal(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), "--", target])
        .stderr(Stdio::null())
        .status();
}
