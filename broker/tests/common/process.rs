//! A `tern` process started from the built binary, for tests that kill or
//! signal it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `tern` binary.
pub struct TernProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl TernProcess {
    /// Starts `tern` on `data_dir` and `port` with extra `args` (which may
    /// replace the default `--log-level info`), and waits until it accepts
    /// connections.
    pub fn start(data_dir: &Path, port: u16, args: &[&str]) -> TernProcess {
        TernProcess::start_env(data_dir, port, args, &[])
    }

    /// [`start`](Self::start) with extra environment variables.
    pub fn start_env(
        data_dir: &Path,
        port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> TernProcess {
        let log = data_dir.with_extension(format!("{port}.log"));
        let log_file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--bind")
            .arg(addr.to_string())
            .arg("--ws-bind")
            .arg("127.0.0.1:0")
            .args(
                ["--log-level", "info"]
                    .iter()
                    .filter(|_| !args.contains(&"--log-level")),
            )
            // The HTTP endpoint's default port would be shared by every test.
            .args(
                ["--http-bind", ""]
                    .iter()
                    .filter(|_| !args.contains(&"--http-bind")),
            )
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn tern");
        let p = TernProcess {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            log,
        };
        p.wait_ready();
        p
    }

    fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tern did not start; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal (`HUP`, `TERM`, ...) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// SIGTERM; returns the exit status once it exits.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(30))
    }

    /// [`TernProcess::terminate`] for a process that may take up to `limit`
    /// to stop (a drain of many sessions).
    pub fn terminate_within(mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("tern did not stop on SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TernProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
