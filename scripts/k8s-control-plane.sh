#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the `k8s` tests: kube-apiserver,
# kube-controller-manager and kube-scheduler of one pinned release, its kubectl (kustomize of
# the overlays, server-side apply; Debian's kubectl is 1.20), and the etcd that release
# is built against (Debian's etcd is too old for it), all with `go build` from the Go module
# proxy — the same modules a Kubernetes release is made of, nothing downloaded from elsewhere.
#
# The binaries go to a cache outside the repository and are rebuilt only when the pin changes:
#   ${CITUS_PIPELINE_K8S_BIN:-$HOME/.cache/citus-pipeline/k8s-<release>}/bin
# Prints that bin directory on its last line. Idempotent. Needs Go ≥ the release's go line.
set -euo pipefail

K8S_RELEASE="${K8S_RELEASE:-1.35.4}"
# The staging modules (k8s.io/api, k8s.io/apiserver, …) are published as v0.<minor>.<patch>.
STAGING_VERSION="v0.${K8S_RELEASE#1.}"
CACHE="${CITUS_PIPELINE_K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/citus-pipeline/k8s-${K8S_RELEASE}}"
BIN="$CACHE/bin"
KUBE_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
COMPONENTS=("${KUBE_COMPONENTS[@]}" etcd)
say() { printf '\033[1m[k8s-control-plane]\033[0m %s\n' "$*" >&2; }

stamp="$BIN/.pin"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$K8S_RELEASE" ]; then
  ok=1
  for c in "${COMPONENTS[@]}"; do [ -x "$BIN/$c" ] || ok=0; done
  if [ "$ok" = 1 ]; then echo "$BIN"; exit 0; fi
fi
command -v go >/dev/null || { echo "k8s-control-plane: the Go toolchain is missing (go not on PATH)" >&2; exit 1; }

mod="$CACHE/module"
mkdir -p "$mod" "$BIN"
cd "$mod"
say "resolving k8s.io/kubernetes v$K8S_RELEASE from the Go module proxy"
go mod download -json "k8s.io/kubernetes@v$K8S_RELEASE" >/dev/null
kmod="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_RELEASE/go.mod"

# k8s.io/kubernetes requires its staging modules as v0.0.0 and replaces them with directories
# of its own tree; a module that depends on it pins each to the same release instead.
# etcd is pinned to the version this release's go.mod names, so the server matches its client.
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$kmod")"
go_line="$(awk '$1 == "go" {print $2; exit}' "$kmod")"
{
  echo "module citus-pipeline.local/k8s-control-plane"
  echo
  echo "go $go_line"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes v$K8S_RELEASE"
  echo "	go.etcd.io/etcd/server/v3 $etcd_version"
  echo ")"
  echo
  echo "replace ("
  sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$kmod"
  echo ")"
  echo
  echo "tool ("
  echo "	k8s.io/kubernetes/cmd/kube-apiserver"
  echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
  echo "	k8s.io/kubernetes/cmd/kube-scheduler"
  echo "	k8s.io/kubernetes/cmd/kubectl"
  echo "	k8s.io/kubernetes/cmd/kubelet"
  echo "	k8s.io/kubernetes/cmd/kube-proxy"
  echo "	go.etcd.io/etcd/server/v3"
  echo ")"
} > go.mod
say "go mod tidy (etcd $etcd_version, staging modules $STAGING_VERSION)"
GOFLAGS=-mod=mod go mod tidy >/dev/null

# The release's own build flags: no cgo, and version stamps so `kube-apiserver --version`
# and the discovery endpoint report the pinned release, not v0.0.0.
minor="${K8S_RELEASE#1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$K8S_RELEASE -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done
# A binary already built for this pin is kept: adding a component costs only its own build.
built_pin="$(cat "$stamp" 2>/dev/null || true)"
for c in "${KUBE_COMPONENTS[@]}"; do
  if [ "$built_pin" = "$K8S_RELEASE" ] && [ -x "$BIN/$c" ]; then continue; fi
  say "go build $c (several minutes on two cores)"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$BIN/$c" "k8s.io/kubernetes/cmd/$c"
done
if [ "$built_pin" != "$K8S_RELEASE" ] || [ ! -x "$BIN/etcd" ]; then
  say "go build etcd $etcd_version"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi
echo "$K8S_RELEASE" > "$stamp"
echo "$BIN"
