#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kubectl) from Go modules
# into a versioned cache outside the repository. A second run finds the binaries and does nothing.
#
# Why a wrapper module: k8s.io/kubernetes replaces its k8s.io/* staging modules with ./staging paths, which
# `go install pkg@version` refuses. A throwaway module that requires k8s.io/kubernetes and replaces every
# staging module with its published v0.X.Y tag builds the same binaries.
set -euo pipefail

# The versions and the cache folder are decided in binaries.ts, which runs this script.
K8S_VERSION="${MTLS_K8S_VERSION:?set by binaries.ts}"
ETCD_VERSION="${MTLS_ETCD_VERSION:?set by binaries.ts}"
CACHE="${MTLS_OPERATOR_CACHE:?set by binaries.ts}"
HELM_VERSION="${MTLS_HELM_VERSION:?set by binaries.ts}"
KUBE_ROUTER_VERSION="${MTLS_KUBE_ROUTER_VERSION:?set by binaries.ts}"
K8S_DIR="$CACHE/kubernetes-v$K8S_VERSION"
ETCD_DIR="$CACHE/etcd-v$ETCD_VERSION"
STAGING_VERSION="v0.${K8S_VERSION#*.}"   # 1.35.4 -> v0.35.4

log() { printf '[control-plane build] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "Go is required to build the control plane (https://go.dev/dl); or set MTLS_KUBE_APISERVER, MTLS_KUBE_CONTROLLER_MANAGER, MTLS_ETCD, MTLS_KUBECTL"; exit 1; }

build_module_binaries() { # <workdir> <module> <version> <ldflags> <out-dir> <pkg>...
  local work="$1" module="$2" version="$3" ldflags="$4" out="$5"; shift 5
  mkdir -p "$work" "$out"
  (
    cd "$work"
    printf 'module mtls-operator.local/controlplane-build\n\ngo 1.25\n' > go.mod
    go mod edit -require="$module@$version"
    if [ "$module" = k8s.io/kubernetes ]; then
      local gomod
      gomod=$(go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
      grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | while read -r m; do
        go mod edit -replace="$m=$m@$STAGING_VERSION"
      done
    fi
    for pkg in "$@"; do
      local name; name=$(basename "$pkg")
      [ "$name" = v3 ] && name=etcd
      if [ -x "$out/$name" ]; then log "$name: cached at $out/$name"; continue; fi
      log "building $name $version (first run only; about 5-15 minutes each on 2 cores)..."
      local start=$SECONDS
      GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$name.partial" "$pkg"
      mv "$out/$name.partial" "$out/$name"
      log "$name: built in $((SECONDS - start))s -> $out/$name"
    done
  )
}

K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
ETCD_LDFLAGS="-s -w"

build_module_binaries "$CACHE/work/etcd-v$ETCD_VERSION" go.etcd.io/etcd/server/v3 "v$ETCD_VERSION" "$ETCD_LDFLAGS" "$ETCD_DIR" \
  go.etcd.io/etcd/server/v3
build_module_binaries "$CACHE/work/kubernetes-v$K8S_VERSION" k8s.io/kubernetes "v$K8S_VERSION" "$K8S_LDFLAGS" "$K8S_DIR" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy

# Helm (for the chart's tests): v3.7+ has no replace directives, so `go install` works directly.
HELM_DIR="$CACHE/helm-v$HELM_VERSION"
if [ -x "$HELM_DIR/helm" ]; then
  log "helm: cached at $HELM_DIR/helm"
else
  log "building helm v$HELM_VERSION (first run only; about 2-4 minutes)..."
  start=$SECONDS
  GOBIN="$HELM_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  log "helm: built in $((SECONDS - start))s -> $HELM_DIR/helm"
fi

# kube-router, for the local node's NetworkPolicy enforcement only (its firewall; routing and proxy stay off).
ROUTER_DIR="$CACHE/kube-router-v$KUBE_ROUTER_VERSION"
if [ -x "$ROUTER_DIR/kube-router" ]; then
  log "kube-router: cached at $ROUTER_DIR/kube-router"
else
  log "building kube-router v$KUBE_ROUTER_VERSION (first run only; about 3-5 minutes)..."
  start=$SECONDS
  GOBIN="$ROUTER_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@v$KUBE_ROUTER_VERSION"
  log "kube-router: built in $((SECONDS - start))s -> $ROUTER_DIR/kube-router"
fi

log "ready: $ETCD_DIR/etcd, $K8S_DIR/{kube-apiserver,kube-controller-manager,kubectl,kube-scheduler,kubelet,kube-proxy}, $HELM_DIR/helm, $ROUTER_DIR/kube-router"
