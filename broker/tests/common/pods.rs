//! The pods of the chart's StatefulSet run as Docker containers the way
//! Kubernetes would run them (see `broker/tests/k8s_pods.rs`): the image
//! built from `k8s/Dockerfile`, each pod's args, environment, volumes and
//! security context taken from `helm template` output, a Docker network on
//! which each pod answers to its DNS name, and a guard that removes all of
//! it. The chart's HTTP probes are read from the rendered container and
//! sent the way the kubelet sends them: a plain HTTP GET of the probe's path
//! on the probe's port (here, the port as published on 127.0.0.1).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_yaml::Value;

use super::helm::{Manifests, NAMESPACE, RELEASE};

/// How long the pods get to reach a state (a guard against hanging, not a
/// performance bound).
pub const SETTLE: Duration = Duration::from_secs(90);

/// Runs `docker args`; its stdout, trimmed, or its stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
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

pub fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Kubernetes' expansion of `$(VAR)` in an env value: VAR must be defined
/// earlier in the list; `$$` is a literal `$`; anything else stays as is.
pub fn expand(value: &str, env: &[(String, String)]) -> String {
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

/// Everything one run creates, removed on drop.
pub struct Pods {
    pub prefix: String,
    pub image: Option<String>,
    pub network: Option<String>,
    pub containers: Vec<String>,
    pub volumes: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Drop for Pods {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // whole logs kept for a post-mortem, the end printed
            let dir = std::env::temp_dir().join("tern-pods-logs");
            let _ = std::fs::create_dir_all(&dir);
            for c in &self.containers {
                if let Ok(out) = Command::new("docker").args(["logs", c]).output() {
                    let mut all = out.stdout;
                    all.extend(out.stderr);
                    let _ = std::fs::write(dir.join(format!("{c}.log")), all);
                }
            }
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
    /// A run named `scenario` (in the names of what it creates).
    pub fn new(scenario: &str) -> Pods {
        docker(&["info", "--format", "{{.ServerVersion}}"])
            .unwrap_or_else(|e| panic!("Docker Engine must be running: {e}"));
        Pods {
            prefix: format!("tern-k8s-{scenario}-{}", std::process::id()),
            image: None,
            network: None,
            containers: Vec::new(),
            volumes: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Builds the image from k8s/Dockerfile with this test's `tern`.
    pub fn build_image(&mut self) -> (String, String) {
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
        let dockerfile = super::manifest_dir().join("../k8s/Dockerfile");
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
    pub fn start_pod(&mut self, m: &Manifests, ordinal: usize) -> String {
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
            // Docker's DNS answers the network's names and forwards the rest
            // to 127.0.0.1 in the container, where nothing answers: no query
            // leaves the machine. A name that does not exist yet then fails
            // after the resolver's timeout, 1 s here (Kubernetes' DNS
            // answers NXDOMAIN at once).
            "--dns".into(),
            "127.0.0.1".into(),
            "--dns-option".into(),
            "timeout:1".into(),
            "--dns-option".into(),
            "attempts:1".into(),
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
            let files = if let Some(map) = source["configMap"]["name"].as_str() {
                Some(self.files_dir(
                    m,
                    (&pod, volume),
                    ("ConfigMap", map),
                    &source["configMap"],
                    None,
                ))
            } else if let Some(secret) = source["secret"]["secretName"].as_str() {
                let fs_group = spec["securityContext"]["fsGroup"].as_u64();
                Some(self.files_dir(
                    m,
                    (&pod, volume),
                    ("Secret", secret),
                    &source["secret"],
                    fs_group,
                ))
            } else {
                None
            };
            if let Some(dir) = files {
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

    /// The files of a ConfigMap or Secret volume as the kubelet lays them
    /// out: every key, or the volume's `items`, with its `defaultMode`
    /// (0644 by default), group-owned by `fs_group` when given.
    fn files_dir(
        &self,
        m: &Manifests,
        (pod, volume_name): (&str, &str),
        (kind, name): (&str, &str),
        volume: &Value,
        fs_group: Option<u64>,
    ) -> PathBuf {
        use base64::Engine;
        use std::os::unix::fs::PermissionsExt;
        // per pod (pods of one run may come from different renders) and
        // per volume (volumes of one Secret may mount different items)
        let dir = self.dir.path().join(format!("{pod}-{volume_name}"));
        if dir.exists() {
            return dir;
        }
        std::fs::create_dir(&dir).unwrap();
        let object = m.get(kind, name);
        let mut data: Vec<(String, Vec<u8>)> = Vec::new();
        for (key, value) in object["data"].as_mapping().into_iter().flatten() {
            let text = value.as_str().unwrap();
            let bytes = if kind == "Secret" {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap()
            } else {
                text.as_bytes().to_vec()
            };
            data.push((key.as_str().unwrap().to_owned(), bytes));
        }
        for (key, value) in object["stringData"].as_mapping().into_iter().flatten() {
            let text = value.as_str().unwrap().as_bytes().to_vec();
            data.push((key.as_str().unwrap().to_owned(), text));
        }
        let files: Vec<(String, String)> = match volume["items"].as_sequence() {
            Some(items) => items
                .iter()
                .map(|i| {
                    let key = i["key"].as_str().unwrap().to_owned();
                    (key, i["path"].as_str().unwrap().to_owned())
                })
                .collect(),
            None => data.iter().map(|(k, _)| (k.clone(), k.clone())).collect(),
        };
        let mode = volume["defaultMode"].as_u64().unwrap_or(0o644) as u32;
        for (key, file) in files {
            let (_, bytes) = data
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("{kind} {name} has no key {key}"));
            let path = dir.join(file);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            if let Some(gid) = fs_group {
                std::os::unix::fs::chown(&path, None, Some(gid as u32)).unwrap();
            }
        }
        for d in [self.dir.path(), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    /// `tern cluster status --json` run inside the container, as
    /// `kubectl exec` would.
    pub fn status(&self, container: &str) -> Option<serde_json::Value> {
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
    pub fn published(&self, container: &str, port: u16) -> SocketAddr {
        let out = docker_ok(&["port", container, &format!("{port}/tcp")]);
        out.lines()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("{container} {port}: {out}"))
    }

    /// Sends `probe` to `container` at its published port; `None` while
    /// nothing answers.
    pub fn probe(&self, container: &str, probe: &Probe) -> Option<HttpAnswer> {
        let addr = docker(&["port", container, &format!("{}/tcp", probe.port)]).ok()?;
        let addr: SocketAddr = addr.lines().next()?.parse().ok()?;
        http_get(addr, &probe.path, probe.timeout)
    }

    /// Waits until `probe` answers 200 on every pod in `pods`; the answers
    /// other than 200 seen meanwhile, per pod (status and body).
    pub fn wait_probe_ok(
        &self,
        what: &str,
        pods: &[(usize, String)],
        probe: &Probe,
    ) -> Vec<Vec<HttpAnswer>> {
        let mut seen: Vec<Vec<HttpAnswer>> = vec![Vec::new(); pods.len()];
        wait_for(what, || {
            let mut all = true;
            for (i, (_, container)) in pods.iter().enumerate() {
                let running = docker(&["inspect", "--format", "{{.State.Running}}", container]);
                assert_eq!(running.as_deref(), Ok("true"), "{container} stopped");
                match self.probe(container, probe) {
                    Some(a) if a.status == 200 => {}
                    Some(a) => {
                        all = false;
                        seen[i].push(a);
                    }
                    None => all = false,
                }
            }
            all.then_some(())
        });
        seen
    }
}

/// An `httpGet` probe of the rendered container (`readinessProbe`,
/// `livenessProbe`), its named port resolved to the container port.
#[derive(Debug, Clone)]
pub struct Probe {
    pub path: String,
    pub port: u16,
    /// `timeoutSeconds`: how long the kubelet waits for an answer.
    pub timeout: Duration,
}

impl Probe {
    /// The container's probe `which`; panics if it is not an `httpGet`.
    pub fn of(m: &Manifests, which: &str) -> Probe {
        let c = m.container();
        let get = &c[which]["httpGet"];
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{which} is not an httpGet probe: {:?}", c[which]));
        let port = match &get["port"] {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(name) => c["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{which}: no container port named {name}")),
            other => panic!("{which}: port {other:?}"),
        };
        let timeout = c[which]["timeoutSeconds"].as_u64().unwrap_or(1);
        Probe {
            path: path.to_owned(),
            port: u16::try_from(port).unwrap(),
            timeout: Duration::from_secs(timeout),
        }
    }
}

/// An HTTP answer: status code and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON; panics naming the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} {}: not JSON ({e})", self.status, self.body))
    }
}

/// `GET path` over HTTP/1.0 (the answer then ends with the connection), as
/// the kubelet's prober would send it; `None` if there is no connection or
/// no complete answer within `timeout`.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<HttpAnswer> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    // status line: `HTTP/1.x 200 OK`
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(HttpAnswer {
        status,
        body: body.to_owned(),
    })
}

/// Polls `check` every 200 ms until it gives a value or SETTLE passes.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let mut value = None;
    let done = super::wait_until(SETTLE, Duration::from_millis(200), || {
        value = check();
        value.is_some()
    });
    assert!(done, "timed out waiting for {what}");
    value.expect("wait_until returned true: the last check gave a value")
}

pub fn pod_dns(ordinal: usize) -> String {
    format!("{RELEASE}-{ordinal}.{RELEASE}-headless.{NAMESPACE}.svc.cluster.local")
}

/// Waits until every pod in `pods` is ready, knows the same leader and all
/// `replicas` members at their pod DNS names.
pub fn wait_converged(p: &Pods, pods: &[(usize, String)], replicas: usize) -> u64 {
    let want: BTreeSet<(u64, String)> = (0..replicas)
        .map(|i| (i as u64 + 1, format!("{}:7000", pod_dns(i))))
        .collect();
    wait_for("the pods to form one cluster", || {
        let mut leaders = BTreeSet::new();
        for (_, container) in pods {
            let running = docker(&["inspect", "--format", "{{.State.Running}}", container]);
            assert_eq!(running.as_deref(), Ok("true"), "{container} stopped");
        }
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
pub fn settle(p: &Pods, pods: &[(usize, String)]) {
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
