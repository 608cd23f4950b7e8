//! `tern-bench`: MQTT load generator. Runs one scenario against a broker and
//! prints a human summary (stderr) and one JSON line (stdout).
//!
//! Examples:
//!   tern-bench fan-in --addr 127.0.0.1:1883 --qos 1 --duration 10
//!   tern-bench pairs --pairs 1000 --rate 20000
//!   tern-bench connections --connections 100000 --broker-pid $(pidof tern)

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use broker::codec::{ProtocolVersion, QoS};
use chaos_tests::workload::{self, Scenario, Spec};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "tern-bench",
    about = "MQTT load generator: publishers and subscribers with loss, duplicate, order and latency accounting"
)]
struct Args {
    /// fan-in | fan-out | pairs | connections | persistent-queue | retained
    scenario: Scenario,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Where the subscribers of fan-in, fan-out and pairs connect (default
    /// --addr): another node of a cluster, to measure forwarding.
    #[arg(long)]
    sub_addr: Option<SocketAddr>,
    /// MQTT version: 3.1.1 or 5.
    #[arg(long = "mqtt", default_value = "3.1.1", value_parser = parse_version)]
    version: ProtocolVersion,
    /// QoS of publishes and subscriptions (default 0; 1 for persistent-queue
    /// and retained).
    #[arg(long, value_parser = parse_qos)]
    qos: Option<QoS>,
    /// Payload bytes (at least 20: the sequence/timestamp header).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Publishers (fan-in 100, fan-out 1, persistent-queue and retained 10).
    #[arg(long)]
    publishers: Option<usize>,
    /// Subscribers (fan-out 100, else 1).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Publisher/subscriber pairs (pairs scenario; default 1000).
    #[arg(long)]
    pairs: Option<usize>,
    /// Total messages per second over all publishers; default: as fast as possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Seconds to publish (default 10; 60 for persistent-queue and retained).
    #[arg(long)]
    duration: Option<f64>,
    /// Messages to publish over all publishers (default: unbounded, except
    /// 100,000 for persistent-queue and retained); the run stops at
    /// whichever of count and duration comes first.
    #[arg(long)]
    count: Option<u64>,
    /// Subscribers keep a persistent session (QoS 1/2 copies are stored).
    #[arg(long)]
    persistent: bool,
    /// Connections to open (connections scenario).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// 127.0.0.x source addresses to spread connections over (0: one per 20,000).
    #[arg(long, default_value_t = 0)]
    source_addrs: u32,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds the connections scenario keeps its connections open (at least 2).
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Keep Alive of the connections scenario's clients, seconds (0: none).
    /// They send nothing while held: hold them for less than 1.5 times it.
    #[arg(long, default_value_t = 60)]
    keep_alive: u16,
    /// Connections scenario: each connection subscribes to a topic of its
    /// own at QoS 1 (the RSS then includes a subscription per connection).
    #[arg(long)]
    subscribe: bool,
    /// Connections scenario with --subscribe: after the hold, publish one
    /// message to this many connections, one at a time, and report the
    /// latency of these first messages to idle connections.
    #[arg(long, default_value_t = 0)]
    wake_sample: usize,
    /// A Tern broker's HTTP address (host:port): after the wake sample,
    /// and before the connections close (closing wakes them too), read its
    /// tern_session_wake_seconds histogram into the report.
    #[arg(long)]
    broker_metrics: Option<String>,
    /// Seconds to wait for the last messages after publishing.
    #[arg(long)]
    drain_timeout: Option<f64>,
    /// Seconds between the subscribers' SUBACKs and the first publish (a
    /// cluster: other nodes learn the routes at their next raft message).
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// Broker process id, to report its CPU time and memory.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Free text copied into the report (e.g. the broker's name).
    #[arg(long, default_value = "")]
    label: String,
    /// Worker threads of the load generator (default: the CPUs it may use).
    #[arg(long)]
    threads: Option<usize>,
    /// Print only the JSON line.
    #[arg(long)]
    quiet: bool,
}

fn parse_version(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1.1" | "311" | "4" => Ok(ProtocolVersion::V311),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        _ => Err(format!("`{s}`: 3.1.1 or 5")),
    }
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| format!("`{s}`: 0, 1 or 2"))
}

fn spec(args: &Args) -> Spec {
    let mut spec = Spec::new(args.scenario, args.addr);
    spec.version = args.version;
    spec.sub_addr = args.sub_addr;
    if let Some(q) = args.qos {
        spec.qos = q;
    }
    spec.payload = args.payload;
    if let Some(n) = args.pairs {
        spec.publishers = n;
        spec.subscribers = n;
    }
    if let Some(n) = args.publishers {
        spec.publishers = n;
    }
    if let Some(n) = args.subscribers {
        spec.subscribers = n;
    }
    spec.rate = args.rate;
    spec.inflight = args.inflight;
    if let Some(d) = args.duration {
        spec.duration = Duration::from_secs_f64(d);
    }
    if args.count.is_some() {
        spec.count = args.count;
    }
    spec.persistent |= args.persistent;
    spec.connections = args.connections;
    spec.source_addrs = args.source_addrs;
    spec.connect_concurrency = args.connect_concurrency;
    spec.hold = Duration::from_secs_f64(args.hold);
    spec.keep_alive = args.keep_alive;
    spec.subscribe = args.subscribe;
    spec.wake_sample = args.wake_sample;
    spec.broker_metrics = args.broker_metrics.clone();
    spec.settle = Duration::from_secs_f64(args.settle);
    if let Some(d) = args.drain_timeout {
        spec.drain_timeout = Duration::from_secs_f64(d);
    }
    spec.broker_pid = args.broker_pid;
    spec.label = args.label.clone();
    spec
}

fn main() -> ExitCode {
    let args = Args::parse();
    let nofile = workload::sys::raise_nofile_limit();
    let spec = spec(&args);
    if spec.scenario == Scenario::Connections
        && spec.keep_alive > 0
        && spec.hold.as_secs_f64() >= 1.5 * f64::from(spec.keep_alive)
    {
        eprintln!(
            "tern-bench: --hold {} s: the broker closes connections silent for 1.5 x --keep-alive {} s; hold them for less or raise --keep-alive (0: none)",
            args.hold, spec.keep_alive
        );
        return ExitCode::from(2);
    }
    if spec.scenario == Scenario::Connections && nofile < spec.connections as u64 + 100 {
        eprintln!(
            "tern-bench: warning: open files limit is {nofile}, below {} connections (raise it with ulimit -Hn)",
            spec.connections
        );
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(workload::run(&spec));
    // Sockets of a big connections run close faster without waiting for
    // each task to notice.
    rt.shutdown_timeout(Duration::from_secs(5));
    if !args.quiet {
        eprint!("{}", report.summary());
    }
    println!("{}", report.to_json());
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
