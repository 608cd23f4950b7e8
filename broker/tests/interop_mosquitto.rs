//! Interoperability with Debian's `mosquitto_pub` / `mosquitto_sub`
//! (package mosquitto-clients): QoS 0/1/2, retained and will messages, for
//! MQTT 3.1 and 3.1.1; user properties, message expiry and shared
//! subscriptions with MQTT 5. (mosquitto_sub 2.0.11 has no option for
//! Retain Handling; that is covered with rumqttc in `mqtt5_subscriptions`.)

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TestBroker;

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found: install Debian's mosquitto-clients (scripts/test.sh does)"
    );
    Command::new(name)
}

/// A running mosquitto_sub whose stdout lines arrive on a channel.
struct Sub {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    /// Starts mosquitto_sub with `-d` (debug lines tell when SUBACK arrived)
    /// and a machine-readable format: topic|payload|retain|qos.
    fn start(broker: &TestBroker, version: &str, args: &[&str]) -> Sub {
        Sub::start_format(broker, version, "%t|%p|%r|%q", args)
    }

    /// Like `start`, with another output format (see `man mosquitto_sub`).
    fn start_format(broker: &TestBroker, version: &str, format: &str, args: &[&str]) -> Sub {
        // stdbuf: mosquitto_sub buffers stdout when it is a pipe.
        tool("mosquitto_sub");
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.addr.port().to_string(),
                "-V",
                version,
                "-d",
            ])
            .args(["-F", &format!("MSG {format}")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let sub = Sub { child, lines: rx };
        sub.wait_for(|l| l.contains("SUBACK"));
        sub
    }

    fn wait_for(&self, mut pred: impl FnMut(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(common::PATIENCE)
                .expect("mosquitto_sub output within the patience window");
            if pred(&line) {
                return line;
            }
        }
    }

    /// The next message as topic|payload|retain|qos.
    fn next_message(&self) -> String {
        self.wait_for(|l| l.starts_with("MSG "))
            .trim_start_matches("MSG ")
            .to_string()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(broker: &TestBroker, version: &str, args: &[&str]) {
    let status = tool("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.addr.port().to_string(),
            "-V",
            version,
        ])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_pub {args:?} failed");
}

fn qos_exchange(version: &str) {
    let broker = TestBroker::start();
    for qos in ["0", "1", "2"] {
        let topic = format!("interop/{version}/q{qos}");
        let sub = Sub::start(&broker, version, &["-t", &topic, "-q", qos]);
        publish(
            &broker,
            version,
            &["-t", &topic, "-q", qos, "-m", &format!("hello {qos}")],
        );
        assert_eq!(sub.next_message(), format!("{topic}|hello {qos}|0|{qos}"));
    }
}

#[test]
fn mosquitto_clients_exchange_qos_0_1_2_v311() {
    qos_exchange("mqttv311");
}

#[test]
fn mosquitto_clients_exchange_qos_0_1_2_v31() {
    qos_exchange("mqttv31");
}

#[test]
fn mosquitto_clients_get_retained_messages() {
    let broker = TestBroker::start();
    publish(
        &broker,
        "mqttv311",
        &["-t", "interop/ret", "-q", "1", "-r", "-m", "kept"],
    );
    let sub = Sub::start(&broker, "mqttv311", &["-t", "interop/#", "-q", "1"]);
    assert_eq!(sub.next_message(), "interop/ret|kept|1|1");
    // Deleting it with an empty retained message.
    publish(&broker, "mqttv311", &["-t", "interop/ret", "-r", "-n"]);
    assert_eq!(sub.next_message(), "interop/ret||0|0");
    let sub2 = Sub::start(&broker, "mqttv311", &["-t", "interop/#", "-W", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(sub2.lines.try_iter().all(|l| !l.starts_with("MSG ")));
}

#[test]
fn mosquitto_client_will_is_published_when_it_dies() {
    let broker = TestBroker::start();
    let watcher = Sub::start(&broker, "mqttv311", &["-t", "interop/will", "-q", "1"]);
    let mut dying = Sub::start(
        &broker,
        "mqttv311",
        &[
            "-t",
            "interop/nothing",
            "--will-topic",
            "interop/will",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
        ],
    );
    dying.child.kill().unwrap();
    dying.child.wait().unwrap();
    assert_eq!(watcher.next_message(), "interop/will|gone|0|1");
    // The will was retained.
    let late = Sub::start(&broker, "mqttv311", &["-t", "interop/will", "-q", "1"]);
    assert_eq!(late.next_message(), "interop/will|gone|1|1");
}

#[test]
fn mosquitto_v5_user_properties_pass_through() {
    let broker = TestBroker::start();
    let sub = Sub::start_format(&broker, "5", "%t|%p|%P", &["-t", "v5/up", "-q", "1"]);
    publish(
        &broker,
        "5",
        &[
            "-t",
            "v5/up",
            "-q",
            "1",
            "-m",
            "hi",
            "-D",
            "publish",
            "user-property",
            "site",
            "north",
        ],
    );
    assert_eq!(sub.next_message(), "v5/up|hi|site:north");
}

#[test]
fn mosquitto_v5_message_expiry_counts_down_and_expired_messages_are_not_delivered() {
    let broker = TestBroker::start();
    let args = |topic: &'static str, secs: &'static str, msg: &'static str| {
        vec![
            "-t",
            topic,
            "-q",
            "1",
            "-r",
            "-m",
            msg,
            "-D",
            "publish",
            "message-expiry-interval",
            secs,
        ]
    };
    publish(&broker, "5", &args("v5/exp/long", "120", "long"));
    publish(&broker, "5", &args("v5/exp/short", "1", "short"));
    std::thread::sleep(Duration::from_millis(2100));
    let sub = Sub::start_format(&broker, "5", "%t|%p|%E", &["-t", "v5/exp/#", "-q", "1"]);
    let got = sub.next_message();
    let (head, left) = got.rsplit_once('|').unwrap();
    assert_eq!(head, "v5/exp/long|long");
    let left: u32 = left.parse().unwrap();
    assert!((110..120).contains(&left), "expiry counted down: {left}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        sub.lines.try_iter().all(|l| !l.starts_with("MSG ")),
        "the expired one is gone"
    );
}

#[test]
fn mosquitto_v5_shared_subscription_spreads_messages() {
    let broker = TestBroker::start();
    let a = Sub::start(&broker, "5", &["-t", "$share/g/v5/sh", "-q", "1"]);
    let b = Sub::start(&broker, "5", &["-t", "$share/g/v5/sh", "-q", "1"]);
    for i in 0..10 {
        publish(
            &broker,
            "5",
            &["-t", "v5/sh", "-q", "1", "-m", &i.to_string()],
        );
    }
    let mut got: Vec<u32> = Vec::new();
    for sub in [&a, &b] {
        for _ in 0..5 {
            let m = sub.next_message();
            got.push(m.split('|').nth(1).unwrap().parse().unwrap());
        }
    }
    got.sort();
    assert_eq!(
        got,
        (0..10).collect::<Vec<u32>>(),
        "each message to one member, evenly"
    );
}
