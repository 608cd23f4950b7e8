//! The Helm chart (`k8s/helm/tern`), checked without a Kubernetes cluster:
//! `helm lint --strict` (which enforces `values.schema.json`),
//! `kubernetes-validate --strict` on everything `helm template` renders (it
//! catches misspelled fields that helm lets through), and assertions on the
//! rendered objects, the way helm-unittest would. Tern's config rendered
//! into the ConfigMap is parsed by Tern's own config loader.
//!
//! Needs `k8s/test-setup.sh` (helm, kubectl, kubernetes-validate), which
//! `scripts/test.sh` runs first.

mod common;

use std::process::Command;

use broker::config::{Config, ListenerProtocol};
use common::helm::{self, render, template_text, Manifests};
use serde_yaml::Value;

const CI_VALUES: &str = "ci/tls-auth-5.yaml";

fn ci_values() -> String {
    helm::chart_dir().join(CI_VALUES).display().to_string()
}

/// The rendered config as Tern reads it. `[telemetry]` belongs to an
/// exporter built on another branch, which this binary does not know yet:
/// it is checked as text, and the rest (`[http]` included) by the config
/// loader.
fn tern_config(m: &Manifests) -> Config {
    let toml = m.tern_toml();
    let known: String = toml
        .split("\n[")
        .filter(|table| !table.starts_with("telemetry]"))
        .collect::<Vec<_>>()
        .join("\n[");
    Config::from_toml(&known).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name}"))
}

fn ports(object: &Value, field: &str) -> Vec<(String, u64)> {
    object[field]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p[if field == "ports" && p["containerPort"].is_number() {
                    "containerPort"
                } else {
                    "port"
                }]
                .as_u64()
                .unwrap(),
            )
        })
        .collect()
}

/// The container port an `httpGet` probe of the container targets, its
/// named port resolved through the container's `ports`.
fn probe_port(c: &Value, probe: &str) -> u64 {
    let port = &c[probe]["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().unwrap_or_else(|| panic!("{probe}: {port:?}"));
    ports(c, "ports")
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{probe}: no container port {name}"))
        .1
}

#[test]
fn chart_lints_strict_with_default_and_ci_values() {
    for extra in [vec![], vec!["-f", CI_VALUES]] {
        let out = Command::new(helm::helm())
            .args(["lint", "--strict", "."])
            .args(&extra)
            .current_dir(helm::chart_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm lint --strict {extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn schema_refuses_bad_values_naming_them() {
    for (set, named) in [
        ("replicaCount=0", "/replicaCount"),
        ("service.type=Ingress", "/service/type"),
        ("config.mqtt.max_inflite=3", "max_inflite"),
        ("tls.clientAuth=sometimes", "/tls/clientAuth"),
        ("podAntiAffinity=maybe", "/podAntiAffinity"),
        ("persistence.size=lots", "/persistence/size"),
        ("unknownTopLevel=1", "unknownTopLevel"),
    ] {
        let e = template_text(&["--set", set]).expect_err(set);
        assert!(e.contains(named), "{set}: {e}");
    }
    // values that cannot work are refused by the templates
    let e = template_text(&["--set", "tls.enabled=true"]).unwrap_err();
    assert!(e.contains("tls.existingSecret"), "{e}");
    let e = template_text(&["--set", "auth.jwt.enabled=true"]).unwrap_err();
    assert!(e.contains("auth.jwt.publicKey"), "{e}");
}

#[test]
fn every_rendered_manifest_passes_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().unwrap();
    let ci = ci_values();
    let variants: [(&str, Vec<&str>); 6] = [
        ("default", vec![]),
        ("ci-tls-auth-5", vec!["-f", &ci]),
        ("one-replica", vec!["--set", "replicaCount=1"]),
        (
            "nodeport-no-persistence",
            vec![
                "--set",
                "service.type=NodePort,service.nodePorts.mqtt=31883,persistence.enabled=false",
            ],
        ),
        (
            "hs256-existing-secrets",
            vec![
                "--set",
                "auth.jwt.enabled=true,auth.jwt.algorithm=HS256,auth.jwt.secret=s3cret,\
                 auth.existingPasswordSecret=pw,acl.existingSecret=acl,\
                 tls.enabled=true,tls.existingSecret=certs,podAntiAffinity=hard",
            ],
        ),
        ("no-http", vec!["--set", "http.enabled=false"]),
    ];
    let mut files = Vec::new();
    for (name, args) in &variants {
        let text = template_text(args).unwrap_or_else(|e| panic!("{name}: {e}"));
        files.push(helm::write(dir.path(), &format!("{name}.yaml"), &text));
    }
    let out = Command::new(helm::kubernetes_validate())
        .args(["--strict", "-k", "1.35.0"])
        .args(&files)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    // every object was checked; only the ServiceMonitor (a CRD) has no schema
    for line in report.lines().filter(|l| !l.contains(" passed ")) {
        assert!(
            line.contains("Couldn't find schema for kind ServiceMonitor"),
            "{line}\n{report}"
        );
    }
    let passed = report.lines().filter(|l| l.contains(" passed ")).count();
    assert!(passed >= 6 * 5, "{report}");
}

#[test]
fn default_values_render_a_3_node_statefulset_with_probes_storage_and_hardening() {
    let m = render(&[]);
    let sts = m.get("StatefulSet", "tern");
    assert_eq!(sts["spec"]["replicas"], 3);
    assert_eq!(sts["spec"]["serviceName"], "tern-headless");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel");

    let pod = m.pod_spec();
    assert_eq!(pod["terminationGracePeriodSeconds"], 60);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    assert_eq!(pod["securityContext"]["fsGroup"], 10001);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );

    let c = m.container();
    assert_eq!(c["image"], "tern:0.1.0");
    assert!(c["command"].is_null(), "the image's ENTRYPOINT runs tern");
    assert_eq!(strs(&c["args"]), ["--config", "/etc/tern/config/tern.toml"]);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&c["securityContext"]["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http");
    assert_eq!(
        ports(c, "ports"),
        [
            ("mqtt".to_owned(), 1883),
            ("ws".to_owned(), 8083),
            ("cluster".to_owned(), 7000),
            ("http".to_owned(), 8080)
        ]
    );
    assert_eq!(
        env(c, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env(c, "TERN_CLUSTER_ADVERTISE")["value"],
        "$(POD_NAME).tern-headless.$(NAMESPACE).svc.cluster.local:7000"
    );
    assert_eq!(
        env(c, "TERN_MQTT_ADVERTISE")["value"],
        "$(POD_NAME).tern-headless.$(NAMESPACE).svc.cluster.local:1883"
    );

    // the store on a PersistentVolumeClaim per pod, at /var/lib/tern
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let data = mounts.iter().find(|v| v["name"] == "data").unwrap();
    assert_eq!(data["mountPath"], "/var/lib/tern");

    // peers find each other by DNS before they are ready
    let headless = m.get("Service", "tern-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    let client = m.get("Service", "tern");
    assert_eq!(client["spec"]["type"], "ClusterIP");
    assert_eq!(
        ports(&client["spec"], "ports"),
        [("mqtt".to_owned(), 1883), ("ws".to_owned(), 8083)]
    );
    assert_eq!(
        m.get("PodDisruptionBudget", "tern")["spec"]["maxUnavailable"],
        1
    );
    assert!(m.find("ServiceMonitor", "tern").is_none());
    assert!(m.find("Secret", "tern-auth").is_none());
}

#[test]
fn default_config_seeds_every_pod_by_dns_and_derives_ids_from_host_names() {
    let m = render(&[]);
    let toml = m.tern_toml();
    assert!(
        toml.contains("\n[http]\nbind = \"0.0.0.0:8080\"\n"),
        "{toml}"
    );
    assert!(!toml.contains("[telemetry]"), "{toml}");
    let mut config = tern_config(&m);
    assert_eq!(config.data_dir, std::path::PathBuf::from("/var/lib/tern"));
    assert_eq!(config.cluster.listen, "0.0.0.0:7000".parse().unwrap());
    assert_eq!(
        config.cluster.seeds,
        (0..3)
            .map(|i| format!("tern-{i}.tern-headless.default.svc.cluster.local:7000"))
            .collect::<Vec<_>>()
    );
    let listeners: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.bind.to_string(), l.protocol))
        .collect();
    assert_eq!(
        listeners,
        [
            ("0.0.0.0:1883".to_owned(), ListenerProtocol::Tcp),
            ("0.0.0.0:8083".to_owned(), ListenerProtocol::Ws)
        ]
    );
    // queued messages and the page cache fit in the 1Gi memory limit
    assert_eq!(config.limits.max_queued_bytes, 512 * 1024 * 1024);
    assert_eq!(config.storage.cache_mb, 128);
    assert_eq!(
        m.container()["resources"]["limits"]["memory"],
        "1Gi",
        "the limit the defaults above are sized for"
    );
    assert!(config.cluster.node_id_from_hostname);
    config.derive_node_id(|| Ok("tern-2".into())).unwrap();
    assert_eq!(config.cluster.node_id, 3);
    // a pod stop drains within the grace period, before the kubelet's SIGKILL
    let grace = m.pod_spec()["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert_eq!(config.cluster.drain_timeout_secs, 45);
    assert!(config.cluster.drain_timeout_secs + 10 <= grace);

    // one replica: a cluster of one seeded with itself
    let one = tern_config(&render(&["--set", "replicaCount=1"]));
    assert_eq!(
        one.cluster.seeds,
        ["tern-0.tern-headless.default.svc.cluster.local:7000"]
    );
}

#[test]
fn ci_values_render_tls_auth_acl_jwt_and_5_replicas() {
    let m = render(&["-f", &ci_values()]);
    assert_eq!(m.get("StatefulSet", "tern")["spec"]["replicas"], 5);
    let toml = m.tern_toml();
    assert!(
        toml.contains("[telemetry]\notlp_endpoint = \"http://otel-collector.monitoring:4317\""),
        "{toml}"
    );
    let config = tern_config(&m);
    assert_eq!(config.cluster.seeds.len(), 5);
    assert_eq!(
        config.cluster.seeds[4],
        "tern-4.tern-headless.default.svc.cluster.local:7000"
    );
    let tls = config
        .listeners
        .iter()
        .find(|l| l.protocol == ListenerProtocol::Tls)
        .expect("a TLS listener");
    assert_eq!(tls.bind, "0.0.0.0:8883".parse().unwrap());
    let tls = tls.tls.as_ref().unwrap();
    assert_eq!(tls.cert, std::path::PathBuf::from("/etc/tern/tls/tls.crt"));
    assert!(!config.auth.allow_anonymous && config.auth.use_identity_as_username);
    assert_eq!(
        config.auth.password_file.as_deref(),
        Some(std::path::Path::new("/etc/tern/auth/passwd"))
    );
    let jwt = config.auth.jwt.as_ref().unwrap();
    assert_eq!(jwt.username_claim, "device");
    assert_eq!(
        config.acl.file.as_deref(),
        Some(std::path::Path::new("/etc/tern/acl/acl"))
    );
    assert_eq!(config.mqtt.max_inflight, 64);
    assert_eq!(config.mqtt.client_id_prefix, "ci-");
    assert_eq!(config.limits.max_connect_rate, 50);
    assert_eq!(config.storage.cache_mb, 64);

    // the files the config names are mounted from the Secrets
    let c = m.container();
    let mounts: Vec<(&str, &str)> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    for want in [
        ("tls", "/etc/tern/tls"),
        ("passwords", "/etc/tern/auth"),
        ("acl", "/etc/tern/acl"),
        ("jwt", "/etc/tern/jwt"),
    ] {
        assert!(mounts.contains(&want), "{want:?} in {mounts:?}");
    }
    let tls_secret = m.get("Secret", "tern-tls");
    assert_eq!(tls_secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        assert!(tls_secret["data"][key].is_string(), "{key}");
    }
    let auth = m.get("Secret", "tern-auth");
    for key in ["passwd", "acl", "jwt.pem"] {
        assert!(auth["data"][key].is_string(), "{key}");
    }

    let client = m.get("Service", "tern");
    assert_eq!(client["spec"]["type"], "LoadBalancer");
    assert_eq!(client["spec"]["externalTrafficPolicy"], "Local");
    assert_eq!(
        ports(&client["spec"], "ports"),
        [
            ("mqtt".to_owned(), 1883),
            ("mqtt-tls".to_owned(), 8883),
            ("ws".to_owned(), 8083)
        ]
    );
    let anti = &m.pod_spec()["affinity"]["podAntiAffinity"];
    assert!(anti["requiredDuringSchedulingIgnoredDuringExecution"].is_sequence());

    let monitor = m.get("ServiceMonitor", "tern");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["tern.io/service"],
        "headless"
    );
    assert!(
        m.get("Service", "tern-headless")["metadata"]["labels"]["tern.io/service"] == "headless"
    );
    assert!(m.text.contains("storageClassName: fast-ssd"));
}

#[test]
fn hs256_secret_moves_the_config_into_a_secret() {
    let m = render(&[
        "--set",
        "auth.jwt.enabled=true,auth.jwt.algorithm=HS256,auth.jwt.secret=s3cret",
    ]);
    assert!(m.find("ConfigMap", "tern-config").is_none());
    let config = tern_config(&m);
    assert_eq!(
        config.auth.jwt.as_ref().unwrap().secret.as_deref(),
        Some("s3cret")
    );
    let volume = m.pod_spec()["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "tern-config");
}

#[test]
fn probes_get_readyz_and_healthz_on_the_port_the_rendered_config_binds() {
    for (args, port) in [(vec![], 8080), (vec!["--set", "http.port=9090"], 9090)] {
        let m = render(&args);
        let c = m.container();
        let bind = tern_config(&m)
            .http
            .bind_addr()
            .unwrap()
            .unwrap_or_else(|| panic!("{args:?}: [http] is off"));
        assert_eq!(bind, format!("0.0.0.0:{port}").parse().unwrap(), "{args:?}");
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{args:?} {probe}");
            assert_eq!(
                probe_port(c, probe),
                u64::from(bind.port()),
                "{args:?} {probe}"
            );
            assert!(c[probe]["tcpSocket"].is_null(), "{args:?} {probe}");
        }
    }
}

#[test]
fn without_the_http_endpoint_probes_use_the_mqtt_port() {
    let m = render(&["--set", "http.enabled=false"]);
    let c = m.container();
    assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], "mqtt");
    assert_eq!(c["livenessProbe"]["tcpSocket"]["port"], "mqtt");
    assert!(c["readinessProbe"]["httpGet"].is_null());
    assert!(!ports(c, "ports").iter().any(|(name, _)| name == "http"));
    // off in the config too, not Tern's default 0.0.0.0:8080
    assert!(m.tern_toml().contains("\n[http]\n"), "{}", m.tern_toml());
    assert_eq!(tern_config(&m).http.bind_addr().unwrap(), None);
    let e = template_text(&[
        "--set",
        "http.enabled=false,monitoring.serviceMonitor.enabled=true",
    ])
    .unwrap_err();
    assert!(e.contains("http.enabled"), "{e}");
}
