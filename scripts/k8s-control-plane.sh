#!/usr/bin/env bash
# Builds a real Kubernetes control plane for the `k8s` tests: kube-apiserver,
# kube-controller-manager and kube-scheduler of one pinned release, its kubectl (kustomize of
# the overlays, server-side apply; Debian's kubectl is 1.20), and the etcd that release
# is built against (Debian's etcd is too old for it), all with `go build` from the Go module
# proxy — the same modules a Kubernetes release is made of, nothing downloaded from elsewhere.
#
# With the control plane, the node stack of `citus-pipeline k8s sandbox`: kubelet and kube-proxy
# of the same release, containerd (and its ctr and runc shim), runc (cgo, against Debian's
# libseccomp), CoreDNS, MetalLB's controller and speaker and Rancher's local-path-provisioner
# (with their own deployment manifests), kube-router's NetworkPolicy controller, each from its own module on the proxy
# (`go install module@version`: their dependencies resolved as their own releases pin them), and
# the pause binary from the release's own C source (build/pause/linux/pause.c), linked static.
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
NODE_COMPONENTS=(containerd ctr containerd-shim-runc-v2 runc coredns metallb-controller metallb-speaker
                 local-path-provisioner kube-router pause metallb-native.yaml local-path-storage.yaml)
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
RUNC_VERSION="${RUNC_VERSION:-v1.5.3}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
# v0.16 needs an frr-k8s release the proxy does not serve; v0.15.2 builds from what it does
METALLB_VERSION="${METALLB_VERSION:-v0.15.2}"
LOCAL_PATH_VERSION="${LOCAL_PATH_VERSION:-v0.0.30}"
# NetworkPolicies: kube-router's firewall controller (iptables + ipset). The proxy serves v2.1.0
# only; built with this Go (its standard library's fixes), IPv4 only in the sandbox (v2.1.0's
# known flaw is IPv6 policy). kube-network-policies (SIG Network) needs the kernel's nft queue
# expression, which this machine lacks.
KUBE_ROUTER_VERSION="${KUBE_ROUTER_VERSION:-v2.1.0}"
node_pin="$K8S_RELEASE containerd-$CONTAINERD_VERSION runc-$RUNC_VERSION coredns-$COREDNS_VERSION metallb-$METALLB_VERSION local-path-$LOCAL_PATH_VERSION kube-router-$KUBE_ROUTER_VERSION"
node_stamp="$BIN/.node-pin"
say() { printf '\033[1m[k8s-control-plane]\033[0m %s\n' "$*" >&2; }

stamp="$BIN/.pin"
if [ "$(cat "$stamp" 2>/dev/null)" = "$K8S_RELEASE" ] && [ "$(cat "$node_stamp" 2>/dev/null)" = "$node_pin" ]; then
  ok=1
  for c in "${COMPONENTS[@]}" "${NODE_COMPONENTS[@]}"; do [ -e "$BIN/$c" ] || ok=0; done
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

# The node stack -------------------------------------------------------------------------------
if [ "$(cat "$node_stamp" 2>/dev/null || true)" != "$node_pin" ]; then
  gobin="$(mktemp -d)"
  trap 'rm -rf "$gobin"' EXIT
  say "go install containerd $CONTAINERD_VERSION (containerd, ctr, containerd-shim-runc-v2)"
  for c in containerd ctr containerd-shim-runc-v2; do
    GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION"
  done
  say "go install runc $RUNC_VERSION (cgo, seccomp)"
  GOBIN="$gobin" CGO_ENABLED=1 go install -trimpath -tags seccomp \
    -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
  say "go install coredns $COREDNS_VERSION"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
  say "go install metallb $METALLB_VERSION (controller, speaker)"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "go.universe.tf/metallb/controller@$METALLB_VERSION" "go.universe.tf/metallb/speaker@$METALLB_VERSION"
  mv "$gobin/controller" "$gobin/metallb-controller"
  mv "$gobin/speaker" "$gobin/metallb-speaker"
  say "go install local-path-provisioner $LOCAL_PATH_VERSION"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
  say "go install kube-router $KUBE_ROUTER_VERSION (its firewall controller: NetworkPolicies)"
  GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
  # their own deployment manifests, applied by the sandbox with its images and paths
  modcache="$(go env GOMODCACHE)"
  install -m 0644 "$modcache/go.universe.tf/metallb@$METALLB_VERSION/config/manifests/metallb-native.yaml" "$gobin/"
  install -m 0644 "$modcache/github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION/deploy/local-path-storage.yaml" "$gobin/"
  say "cc pause (build/pause/linux/pause.c of k8s.io/kubernetes v$K8S_RELEASE)"
  pause_c="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_RELEASE/build/pause/linux/pause.c"
  cc -Os -Wall -Werror -static -DVERSION="v$K8S_RELEASE" -o "$gobin/pause" "$pause_c"
  strip "$gobin/pause"
  mv "$gobin"/* "$BIN/"
  echo "$node_pin" > "$node_stamp"
fi
echo "$BIN"
