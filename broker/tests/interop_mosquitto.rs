//! Interoperability with Debian's `mosquitto_pub` / `mosquitto_sub`
//! (package mosquitto-clients): QoS 0/1/2, retained and will messages, for
//! MQTT 3.1 and 3.1.1.

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
            .args(["-F", "MSG %t|%p|%r|%q"])
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
