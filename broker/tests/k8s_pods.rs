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
