//! A `tern` process started from the built binary, for tests that kill or
//! signal it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port, below the kernel's ephemeral range.
///
/// A port the kernel handed out for `:0` is released before `tern` binds
/// it, and every outgoing connection of the machine (the cluster's gRPC
/// clients, the tests' MQTT clients) takes its source port from that same
/// ephemeral range (32768-60999 on Linux): one of them could take the port
/// in between, or while a killed node is down before its restart on the same
/// port. Ports from 10000-32767 are only ever taken by an explicit bind.
/// Each test process starts at an offset of its own and walks a counter, so
/// tests running at the same time do not pick the same port either; a port
/// something else holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 32_768 - FIRST;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}-32767");
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
