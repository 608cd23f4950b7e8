//! The `tern` binary: one MQTT broker node.

use std::process::ExitCode;

use std::io::{BufRead, IsTerminal};

use broker::auth::password::{edit_file, PasswdAction};
use broker::config::{Cli, ClusterAction, Command, PasswdArgs};
use clap::Parser;

/// mimalloc rather than the system allocator: with it an idle connection
/// costs 2,343 instead of 2,568 B of RSS, and the broker spends 18% less CPU
/// per QoS 1 message (`compare.sh --baseline`, BENCHMARKS.md). Through
/// `alloc_purge::Allocator`, which keeps what idle connections hold in a
/// heap of its own (`alloc_purge::long_lived`). Built without transparent
/// huge pages (the workspace's `no_thp` feature): see Cargo.toml.
/// The `system-allocator` feature builds without it, for heap profilers
/// that hook malloc (heaptrack, valgrind's massif).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: alloc_purge::Allocator = alloc_purge::Allocator;

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// Runs a `tern cluster ...` command against a node's cluster endpoint.
fn cluster_command(action: ClusterAction) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let timeout = std::time::Duration::from_secs(5);
    match action {
        ClusterAction::Status { address, json } => {
            match runtime.block_on(cluster::admin::remote_status(&address, timeout)) {
                Ok(status) if json => {
                    println!("{}", broker::http::admin::status_json(&status));
                    ExitCode::SUCCESS
                }
                Ok(status) => {
                    print!("{}", status_text(&status));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tern: cannot get the cluster status from {address}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        ClusterAction::Remove { address, id } => {
            match runtime.block_on(cluster::admin::remote_leave(&address, id, timeout)) {
                Ok(()) => {
                    println!("node {id} removed");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tern: cannot remove node {id} through {address}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Reads the new password: twice without echo from a terminal, else one line
/// of standard input.
fn read_password() -> Result<Vec<u8>, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Reenter password: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("passwords do not match".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    Ok(password.into_bytes())
}

/// `tern scram-user USER`: prints the SCRAM-SHA-256 credential line.
fn scram_user(user: &str) -> ExitCode {
    if user.is_empty() || user.contains(':') {
        eprintln!("tern scram-user: the user name must be non-empty and free of `:`");
        return ExitCode::from(2);
    }
    match read_password() {
        Ok(password) => match String::from_utf8(password) {
            Ok(password) => {
                println!(
                    "{}",
                    broker::enhanced_auth::ScramCredential::new(&password).to_line(user)
                );
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("tern scram-user: the password is not UTF-8");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("tern scram-user: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tern passwd [-c] [-D] FILE USER`.
fn passwd(args: &PasswdArgs) -> ExitCode {
    let action = if args.delete {
        Ok(PasswdAction::Delete)
    } else {
        read_password().map(PasswdAction::Set)
    };
    let edited = action
        .and_then(|a| edit_file(&args.file, &args.user, a, args.create).map_err(|e| e.to_string()));
    match edited {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern passwd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status_text(s: &cluster::admin::RemoteStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let leader = s.leader.map_or("none".to_string(), |l| l.to_string());
    let _ = writeln!(
        out,
        "node {} ({}), leader {leader}, term {}, commit {}, applied {}, ready {}",
        s.node_id, s.role, s.term, s.commit_index, s.applied_index, s.ready
    );
    let _ = writeln!(
        out,
        "{:<6} {:<8} {:<28} {:<28} health",
        "id", "role", "cluster address", "mqtt address"
    );
    for m in &s.members {
        let role = if Some(m.id) == s.leader {
            "leader"
        } else if s.voters.contains(&m.id) {
            "voter"
        } else {
            "learner"
        };
        let health = if m.id == s.node_id {
            "self".to_string()
        } else {
            match s
                .peers
                .iter()
                .find(|p| p.id == m.id)
                .and_then(|p| p.last_contact)
            {
                Some(t) if t < std::time::Duration::from_secs(3) => {
                    format!("ok ({} ms ago)", t.as_millis())
                }
                Some(t) => format!("unreachable ({} s ago)", t.as_secs()),
                None => "unreachable (never)".into(),
            }
        };
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<28} {:<28} {health}",
            m.id, role, m.address, m.mqtt_address
        );
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Passwd(args)) => return passwd(&args),
        Some(Command::ScramUser { user }) => return scram_user(&user),
        Some(Command::Cluster { action }) => return cluster_command(action),
        Some(ref admin) => {
            if let Some(code) = broker::http::client::run(admin) {
                return code;
            }
        }
        None => {}
    }
    let config = match cli.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match broker::telemetry::init(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tern: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %config.data_dir.display(), "starting tern");
    // Every connection is a descriptor: the default soft limit (often 1024)
    // would refuse clients long before memory runs out.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    let result =
        actix_rt::System::new().block_on(broker::server::run(config, shutdown_signal(), |_| {}));
    // after the broker stopped (sessions and their spans ended), outside
    // any runtime: the exporter sends what it still holds
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("tern: {e:#}");
            ExitCode::FAILURE
        }
    }
}
