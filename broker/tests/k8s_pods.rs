//! The chart's StatefulSet run as Docker containers, as Kubernetes would run
//! its pods: no cluster is needed, and nothing is pulled.
//!
//! The image is built from `k8s/Dockerfile` (`--target runtime-prebuilt`)
//! on the base image `k8s/test-setup.sh` makes with debootstrap, with the
//! `tern` binary cargo built for this test (a debug build: a release build
//! costs minutes on two cores and the pods only need to form a cluster and
//! pass a few messages). Then, for each pod `tern-N`, from `helm template`:
//! the container's args, its environment as the kubelet gives it (downward
//! API `POD_NAME` / `NAMESPACE`, `$(VAR)` expanded), the ConfigMap's and
//! Secrets' files mounted where the pod mounts them, a Docker volume per
//! volumeClaimTemplate, emptyDirs as tmpfs, and the security context (user,
//! read-only root, no capabilities). The containers share a Docker network
//! on which each answers to its pod DNS name
//! (`tern-N.tern-headless.default.svc.cluster.local`), as the headless
//! Service's records do; Docker's DNS forwards nothing outside (`--dns
//! 127.0.0.1`, with a 1 s resolver timeout for names that do not exist
//! yet). Ports are published on 127.0.0.1 only.
//!
//! The config runs as rendered, `[http]` included (only `[telemetry]`,
//! which this `tern` does not know, is rendered off with an empty
//! `telemetry.otlpEndpoint`). Readiness is what the kubelet would see: the
//! StatefulSet's `readinessProbe` and `livenessProbe` (path, named port,
//! timeout) are read from the render and sent to each pod's port published
//! on 127.0.0.1. `tern cluster status` adds what a probe cannot say (one
//! leader, every member at its DNS name). Everything a test creates is
//! removed by a guard, also on failure (after printing the containers'
//! logs). The harness is `tests/common/pods.rs`.
//!
//! Scenarios: three pods forming a cluster from DNS names (one resolving
//! late), their readiness turning from 503 (with a reason) to 200 while
//! liveness stays 200, routing a message between pods, a pod stopped like
//! the kubelet stops it, scaling to five pods and back to three (with `tern
//! cluster remove`, as k8s/README.md says); one pod from the CI values (TLS,
//! passwords, ACL, JWT key from Secrets) serving authenticated clients.

mod common;

use std::time::Instant;

use broker::codec::Packet;
use common::helm::{self, render};
use common::pods::{
    docker, docker_ok, expand, pod_dns, settle, wait_converged, wait_for, HttpAnswer, Pods, Probe,
};
use common::{build, Raw};

const REPLICAS: usize = 3;

/// One scenario at a time: each runs its own pods on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[test]
fn kubelet_env_expansion() {
    let env = vec![("A".to_owned(), "x".to_owned())];
    assert_eq!(expand("$(A).$(B).$$(A)$", &env), "x.$(B).$(A)$");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_form_a_cluster_from_dns_names_and_route_messages() {
    let _one = ONE_AT_A_TIME.lock().await;
    let start = Instant::now();
    let mut p = Pods::new("3pods");
    let (repository, tag) = p.build_image();
    eprintln!("k8s pods: image built in {:?}", start.elapsed());

    let m = render(&[
        "--set",
        &format!("image.repository={repository},image.tag={tag},replicaCount={REPLICAS}"),
    ]);
    let ready = Probe::of(&m, "readinessProbe");
    let live = Probe::of(&m, "livenessProbe");
    assert_eq!(
        (ready.path.as_str(), live.path.as_str()),
        ("/readyz", "/healthz")
    );
    assert_eq!(
        m.container()["image"].as_str().unwrap(),
        p.image.as_deref().unwrap()
    );
    let network = p.prefix.clone();
    docker_ok(&["network", "create", &network]);
    p.network = Some(network);

    // tern-0 and tern-1 first: tern-2's name does not resolve yet, so they
    // keep asking for it (a new cluster is founded when all seeds answer).
    // Meanwhile their readiness probe fails with the reason, and their
    // liveness probe passes: the kubelet must not restart a joining pod.
    let started = Instant::now();
    let mut pods: Vec<(usize, String)> = (0..2).map(|i| (i, p.start_pod(&m, i))).collect();
    for (_, c) in &pods {
        let answer = wait_for("the first pods' readiness probe", || p.probe(c, &ready));
        assert_not_ready(c, &answer);
        eprintln!(
            "k8s pods: {c} {} {} {}",
            ready.path, answer.status, answer.body
        );
        let alive = wait_for("the first pods' liveness probe", || p.probe(c, &live));
        assert_eq!(alive.status, 200, "{c} {}: {}", live.path, alive.body);
    }
    let lookup = docker(&["exec", &pods[0].1, "getent", "hosts", &pod_dns(2)]);
    assert!(
        lookup.is_err(),
        "tern-2 resolves before it exists: {lookup:?}"
    );
    assert!(docker(&["exec", &pods[0].1, "getent", "hosts", &pod_dns(1)]).is_ok());
    for (_, c) in &pods {
        assert_eq!(
            docker_ok(&["inspect", "--format", "{{.State.Running}}", c]),
            "true",
            "an unresolvable seed is retried, not fatal"
        );
    }

    // with tern-2 up, /readyz of all three turns 200 (503 -> 200 on tern-0
    // and tern-1, seen above); every answer that was not 200 said why
    pods.push((2, p.start_pod(&m, 2)));
    let before = p.wait_probe_ok("/readyz 200 on all three pods", &pods, &ready);
    for ((_, c), answers) in pods.iter().zip(&before) {
        answers.iter().for_each(|a| assert_not_ready(c, a));
    }
    eprintln!(
        "k8s pods: {} 503 -> 200 on all {REPLICAS} pods {:?} after the first pod started",
        ready.path,
        started.elapsed()
    );
    for (_, c) in &pods {
        let alive = p.probe(c, &live).expect("liveness answer");
        assert_eq!(alive.status, 200, "{c} {}: {}", live.path, alive.body);
    }
    let leader = wait_converged(&p, &pods, REPLICAS);
    eprintln!(
        "k8s pods: cluster of {REPLICAS} formed in {:?}, leader {leader}",
        started.elapsed()
    );

    // every pod serves MQTT on its published port; a message published on
    // tern-0 reaches a subscriber on tern-2
    for (ordinal, c) in &pods {
        let addr = p.published(c, 1883);
        Raw::mqtt(addr, &format!("probe-{ordinal}"), true).await;
    }
    let mut sub = Raw::mqtt(p.published(&pods[2].1, 1883), "sub-on-2", true).await;
    sub.send(&build::subscribe(1, &[("k8s/#", 1)])).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    settle(&p, &pods);
    let mut publisher = Raw::mqtt(p.published(&pods[0].1, 1883), "pub-on-0", true).await;
    publisher
        .send(&build::publish(
            "k8s/hello",
            1,
            false,
            false,
            7,
            b"from tern-0",
        ))
        .await;
    assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(7));
    match sub.recv().await {
        Some(Packet::Publish(got)) => {
            assert_eq!(&got.topic[..], "k8s/hello");
            assert_eq!(&got.payload[..], b"from tern-0");
        }
        other => panic!("PUBLISH expected on tern-2, got {other:?}"),
    }

    // a pod stopped as the kubelet stops it (SIGTERM, then at most the
    // grace period) exits 0, and comes back with its identity and store
    let grace = m.pod_spec()["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap()
        .to_string();
    docker_ok(&["stop", "--time", &grace, &pods[1].1]);
    assert_eq!(
        docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &pods[1].1]),
        "0"
    );
    // the two others keep their majority, so stay ready
    for (_, c) in [&pods[0], &pods[2]] {
        let answer = p.probe(c, &ready).expect("readiness answer");
        assert_eq!(answer.status, 200, "{c} {}: {}", ready.path, answer.body);
    }
    docker_ok(&["start", &pods[1].1]);
    p.wait_probe_ok("tern-1 ready again after its restart", &pods, &ready);
    wait_converged(&p, &pods, REPLICAS);

    // scaling 3 -> 5 (k8s/README.md): the new pods come from the new render
    // (five seeds) and join as voters 4 and 5; the running pods are not
    // touched
    let scaled = Instant::now();
    let m5 = render(&[
        "--set",
        &format!("image.repository={repository},image.tag={tag},replicaCount=5"),
    ]);
    for ordinal in 3..5 {
        pods.push((ordinal, p.start_pod(&m5, ordinal)));
    }
    let joining = p.wait_probe_ok("/readyz 200 on all five pods", &pods, &ready);
    for ((_, c), answers) in pods.iter().zip(&joining) {
        answers.iter().for_each(|a| assert_not_ready(c, a));
    }
    wait_converged(&p, &pods, 5);
    eprintln!("k8s pods: scaled to 5 in {:?}", scaled.elapsed());

    // scaling 5 -> 3: the StatefulSet stops the highest pods; they stay
    // voters until `tern cluster remove` (not automatic)
    for (_, c) in pods.drain(3..).rev() {
        docker_ok(&["stop", "--time", &grace, &c]);
    }
    for id in [5, 4] {
        let removed = docker_ok(&[
            "exec",
            &pods[0].1,
            "tern",
            "cluster",
            "remove",
            "--address",
            "127.0.0.1:7000",
            &id.to_string(),
        ]);
        assert_eq!(removed, format!("node {id} removed"));
    }
    p.wait_probe_ok("/readyz 200 on the three remaining pods", &pods, &ready);
    wait_converged(&p, &pods, REPLICAS);
    eprintln!("k8s pods: whole test {:?}", start.elapsed());
}

/// A readiness answer of a pod not ready: 503 with a JSON reason.
fn assert_not_ready(container: &str, answer: &HttpAnswer) {
    assert_eq!(answer.status, 503, "{container}: {}", answer.body);
    let body = answer.json();
    assert_eq!(body["ready"], false, "{container}: {body}");
    let reason = body["reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty(), "{container}: no reason in {body}");
}

/// Connects over TLS (the server certificate names `localhost`) and sends
/// a 3.1.1 CONNECT with `user` / `password`; the CONNACK return code.
async fn tls_mqtt(
    addr: std::net::SocketAddr,
    ca: &common::pki::Ca,
    client_id: &str,
    user: &str,
    password: &[u8],
) -> (Raw, u8) {
    let stream = common::pki::tls_connect(addr, common::pki::client_config(ca, None))
        .await
        .expect("TLS handshake");
    let mut raw = Raw::over(stream);
    raw.send(&build::connect_full(
        4,
        client_id,
        true,
        60,
        None,
        Some(user),
        Some(password),
    ))
    .await;
    let connack = raw.recv_bytes().await.expect("CONNACK");
    assert_eq!(connack[0], 0x20, "CONNACK expected: {connack:02x?}");
    (raw, connack[3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_with_tls_password_acl_and_jwt_secrets_serves_authenticated_clients() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut p = Pods::new("1pod");
    let (repository, tag) = p.build_image();

    // the CI values (TLS, passwords, ACL, RS256 JWT key) with one replica and
    // a server certificate for `localhost` made here
    let ca = common::pki::Ca::new("k8s test ca");
    let server = ca.server();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = server.write(certs.path(), "server");
    let ca_pem = common::pki::write(certs.path(), "ca.pem", &ca.cert.pem());
    let ci = helm::chart_dir().join("ci/tls-auth-5.yaml");
    let m = render(&[
        "-f",
        ci.to_str().unwrap(),
        "--set",
        &format!(
            "telemetry.otlpEndpoint=,image.repository={repository},image.tag={tag},replicaCount=1"
        ),
        "--set-file",
        &format!(
            "tls.certificate={},tls.privateKey={},tls.ca={}",
            cert.display(),
            key.display(),
            ca_pem.display()
        ),
    ]);
    let network = p.prefix.clone();
    docker_ok(&["network", "create", &network]);
    p.network = Some(network);
    let pod = p.start_pod(&m, 0);
    p.wait_probe_ok(
        "the pod's readiness probe",
        &[(0, pod.clone())],
        &Probe::of(&m, "readinessProbe"),
    );
    wait_converged(&p, &[(0, pod.clone())], 1);

    // no anonymous clients; alice's password from the password file Secret
    let mut anonymous = Raw::connect(p.published(&pod, 1883)).await;
    assert_eq!(anonymous.try_connect_mqtt("anonymous").await, Some(5));
    let mut tcp = Raw::connect(p.published(&pod, 1883)).await;
    tcp.send(&build::connect_full(
        4,
        "alice-tcp",
        true,
        60,
        None,
        Some("alice"),
        Some(b"test-only-password"),
    ))
    .await;
    assert_eq!(tcp.recv_bytes().await.unwrap(), build::connack(false, 0));
    let (_, refused) = tls_mqtt(p.published(&pod, 8883), &ca, "mallory", "alice", b"guess").await;
    assert_eq!(refused, 4, "a wrong password is refused");

    // over TLS (certificates from the TLS Secret), with the ACL Secret's
    // rules: alice may use alice/# and nothing else
    let (mut tls, code) = tls_mqtt(
        p.published(&pod, 8883),
        &ca,
        "alice-tls",
        "alice",
        b"test-only-password",
    )
    .await;
    assert_eq!(code, 0);
    tls.send(&build::subscribe(1, &[("alice/#", 1), ("other/#", 1)]))
        .await;
    assert_eq!(
        tls.recv_bytes().await.unwrap(),
        build::suback(1, &[1, 0x80])
    );
    tcp.send(&build::publish("alice/x", 1, false, false, 3, b"via tls"))
        .await;
    assert_eq!(tcp.recv_bytes().await.unwrap(), build::puback(3));
    match tls.recv().await {
        Some(Packet::Publish(got)) => assert_eq!(&got.payload[..], b"via tls"),
        other => panic!("PUBLISH expected over TLS, got {other:?}"),
    }
}

/// Where each pod's MQTT port is published now (`None` while it is
/// stopped; Docker picks a new host port at each start).
type Addrs = std::sync::Arc<parking_lot::Mutex<Vec<Option<std::net::SocketAddr>>>>;

/// What one subscriber saw across the rolling restart.
#[derive(Default)]
struct SubReport {
    app: common::flow::App,
    /// (pod it was on, Server Reference it got) for each DISCONNECT 0x9C.
    references: Vec<(usize, String)>,
    /// Pods it reconnected to, each time with its session present.
    reconnects: Vec<usize>,
}

/// Connects `client_id` (persistent session) to pod `ordinal`; `None` if
/// the pod does not take it now (stopped, draining: CONNACK 0x9C / 3).
async fn connect_persistent(
    addrs: &Addrs,
    ordinal: usize,
    client_id: &str,
    v5: bool,
    expect_session: bool,
) -> Option<Raw> {
    let addr = addrs.lock()[ordinal]?;
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut raw = Raw::over(stream);
    if v5 {
        raw.version = broker::codec::ProtocolVersion::V5;
        let expiry = build::prop::u32(0x11, 600);
        raw.try_send(&build::connect5(client_id, false, 60, &expiry))
            .await
            .then_some(())?;
    } else {
        raw.try_send(&build::connect(4, client_id, false, 60))
            .await
            .then_some(())?;
    }
    match raw
        .recv_bytes_within(std::time::Duration::from_secs(10))
        .await
    {
        Some(b) if b.len() >= 4 && b[0] == 0x20 && b[3] == 0 => {
            assert_eq!(
                b[2] & 1 == 1,
                expect_session,
                "{client_id} on tern-{ordinal}: session present"
            );
            Some(raw)
        }
        _ => None,
    }
}

/// The pod a Server Reference names (`tern-N.tern-headless...:1883`).
fn ordinal_of(reference: &str) -> usize {
    let host = reference.split(['.', ':']).next().unwrap();
    host.rsplit_once('-').unwrap().1.parse().unwrap()
}

/// A persistent subscriber that follows its session through pod stops: an
/// MQTT 5 client goes where the Server Reference sends it, a 3.1.1 client
/// to the next pod that takes it; both must find their session there.
async fn follow(
    addrs: Addrs,
    client_id: String,
    v5: bool,
    first: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> SubReport {
    use std::time::Duration;
    let mut report = SubReport::default();
    let mut on = first;
    let mut s = connect_persistent(&addrs, on, &client_id, v5, false)
        .await
        .expect("first connection");
    let packet = build::subscribe(1, &[("roll/q1", 1), ("roll/q2", 2)]);
    let packet = if v5 {
        build::subscribe5(1, &[], &[("roll/q1", 1), ("roll/q2", 2)])
    } else {
        packet
    };
    s.send(&packet).await;
    assert_eq!(s.recv_bytes().await.unwrap()[0], 0x90, "SUBACK");
    loop {
        let mut reference = None;
        // read until the connection ends (or the run is over and quiet)
        loop {
            let Some(bytes) = s.recv_bytes_within(Duration::from_millis(500)).await else {
                if *stop.borrow() {
                    return report;
                }
                if s.try_send(&build::pingreq()).await {
                    continue;
                }
                break;
            };
            match bytes[0] >> 4 {
                13 => {} // PINGRESP
                14 => {
                    let mut b = bytes::BytesMut::from(&bytes[..]);
                    let limits = broker::codec::Limits {
                        max_packet_size: u32::MAX,
                        version: s.version,
                        refuse_control_characters: false,
                    };
                    match Packet::decode(&mut b, &limits).unwrap().unwrap() {
                        Packet::Disconnect(d) => {
                            assert_eq!(
                                d.reason_code,
                                broker::codec::ReasonCode::UseAnotherServer,
                                "{client_id}: a drain sends 0x9C"
                            );
                            reference = d.properties.server_reference.map(|r| r.to_string());
                        }
                        other => panic!("{other:?}"),
                    }
                }
                _ if v5 => report.app.handle5(&mut s, &bytes).await,
                _ => report.app.handle_packet(&mut s, &bytes).await,
            }
        }
        // reconnect: where the reference says, else the next pod up
        let wanted = reference.as_deref().map(ordinal_of);
        if let Some(r) = &reference {
            report.references.push((on, r.clone()));
        }
        let mut attempt = 0;
        s = loop {
            let target = wanted.unwrap_or((on + 1 + attempt) % 3);
            attempt += 1;
            if let Some(s) = connect_persistent(&addrs, target, &client_id, v5, true).await {
                on = target;
                break s;
            }
            assert!(attempt < 600, "{client_id}: no pod took the session back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        report.reconnects.push(on);
    }
}

/// Publishes QoS 1 and 2 messages (clean sessions) until told to stop,
/// moving to the next pod whenever its connection breaks.
async fn publish_rolling(
    addrs: Addrs,
    client_id: String,
    first: usize,
    base_seq: u32,
    stop: tokio::sync::watch::Receiver<bool>,
) -> common::flow::Acked {
    let mut acked = common::flow::Acked::default();
    let mut on = first;
    let mut seq = base_seq;
    while !*stop.borrow() {
        let Some(addr) = addrs.lock()[on] else {
            on = (on + 1) % 3;
            continue;
        };
        let began = Instant::now();
        let round = common::flow::publish_rounds(addr, &client_id, "roll", seq, 200).await;
        eprintln!(
            "k8s roll: {client_id} seq {seq}.. on tern-{on}: {} sent, {} acked, {:?} from {:?}",
            round.sent,
            round.qos1.len() + round.qos2.len(),
            began.elapsed(),
            chrono_now()
        );
        seq += 200;
        let broken = round.sent < 200 || round.qos1.len() + round.qos2.len() < 100;
        acked.sent += round.sent;
        acked.qos1.extend(round.qos1);
        acked.qos2.extend(round.qos2);
        if broken {
            on = (on + 1) % 3;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    acked
}

/// Wall-clock time, to compare with the pods' logs.
fn chrono_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:03}", t.as_secs() % 86_400, t.subsec_millis())
}

/// Issue 18: a rolling restart (tern-2, tern-1, tern-0 stopped as the
/// kubelet stops a pod: SIGTERM, SIGKILL after the grace period; started
/// again on the same volume) while QoS 1 and QoS 2 publishers and
/// persistent subscribers (MQTT 5 and 3.1.1) run: every acknowledged
/// message is delivered to every subscriber, QoS 2 exactly once; MQTT 5
/// clients got a Server Reference and found their session there, 3.1.1
/// clients found theirs wherever they reconnected; every pod exited 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_no_acknowledged_message_and_moves_sessions_issue_18() {
    use std::time::Duration;
    let _one = ONE_AT_A_TIME.lock().await;
    let start = Instant::now();
    let mut p = Pods::new("roll");
    let (repository, tag) = p.build_image();
    let m = render(&[
        "--set",
        &format!("image.repository={repository},image.tag={tag},replicaCount={REPLICAS}"),
    ]);
    let ready = Probe::of(&m, "readinessProbe");
    let grace = m.pod_spec()["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap()
        .to_string();
    let network = p.prefix.clone();
    docker_ok(&["network", "create", &network]);
    p.network = Some(network);
    let pods: Vec<(usize, String)> = (0..REPLICAS).map(|i| (i, p.start_pod(&m, i))).collect();
    p.wait_probe_ok("/readyz 200 on all three pods", &pods, &ready);
    wait_converged(&p, &pods, REPLICAS);
    let addrs: Addrs = std::sync::Arc::new(parking_lot::Mutex::new(
        pods.iter()
            .map(|(_, c)| Some(p.published(c, 1883)))
            .collect(),
    ));

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let subscribers: Vec<(String, bool, usize)> = vec![
        ("roll-v5-a".into(), true, 2),
        ("roll-v5-b".into(), true, 1),
        ("roll-v3-a".into(), false, 2),
        ("roll-v3-b".into(), false, 0),
    ];
    let mut subs = Vec::new();
    for (id, v5, first) in &subscribers {
        subs.push(tokio::spawn(follow(
            addrs.clone(),
            id.clone(),
            *v5,
            *first,
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle(&p, &pods);
    // sequence numbers: publisher 0 from 0, publisher 1 from 1e9
    let publishers: Vec<_> = [(0usize, "roll-pub-0"), (1, "roll-pub-1")]
        .into_iter()
        .map(|(first, id)| {
            tokio::spawn(publish_rolling(
                addrs.clone(),
                id.to_owned(),
                first,
                first as u32 * 1_000_000_000,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    for ordinal in [2usize, 1, 0] {
        let container = pods[ordinal].1.clone();
        let stopped = Instant::now();
        let c = container.clone();
        let g = grace.clone();
        tokio::task::spawn_blocking(move || docker_ok(&["stop", "--time", &g, &c]))
            .await
            .unwrap();
        addrs.lock()[ordinal] = None;
        assert_eq!(
            docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &container]),
            "0",
            "tern-{ordinal} exits 0 after its drain"
        );
        // tern logs to stderr
        let out = std::process::Command::new("docker")
            .args(["logs", &container])
            .output()
            .unwrap();
        let logs = String::from_utf8_lossy(&out.stderr).into_owned();
        let _ = std::fs::write(format!("/tmp/roll-tern-{ordinal}.log"), &logs);
        let drained = logs
            .lines()
            .rfind(|l| l.contains("drained"))
            .unwrap_or_else(|| panic!("tern-{ordinal} did not drain:\n{logs}"))
            .to_owned();
        eprintln!(
            "k8s roll: tern-{ordinal} stopped in {:?}: {drained}",
            stopped.elapsed()
        );
        docker_ok(&["start", &container]);
        p.wait_probe_ok("the restarted pod ready", &pods, &ready);
        wait_converged(&p, &pods, REPLICAS);
        addrs.lock()[ordinal] = Some(p.published(&container, 1883));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // publishing stops; subscribers read until quiet
    stop_tx.send(true).unwrap();
    let mut acked = common::flow::Acked::default();
    for publisher in publishers {
        let a = publisher.await.unwrap();
        acked.sent += a.sent;
        acked.qos1.extend(a.qos1);
        acked.qos2.extend(a.qos2);
    }
    let mut lost = Vec::new();
    let mut reports = Vec::new();
    for (sub, (id, _, _)) in subs.into_iter().zip(&subscribers) {
        let report = sub.await.unwrap();
        let missing1: Vec<u32> = acked
            .qos1
            .iter()
            .filter(|s| !report.app.qos1.contains_key(s))
            .copied()
            .collect();
        let missing2: Vec<u32> = acked
            .qos2
            .iter()
            .filter(|s| !report.app.qos2.contains_key(s))
            .copied()
            .collect();
        let dup2: Vec<u32> = report
            .app
            .qos2
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, _)| *s)
            .collect();
        if !(missing1.is_empty() && missing2.is_empty() && dup2.is_empty()) {
            lost.push(format!(
                "{id}: QoS 1 lost {missing1:?}, QoS 2 lost {missing2:?}, QoS 2 twice {dup2:?}"
            ));
        }
        reports.push(report);
    }
    assert!(lost.is_empty(), "{lost:#?}");
    for (report, (id, v5, _)) in reports.into_iter().zip(&subscribers) {
        common::flow::check(&report.app, &acked);
        if *v5 {
            assert!(
                !report.references.is_empty(),
                "{id} was on a stopped pod and got a Server Reference"
            );
            for (from, reference) in &report.references {
                assert_ne!(ordinal_of(reference), *from, "{id}: sent to another pod");
            }
        }
        assert!(!report.reconnects.is_empty(), "{id} reconnected");
        eprintln!(
            "k8s roll: {id}: {} references, reconnected to {:?}, {} QoS 1 / {} QoS 2 received",
            report.references.len(),
            report.reconnects,
            report.app.qos1.len(),
            report.app.qos2.len()
        );
    }
    eprintln!(
        "k8s roll: {} sent, {} QoS 1 and {} QoS 2 acknowledged, all delivered to 4 subscribers; whole test {:?}",
        acked.sent,
        acked.qos1.len(),
        acked.qos2.len(),
        start.elapsed()
    );
}
