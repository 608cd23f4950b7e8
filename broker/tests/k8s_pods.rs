//! The chart's StatefulSet run as Docker containers, as Kubernetes would run
//! its pods: no cluster is needed, and nothing is pulled.
//!
//! The image is built from `k8s/Dockerfile` (`--target runtime-prebuilt`)
//! on the base image `k8s/test-setup.sh` makes with debootstrap, with the
//! `tern` binary cargo built for this test (a debug build: a release build
//! costs minutes on two cores and the pods only need to form a cluster and
//! pass a few messages). Then, for each pod `tern-N`, from `helm template`:
//! the container's args, its environment as the kubelet gives it (downward
//! API `POD_NAME` / `NAMESPACE`, `$(VAR)` expanded), the ConfigMap's files
//! mounted where the pod mounts them, a Docker volume per
//! volumeClaimTemplate, emptyDirs as tmpfs, and the security context (user,
//! read-only root, no capabilities). The containers share a Docker network
//! on which each answers to its pod DNS name
//! (`tern-N.tern-headless.default.svc.cluster.local`), as the headless
//! Service's records do; Docker's DNS forwards nothing outside (`--dns
//! 127.0.0.1`). Ports are published on 127.0.0.1 only.
//!
//! The HTTP endpoint (`/readyz`, `/healthz`) is rendered off
//! (`http.enabled=false`) until the binary has it; nothing waits for it.
//! Everything the test creates is removed by a guard, also on failure
//! (after printing the containers' logs).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use broker::codec::Packet;
use common::helm::{render, Manifests, NAMESPACE, RELEASE};
use common::{build, Raw};

/// How long the pods get to reach a state (a guard against hanging, not a
/// performance bound).
const SETTLE: Duration = Duration::from_secs(90);
const REPLICAS: usize = 3;

/// Runs `docker args`; its stdout, trimmed, or its stderr as the error.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Kubernetes' expansion of `$(VAR)` in an env value: VAR must be defined
/// earlier in the list; `$$` is a literal `$`; anything else stays as is.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = rest.strip_prefix("$(").and_then(|r| r.split_once(')'))
        {
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[..name.len() + 3]),
            }
            rest = after;
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out + rest
}

#[test]
fn kubelet_env_expansion() {
    let env = vec![("A".to_owned(), "x".to_owned())];
    assert_eq!(expand("$(A).$(B).$$(A)$", &env), "x.$(B).$(A)$");
}

/// Everything one run creates, removed on drop.
struct Pods {
    prefix: String,
    image: Option<String>,
    network: Option<String>,
    containers: Vec<String>,
    volumes: Vec<String>,
    dir: tempfile::TempDir,
}

impl Drop for Pods {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for c in &self.containers {
                let logs = Command::new("docker")
                    .args(["logs", "--tail", "60", c])
                    .output();
                if let Ok(out) = logs {
                    eprintln!(
                        "---- {c} ----\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for v in &self.volumes {
            let _ = docker(&["volume", "rm", "-f", v]);
        }
        if let Some(n) = &self.network {
            let _ = docker(&["network", "rm", n]);
        }
        if let Some(i) = &self.image {
            let _ = docker(&["image", "rm", "-f", i]);
        }
    }
}

impl Pods {
    fn new() -> Pods {
        docker(&["info", "--format", "{{.ServerVersion}}"])
            .unwrap_or_else(|e| panic!("Docker Engine must be running: {e}"));
        Pods {
            prefix: format!("tern-k8s-test-{}", std::process::id()),
            image: None,
            network: None,
            containers: Vec::new(),
            volumes: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Builds the image from k8s/Dockerfile with this test's `tern`.
    fn build_image(&mut self) -> (String, String) {
        let base = std::env::var("TERN_K8S_BASE_IMAGE").unwrap_or_else(|_| "tern-base:test".into());
        docker(&["image", "inspect", "--format", "{{.Id}}", &base]).unwrap_or_else(|e| {
            panic!("base image {base} missing: run k8s/test-setup.sh first ({e})")
        });
        let context = self.dir.path().join("image");
        std::fs::create_dir(&context).unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_tern"), context.join("tern")).unwrap();
        let (repository, tag) = (self.prefix.clone(), "test".to_owned());
        let image = format!("{repository}:{tag}");
        self.image = Some(image.clone());
        let dockerfile = common::manifest_dir().join("../k8s/Dockerfile");
        docker_ok(&[
            "build",
            "--quiet",
            "--file",
            dockerfile.to_str().unwrap(),
            "--target",
            "runtime-prebuilt",
            "--build-arg",
            &format!("BASE_IMAGE={base}"),
            "--tag",
            &image,
            context.to_str().unwrap(),
        ]);
        (repository, tag)
    }

    /// Starts pod `tern-<ordinal>` of the rendered StatefulSet.
    fn start_pod(&mut self, m: &Manifests, ordinal: usize) -> String {
        let pod = format!("{RELEASE}-{ordinal}");
        let name = format!("{}-{pod}", self.prefix);
        let sts = m.get("StatefulSet", RELEASE);
        let spec = m.pod_spec();
        let c = m.container();
        let headless = sts["spec"]["serviceName"].as_str().unwrap();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--detach".into(),
            "--name".into(),
            name.clone(),
            "--hostname".into(),
            pod.clone(),
            "--network".into(),
            self.network.clone().unwrap(),
            "--network-alias".into(),
            format!("{pod}.{headless}.{NAMESPACE}.svc.cluster.local"),
            "--dns".into(),
            "127.0.0.1".into(),
        ];

        // environment, as the kubelet resolves it
        let mut env: Vec<(String, String)> = Vec::new();
        for e in c["env"].as_sequence().unwrap() {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                expand(v, &env)
            } else {
                match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.name") => pod.clone(),
                    Some("metadata.namespace") => NAMESPACE.to_owned(),
                    other => panic!("env {name}: valueFrom {other:?} is not simulated"),
                }
            };
            env.push((name, value));
        }
        for (k, v) in &env {
            args.extend(["--env".into(), format!("{k}={v}")]);
        }

        // security context: the container's, else the pod's
        let security = |key: &str| {
            let v = &c["securityContext"][key];
            if v.is_null() {
                spec["securityContext"][key].clone()
            } else {
                v.clone()
            }
        };
        let user = security("runAsUser").as_u64().expect("runAsUser");
        let group = security("runAsGroup").as_u64().expect("runAsGroup");
        args.extend(["--user".into(), format!("{user}:{group}")]);
        if let Some(fs_group) = spec["securityContext"]["fsGroup"].as_u64() {
            args.extend(["--group-add".into(), fs_group.to_string()]);
        }
        if c["securityContext"]["readOnlyRootFilesystem"] == true {
            args.push("--read-only".into());
        }
        if c["securityContext"]["allowPrivilegeEscalation"] == false {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        for cap in c["securityContext"]["capabilities"]["drop"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            args.extend(["--cap-drop".into(), cap.as_str().unwrap().into()]);
        }

        // volumes
        let claims: Vec<&str> = sts["spec"]["volumeClaimTemplates"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|t| t["metadata"]["name"].as_str().unwrap())
            .collect();
        for mount in c["volumeMounts"].as_sequence().unwrap() {
            let volume = mount["name"].as_str().unwrap();
            let path = mount["mountPath"].as_str().unwrap();
            let ro = if mount["readOnly"] == true { ":ro" } else { "" };
            if claims.contains(&volume) {
                let v = format!("{}-{volume}-{pod}", self.prefix);
                if !self.volumes.contains(&v) {
                    docker_ok(&["volume", "create", &v]);
                    self.volumes.push(v.clone());
                }
                args.extend(["--volume".into(), format!("{v}:{path}{ro}")]);
                continue;
            }
            let source = spec["volumes"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|v| v["name"] == volume)
                .unwrap_or_else(|| panic!("volume {volume}"));
            if let Some(map) = source["configMap"]["name"].as_str() {
                let dir = self.config_map_dir(m, map);
                args.extend(["--volume".into(), format!("{}:{path}{ro}", dir.display())]);
            } else if source["emptyDir"].is_mapping() {
                args.extend(["--tmpfs".into(), format!("{path}:rw,mode=1777")]);
            } else {
                panic!("volume {volume}: {source:?} is not simulated");
            }
        }

        // ports: published on loopback only, at ports Docker picks
        for p in c["ports"].as_sequence().unwrap() {
            let port = p["containerPort"].as_u64().unwrap();
            args.extend(["--publish".into(), format!("127.0.0.1::{port}")]);
        }

        if let Some(command) = c["command"].as_sequence() {
            args.extend([
                "--entrypoint".into(),
                command[0].as_str().unwrap().to_owned(),
            ]);
        }
        args.push(self.image.clone().unwrap());
        for a in c["args"].as_sequence().into_iter().flatten() {
            args.push(expand(a.as_str().unwrap(), &env));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_ok(&args);
        self.containers.push(name.clone());
        name
    }

    /// The ConfigMap's files in a directory readable by the pod's user.
    fn config_map_dir(&self, m: &Manifests, map: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.dir.path().join(map);
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            let data = m.get("ConfigMap", map)["data"].as_mapping().unwrap();
            for (file, text) in data {
                let path = dir.join(file.as_str().unwrap());
                std::fs::write(&path, text.as_str().unwrap()).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            for d in [self.dir.path(), dir.as_path()] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        dir
    }

    /// `tern cluster status --json` run inside the container, as
    /// `kubectl exec` would.
    fn status(&self, container: &str) -> Option<serde_json::Value> {
        let out = docker(&[
            "exec",
            container,
            "/usr/local/bin/tern",
            "cluster",
            "status",
            "--json",
            "--address",
            "127.0.0.1:7000",
        ])
        .ok()?;
        serde_json::from_str(&out).ok()
    }

    /// The host address a container port is published at.
    fn published(&self, container: &str, port: u16) -> SocketAddr {
        let out = docker_ok(&["port", container, &format!("{port}/tcp")]);
        out.lines()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("{container} {port}: {out}"))
    }
}

/// Polls `check` every 200 ms until it gives a value or SETTLE passes.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + SETTLE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod_dns(ordinal: usize) -> String {
    format!("{RELEASE}-{ordinal}.{RELEASE}-headless.{NAMESPACE}.svc.cluster.local")
}

/// Waits until every pod in `pods` is ready, knows the same leader and all
/// REPLICAS members at their pod DNS names.
fn wait_converged(p: &Pods, pods: &[(usize, String)]) -> u64 {
    let want: BTreeSet<(u64, String)> = (0..REPLICAS)
        .map(|i| (i as u64 + 1, format!("{}:7000", pod_dns(i))))
        .collect();
    wait_for("the pods to form one cluster", || {
        let mut leaders = BTreeSet::new();
        for (ordinal, container) in pods {
            let s = p.status(container)?;
            assert_eq!(s["node_id"], *ordinal as u64 + 1, "id from host name");
            let members: BTreeSet<(u64, String)> = s["members"]
                .as_array()?
                .iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap_or(0),
                        m["address"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            if s["ready"] != true || members != want {
                return None;
            }
            leaders.insert(s["leader"].as_u64()?);
        }
        (leaders.len() == 1 && !leaders.contains(&0)).then(|| *leaders.first().unwrap())
    })
}

/// Waits until every pod applied what any of them had applied.
fn settle(p: &Pods, pods: &[(usize, String)]) {
    let applied = |c: &str| {
        p.status(c)
            .and_then(|s| s["applied_index"].as_u64())
            .unwrap_or(0)
    };
    let target = pods.iter().map(|(_, c)| applied(c)).max().unwrap();
    wait_for("the pods to apply the same index", || {
        pods.iter().all(|(_, c)| applied(c) >= target).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_form_a_cluster_from_dns_names_and_route_messages() {
    let start = Instant::now();
    let mut p = Pods::new();
    let (repository, tag) = p.build_image();
    eprintln!("k8s pods: image built in {:?}", start.elapsed());

    let m = render(&[
        "--set",
        &format!(
            "http.enabled=false,image.repository={repository},image.tag={tag},replicaCount={REPLICAS}"
        ),
    ]);
    assert_eq!(
        m.container()["image"].as_str().unwrap(),
        p.image.as_deref().unwrap()
    );
    let network = p.prefix.clone();
    docker_ok(&["network", "create", &network]);
    p.network = Some(network);

    // tern-0 and tern-1 first: tern-2's name does not resolve yet, so they
    // keep asking for it (a new cluster is founded when all seeds answer)
    let started = Instant::now();
    let mut pods: Vec<(usize, String)> = (0..2).map(|i| (i, p.start_pod(&m, i))).collect();
    for (ordinal, c) in &pods {
        let s = wait_for("the first pods' cluster endpoints", || p.status(c));
        assert_eq!(s["node_id"], *ordinal as u64 + 1);
        assert_eq!(s["ready"], false, "no cluster without tern-2: {s}");
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

    pods.push((2, p.start_pod(&m, 2)));
    let leader = wait_converged(&p, &pods);
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
    docker_ok(&["start", &pods[1].1]);
    wait_converged(&p, &pods);
    eprintln!("k8s pods: whole test {:?}", start.elapsed());
}
