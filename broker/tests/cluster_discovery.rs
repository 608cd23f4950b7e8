//! How nodes find each other without hand-written settings, as a
//! StatefulSet's pods do (k8s/README.md):
//!
//! - seeds given as DNS names without ids that resolve only later, as a
//!   pod's name appears once the pod exists. Each `tern` runs in a mount
//!   namespace of its own (`unshare --mount`) where `/etc/hosts` is a file of
//!   the test and `/etc/resolv.conf` names only 127.0.0.1, so no lookup
//!   leaves the machine. glibc reads `/etc/hosts` at every lookup: rewriting
//!   the file in place makes a name resolve from then on;
//! - the node id taken from the host name (`--node-id-from-hostname`), in a
//!   UTS namespace of its own (`unshare --uts`) with the host name set.
//!
//! Namespaces need root, as CI has.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::process::free_port;

const SETTLE: Duration = Duration::from_secs(60);

struct Node {
    id: u64,
    cluster_addr: String,
    log: PathBuf,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- node {} ----", self.id);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Starts node `id` seeded with `seeds`, resolving names through `hosts`.
fn start(root: &Path, id: u64, port: u16, seeds: &[String], hosts: &Path, resolv: &Path) -> Node {
    let cluster_addr = format!("127.0.0.1:{port}");
    let config = root.join(format!("node{id}.toml"));
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "[cluster]\nnode_id = {id}\nlisten = \"{cluster_addr}\"\nseeds = [{}]\ntick_ms = 20\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    let log = root.join(format!("node{id}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && shift 2 && exec "$@""#)
        .arg("sh")
        .arg(hosts)
        .arg(resolv)
        .arg(env!("CARGO_BIN_EXE_tern"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(root.join(format!("node{id}")))
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        .args(["--ws-bind", "127.0.0.1:0"])
        // no HTTP endpoint: the nodes would all want the default port 8080
        .args(["--http-bind", ""])
        .args(["--log-level", "info,cluster=debug"])
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("unshare runs");
    Node {
        id,
        cluster_addr,
        log,
        child,
    }
}

fn status(node: &Node) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "cluster",
            "status",
            "--json",
            "--address",
            &node.cluster_addr,
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn wait_for(what: &str, check: impl FnMut() -> bool) {
    let done = common::wait_until(SETTLE, Duration::from_millis(50), check);
    assert!(done, "timed out waiting for {what}");
}

#[test]
fn seeds_by_name_that_resolve_late_are_retried_until_the_cluster_forms() {
    let root = tempfile::tempdir().unwrap();
    let hosts = root.path().join("hosts");
    let resolv = root.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let name = |id: u64| format!("node-{id}.tern.test");
    let seeds: Vec<String> = (1..=3)
        .map(|id| format!("{}:{}", name(id), ports[id as usize - 1]))
        .collect();
    // node-3's name does not resolve yet
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost {} {}\n", name(1), name(2)),
    )
    .unwrap();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| {
            start(
                root.path(),
                id,
                ports[id as usize - 1],
                &seeds,
                &hosts,
                &resolv,
            )
        })
        .collect();

    // node 1 asks for node-3 again and again (a failed lookup, at debug
    // level), and keeps running
    let unanswered = |node: &Node| {
        std::fs::read_to_string(&node.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("seed not answering")
                    && l.contains(&name(3))
                    && l.contains("failed to lookup address")
            })
            .count()
    };
    wait_for("node 1 to retry node-3 twice", || {
        unanswered(&nodes[0]) >= 2
    });
    for node in &mut nodes {
        assert!(
            node.child.try_wait().unwrap().is_none(),
            "node {} exited",
            node.id
        );
        let s = status(node).expect("the cluster endpoint answers");
        assert_eq!(s["ready"], false, "no cluster without node 3: {s}");
    }

    // the name appears (rewritten in place: the bind mounts see the file)
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost {} {} {}\n", name(1), name(2), name(3)),
    )
    .unwrap();
    wait_for("one cluster of three", || {
        let statuses: Vec<_> = nodes.iter().map(status).collect();
        let leaders: Vec<u64> = statuses
            .iter()
            .flatten()
            .filter(|s| s["ready"] == true && s["members"].as_array().is_some_and(|m| m.len() == 3))
            .filter_map(|s| s["leader"].as_u64())
            .collect();
        leaders.len() == 3 && leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0])
    });
}

#[test]
fn node_id_from_hostname_gives_ordinal_plus_one_and_refuses_a_name_without_one() {
    let root = tempfile::tempdir().unwrap();
    let run = |hostname: &str, port: u16, stderr: Stdio| {
        Command::new("unshare")
            .args([
                "--uts",
                "--",
                "sh",
                "-c",
                r#"hostname "$1" && shift && exec "$@""#,
            ])
            .arg("sh")
            .arg(hostname)
            .arg(env!("CARGO_BIN_EXE_tern"))
            .arg("--node-id-from-hostname")
            .arg("--data-dir")
            .arg(root.path().join(hostname))
            .args(["--bind", "127.0.0.1:0", "--ws-bind", "127.0.0.1:0"])
            .args(["--http-bind", ""])
            .args(["--cluster-listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("unshare runs")
    };

    let out = run("build-box", free_port(), Stdio::piped())
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("host name `build-box`") && stderr.contains("-N"),
        "{stderr}"
    );

    // pod tern-4 is node 5 (a cluster of one: no seeds)
    let port = free_port();
    let log = root.path().join("tern-4.log");
    let child = run("tern-4", port, std::fs::File::create(&log).unwrap().into());
    let node = Node {
        id: 5,
        cluster_addr: format!("127.0.0.1:{port}"),
        log,
        child,
    };
    wait_for("node tern-4 to run as node 5", || {
        status(&node).is_some_and(|s| s["node_id"] == 5 && s["ready"] == true)
    });
}
