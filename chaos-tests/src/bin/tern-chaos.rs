//! `tern-chaos`: runs a Tern cluster through faults while a workload runs,
//! checks the history and writes a report. Needs root inside a private
//! network and mount namespace: start it through `chaos-tests/run.sh`.

use std::path::PathBuf;
use std::process::ExitCode;

use chaos_tests::chaos::{self, nemesis, Options};
use clap::Parser;

/// Fault-injection run against a real Tern cluster; the last line of
/// output is `N passed, N failed` over the checks.
#[derive(Parser, Debug)]
#[command(name = "tern-chaos")]
struct Args {
    /// The `tern` binary.
    #[arg(long, required_unless_present = "check")]
    tern: Option<PathBuf>,
    /// Every fault once, each held 5-7 s (the CI run).
    #[arg(long)]
    quick: bool,
    /// Faults to draw from: all, or groups kill, pause, partition, link,
    /// clock, disk, replace, or fault names, comma separated.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Seconds of faults and gaps for a run without --quick.
    #[arg(long, default_value_t = 300)]
    time: u64,
    /// Seed of the fault schedule and of the workload's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Publishers (even ones QoS 1, odd ones QoS 2).
    #[arg(long, default_value_t = 4)]
    publishers: u32,
    /// Messages per second of each publisher.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Persistent subscribers (3.1.1 and 5.0 in turn).
    #[arg(long, default_value_t = 4)]
    subscribers: u32,
    /// Members of the shared subscription.
    #[arg(long, default_value_t = 2)]
    shared: u32,
    /// Retained-message writers.
    #[arg(long, default_value_t = 2)]
    retained_writers: u32,
    /// Bound on the cluster's recovery after each heal, seconds.
    #[arg(long, default_value_t = 30)]
    recovery: u64,
    /// Directory of history.json and report.html.
    #[arg(long, default_value = "chaos-out")]
    out: PathBuf,
    /// Check a recorded history.json again instead of running (no root
    /// needed); --tern is then ignored.
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
}

/// Prints the verdicts and the summary line; the exit code.
fn conclude(verdicts: &[chaos::checker::Verdict]) -> ExitCode {
    let passed = verdicts.iter().filter(|v| v.passed).count();
    let failed = verdicts.len() - passed;
    for v in verdicts {
        println!(
            "{:<20} {:<6} {}",
            v.check,
            if v.passed { "ok" } else { "FAILED" },
            v.summary
        );
        for l in &v.listed {
            println!(
                "    {:.1} s: {} [faults around: {}]",
                l.t_ms as f64 / 1e3,
                l.what,
                l.faults.join("; ")
            );
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--check`: the events of a history.json, checked again.
fn recheck(path: &std::path::Path) -> anyhow::Result<Vec<chaos::checker::Verdict>> {
    #[derive(serde::Deserialize)]
    struct Recorded {
        events: Vec<chaos::history::Stamped>,
    }
    let recorded: Recorded = serde_json::from_slice(&std::fs::read(path)?)?;
    Ok(chaos::checker::check(&recorded.events))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check {
        return match recheck(path) {
            Ok(verdicts) => conclude(&verdicts),
            Err(e) => {
                eprintln!("cannot check {}: {e:#}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let nemesis = match nemesis::parse_kinds(&args.nemesis) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !(3..=9).contains(&args.nodes) {
        eprintln!("--nodes must be 3 to 9");
        return ExitCode::from(2);
    }
    let opts = Options {
        tern: args.tern.expect("clap requires --tern without --check"),
        nodes: args.nodes,
        seed: args.seed,
        quick: args.quick,
        time_secs: args.time,
        nemesis,
        publishers: args.publishers,
        rate: args.rate,
        subscribers: args.subscribers,
        shared: args.shared,
        retained_writers: args.retained_writers,
        recovery_secs: args.recovery,
        out: args.out,
    };
    println!("seed {} (rerun with --seed {})", opts.seed, opts.seed);
    match chaos::run(opts).await {
        Ok(outcome) => conclude(&outcome.verdicts),
        Err(e) => {
            eprintln!("run aborted: {e:#}");
            println!("0 passed, 1 failed");
            // 2: the suite could not run (1 means violations found)
            ExitCode::from(2)
        }
    }
}
