//! tern-bench's workloads keep working: tiny runs against a broker in this
//! process, checked for loss, duplicates and order. Not a benchmark: no
//! timing is asserted.

use std::time::Duration;

use broker::codec::{ProtocolVersion, QoS};
use broker::config::{Config, ListenerConfig};
use chaos_tests::workload::{self, Scenario, Spec};

fn start_broker(dir: &std::path::Path) -> broker::server::ServerHandle {
    let config = Config {
        data_dir: dir.to_owned(),
        workers: 2,
        log_level: "warn".into(),
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        }],
        // off: the default port would be shared by the tests
        http: broker::config::HttpConfig {
            bind: String::new(),
            admin_token: None,
        },
        ..Default::default()
    };
    broker::server::start(config).expect("broker starts")
}

fn small(spec: &mut Spec) {
    spec.duration = Duration::from_secs(20);
    spec.drain_timeout = Duration::from_secs(10);
    spec.quiet = Duration::from_secs(5);
}

fn run(spec: &Spec) -> workload::Report {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(workload::run(spec))
}

fn assert_exact(report: &workload::Report, messages: u64) {
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.sent, messages, "{}", report.summary());
    assert_eq!(report.unique, report.expected, "{}", report.summary());
    assert_eq!(report.lost, 0);
    assert_eq!(report.duplicates, 0);
    if report.scenario != "retained" {
        // Retained messages of distinct topics come in the index's order,
        // not in publishing order: nothing promises otherwise.
        assert_eq!(report.out_of_order, 0);
    }
    assert!(report.ok);
    assert!(report.latency_us.is_some());
    // The JSON line parses back and names the scenario.
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert_eq!(json["scenario"], report.scenario.as_str());
}

#[test]
fn fan_in_of_200_qos1_messages_arrives_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path());
    let mut spec = Spec::new(Scenario::FanIn, broker.mqtt_addr());
    small(&mut spec);
    spec.publishers = 4;
    spec.qos = QoS::AtLeastOnce;
    spec.count = Some(200);
    let report = run(&spec);
    assert_exact(&report, 200);
    assert_eq!(report.expected, 200);
    assert_eq!(report.acked, 200);
    broker.shutdown().unwrap();
}

#[test]
fn pairs_at_qos2_over_mqtt5_and_fan_out_at_qos0_paced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path());
    let mut spec = Spec::new(Scenario::Pairs, broker.mqtt_addr());
    small(&mut spec);
    spec.version = ProtocolVersion::V5;
    spec.publishers = 3;
    spec.subscribers = 3;
    spec.qos = QoS::ExactlyOnce;
    spec.count = Some(150);
    assert_exact(&run(&spec), 150);

    let mut spec = Spec::new(Scenario::FanOut, broker.mqtt_addr());
    small(&mut spec);
    spec.subscribers = 5;
    spec.count = Some(100);
    spec.rate = Some(1000.0);
    let report = run(&spec);
    assert_exact(&report, 100);
    assert_eq!(report.expected, 500);
    broker.shutdown().unwrap();
}

#[test]
fn persistent_queue_and_retained_deliver_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path());
    let mut spec = Spec::new(Scenario::PersistentQueue, broker.mqtt_addr());
    small(&mut spec);
    spec.publishers = 2;
    spec.count = Some(200);
    let report = run(&spec);
    assert_exact(&report, 200);
    assert!(report.fill_rate.is_some() && report.drain_rate.is_some());

    let mut spec = Spec::new(Scenario::Retained, broker.mqtt_addr());
    small(&mut spec);
    spec.publishers = 2;
    spec.count = Some(200);
    assert_exact(&run(&spec), 200);
    broker.shutdown().unwrap();
}

#[test]
fn connections_spread_over_source_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path());
    let mut spec = Spec::new(Scenario::Connections, broker.mqtt_addr());
    spec.connections = 50;
    spec.source_addrs = 3;
    spec.broker_pid = Some(std::process::id());
    let report = run(&spec);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let c = report.connections.expect("connection stats");
    assert_eq!(c.connected, 50);
    assert_eq!(c.source_addrs, 3);
    assert!(c.broker_rss_per_connection.is_some());
    broker.shutdown().unwrap();
}
