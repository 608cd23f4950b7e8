//! A PostgreSQL 15 server of the test's own: `initdb` in a temp directory,
//! `pg_ctl` to start and stop it on a free loopback port. As root it runs
//! as the `postgres` user (the server refuses root). `scripts/test.sh`
//! installs Debian's `postgresql-15`; `TERN_PG_BIN` names another bin
//! directory.
//!
//! Lifecycle: [`PgServer::start`] (initdb + start), then any number of
//! [`PgServer::stop`] / [`PgServer::start_again`] on the same port and data;
//! dropped = stopped and deleted.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::process::free_port;

/// The password of the `postgres` user over TCP (scram-sha-256).
pub const PASSWORD: &str = "tern-test-pw";

/// A running PostgreSQL server.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    running: bool,
    dir: tempfile::TempDir,
}

/// Whether the test runs as root (`/proc/self` belongs to the process's
/// effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl PgServer {
    /// Creates a cluster and starts it; panics with the tool's output if
    /// PostgreSQL is missing or does not start.
    pub fn start() -> PgServer {
        let bin = std::env::var_os("TERN_PG_BIN").map_or_else(
            || PathBuf::from("/usr/lib/postgresql/15/bin"),
            PathBuf::from,
        );
        assert!(
            bin.join("postgres").exists(),
            "no PostgreSQL server in {} (scripts/test.sh installs postgresql-15; TERN_PG_BIN names another bin directory)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        let mut server = PgServer {
            port: free_port(),
            bin,
            data,
            running: false,
            dir,
        };
        server.pg(
            "initdb",
            &[
                "-D".as_ref(),
                server.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        server.start_again();
        server
    }

    /// Starts the server again after [`stop`](Self::stop), same port and data.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.pg(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        );
        self.running = true;
    }

    /// Stops the server (fast shutdown: sessions are closed at once).
    pub fn stop(&mut self) {
        self.pg(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        self.running = false;
    }

    /// The URL routes use (no password: it goes in the route's `password`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A client for the test's own setup and checks.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!("{} password={PASSWORD}", self.conninfo()),
            tokio_postgres::NoTls,
        )
        .await
        .expect("test connection to PostgreSQL");
        tokio::spawn(async move {
            // Ends when the client is dropped or the server stops.
            let _ = connection.await;
        });
        client
    }

    fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Runs a PostgreSQL tool (as `postgres` when root) and checks it
    /// succeeded.
    fn pg(&self, tool: &str, args: &[&std::ffi::OsStr]) {
        run(self.command(tool).args(args));
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        command.current_dir(self.dir.path());
        command
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// A PostgreSQL route named `name` for `topic` into `server` running
/// `query`, with the quick retries of `hub::rest_route` (backoff 20 to
/// 200 ms, 1000 attempts); then `extra` keys (JSON) on top.
pub fn pg_route(
    name: &str,
    topic: &str,
    server: &PgServer,
    query: &str,
    extra: serde_json::Value,
) -> broker::hub::config::RouteConfig {
    let mut value = serde_json::json!({
        "name": name,
        "topic": topic,
        "type": "postgres",
        "url": server.url(),
        "password": PASSWORD,
        "query": query,
        "backoff_initial_ms": 20,
        "backoff_max_ms": 200,
        "max_attempts": 1000,
    });
    if let (Some(v), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        v.extend(extra);
    }
    broker::hub::config::RouteConfig::from_json(&value)
        .unwrap_or_else(|e| panic!("route definition: {e}"))
}
