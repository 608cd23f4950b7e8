//! The Helm chart in `k8s/helm/tern`, rendered by the real `helm` binary
//! (installed by `k8s/test-setup.sh`), and the rendered objects as
//! `serde_yaml` values.
//!
//! Tools are found through `TERN_HELM` and `TERN_KUBERNETES_VALIDATE`, else
//! at the paths `k8s/test-setup.sh` installs them to; a missing tool fails
//! the test saying to run that script.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

/// The release name the tests install under: the chart's full name is then
/// `tern`, and its pods `tern-0`, `tern-1`, ...
pub const RELEASE: &str = "tern";
/// The namespace the tests render into.
pub const NAMESPACE: &str = "default";

fn cache() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/tern")
}

/// An installed tool: `var` if set, else `default`; it must exist.
fn tool(var: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(var).map_or(default, PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found (set {var}): run k8s/test-setup.sh first (scripts/test.sh does)",
        path.display()
    );
    path
}

pub fn helm() -> PathBuf {
    tool("TERN_HELM", cache().join("tools/helm"))
}

pub fn kubernetes_validate() -> PathBuf {
    tool(
        "TERN_KUBERNETES_VALIDATE",
        cache().join("venv/bin/kubernetes-validate"),
    )
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    super::manifest_dir().join("../k8s/helm/tern")
}

/// `helm template` output (YAML text) with extra `args` (`--set`, `-f`),
/// or helm's error output.
pub fn template_text(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm())
        .args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE, "--kube-version", "1.35.0"])
        .args(args)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm prints UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects `helm template` renders with `args`.
pub fn render(args: &[&str]) -> Manifests {
    let text = template_text(args).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"));
    let objects = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect();
    Manifests { objects, text }
}

/// Rendered objects.
pub struct Manifests {
    pub objects: Vec<Value>,
    pub text: String,
}

impl Manifests {
    /// The object of `kind` named `name`, if rendered.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// The object of `kind` named `name`; panics naming what was rendered.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name).unwrap_or_else(|| {
            let have: Vec<String> = self
                .objects
                .iter()
                .map(|o| format!("{:?}/{:?}", o["kind"], o["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} among {have:?}")
        })
    }

    /// The StatefulSet's pod template spec.
    pub fn pod_spec(&self) -> &Value {
        &self.get("StatefulSet", RELEASE)["spec"]["template"]["spec"]
    }

    /// The `tern` container of the StatefulSet.
    pub fn container(&self) -> &Value {
        self.pod_spec()["containers"]
            .as_sequence()
            .expect("containers")
            .iter()
            .find(|c| c["name"] == "tern")
            .expect("a container named tern")
    }

    /// Tern's TOML config as rendered (from the ConfigMap, or the Secret
    /// when it holds a JWT secret).
    pub fn tern_toml(&self) -> String {
        let object = self
            .find("ConfigMap", "tern-config")
            .map(|c| &c["data"])
            .or_else(|| self.find("Secret", "tern-config").map(|s| &s["stringData"]))
            .expect("a ConfigMap or Secret tern-config");
        object["tern.toml"]
            .as_str()
            .expect("tern.toml is a string")
            .to_owned()
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
