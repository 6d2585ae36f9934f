#!/usr/bin/env bash
# Install what the cluster, end-to-end and demo paths need; idempotent and a fast no-op once cached.
#
#   * Debian packages: etcd-server, prometheus, espeak-ng, sox, openssl, curl, and the real node's
#     containerd, runc, CNI plugins, iptables and iproute2 (apt, only when missing).
#   * Go-built binaries into a versioned cache outside the repo (see lib.sh), never into the repo:
#     kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy, kwok, helm 3,
#     livekit-server, CoreDNS (the real node's cluster DNS), and make lint's kubeconform, kube-linter and
#     helm-docs (the chart README).
#   * Inputs for make lint's schemas: the API server's OpenAPI document and the Prometheus Operator CRDs.
#
# Only the first run on a machine pays the Kubernetes build (about 10 minutes on 2 cores, ~3 GB Go cache).
# Usage: tests/cluster/install.sh [--no-apt | --only-apt] [--no-k8s]
#   --no-apt    skip the Debian packages (they are installed by other means)
#   --only-apt  the Debian packages alone (make test installs them first, then builds beside other work)
#   --no-k8s  skip building kube-apiserver & co., kubectl and the real node's parts (kind runs its own control
#             plane and nodes, CI has kubectl)
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(etcd-server prometheus espeak-ng sox openssl curl)
# The real node's runtime and network (tests/cluster/real-node.sh). Not with --no-k8s: kind brings its
# own nodes, and Debian's containerd would replace the Docker engine's on such a machine.
NODE_APT_PACKAGES=(containerd runc containernetworking-plugins iptables iproute2 conntrack)
want_apt=1
want_k8s=1
only_apt=0
for arg in "$@"; do
  case "$arg" in
    --no-apt) want_apt=0 ;;
    --only-apt) only_apt=1 ;;
    --no-k8s) want_k8s=0 ;;
    *) die "usage: $0 [--no-apt | --only-apt] [--no-k8s]" ;;
  esac
done

# CGO off: static binaries, and no C toolchain needed on a fresh machine.
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

install_apt() {
  local missing=() p sudo=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || sudo=(sudo)
  log "apt: installing ${missing[*]}"
  # Refresh the package lists only when the install cannot find the packages (fresh CI image).
  if ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    "${sudo[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  # Debian starts packaged daemons; our tests run their own instances on other ports.
  local unit
  for unit in etcd containerd; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$unit" 2>/dev/null; then
      "${sudo[@]}" systemctl disable --now "$unit" || true
    fi
  done
}

# Kubernetes: `go install k8s.io/kubernetes/cmd/...@vX` is refused because its go.mod replaces every
# staging module (k8s.io/api, k8s.io/apiserver, ...) with ./staging/src/... A tiny wrapper module replaces
# each of them with the published v0.<minor>.<patch> instead, then builds the commands from the module cache.
build_kubernetes() {
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy) missing=() c
  for c in "${cmds[@]}"; do [[ -x "$K8S_BIN/$c" ]] || missing+=("$c"); done
  ((${#missing[@]})) || return 0

  local staging_version="v0.${K8S_VERSION#v1.}"   # v1.35.4 -> v0.35.4
  local minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  local src="$CACHE_ROOT/k8s-$K8S_VERSION/src"
  mkdir -p "$src" "$K8S_BIN"

  # The tools file names every command we build, so `go mod tidy` keeps all their dependencies.
  local tools
  tools="$(printf '//go:build tools\n\npackage tools\n\nimport (\n'; printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "${cmds[@]}"; printf ')\n')"
  if [[ ! -f "$src/go.sum" ]] || ! grep -q "^k8s.io/kubernetes $K8S_VERSION " "$src/go.sum"; then
    log "kubernetes $K8S_VERSION: preparing the wrapper module in $src"
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION's go.mod"
    rm -f "$src/go.mod" "$src/go.sum"
    (
      cd "$src"
      go mod init storyteller.local/k8s-build >/dev/null 2>&1
      # Keep the module's own go line so the toolchain matches what upstream builds with.
      go mod edit -go="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
      sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod" | while read -r mod; do
        go mod edit -replace="$mod=$mod@$staging_version"
      done
      printf '%s\n' "$tools" >tools.go
      go get "k8s.io/kubernetes@$K8S_VERSION"
      go mod tidy -e >/dev/null 2>&1 || true
    )
  elif [[ "$(cat "$src/tools.go")" != "$tools" ]]; then
    log "kubernetes $K8S_VERSION: adding ${missing[*]} to the wrapper module"
    (cd "$src" && printf '%s\n' "$tools" >tools.go && (go mod tidy -e >/dev/null 2>&1 || true))
  fi

  # Without these stamps the binaries report v0.0.0-master and helm's kubeVersion checks fail.
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${missing[@]}"; do
    local t0=$SECONDS
    log "kubernetes $K8S_VERSION: building $c (the first one takes several minutes)"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$K8S_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"   # atomic: an interrupted build never leaves a half binary
    log "built $c in $((SECONDS - t0)) s"
  done
}

# go_install DEST_BIN NAME PACKAGE@VERSION [LDFLAGS]: modules without replace directives install directly.
# LDFLAGS: the version stamp a release build sets, where the tool prints or writes its version.
go_install() {
  local dest="$1" name="$2" spec="$3" ldflags="-s -w ${4:-}" built
  [[ -x "$dest/$name" ]] && return 0
  local t0=$SECONDS gobin
  gobin="$(mktemp -d)"
  log "go install $spec"
  GOBIN="$gobin" go install -trimpath -ldflags "$ldflags" "$spec"
  built="$(find "$gobin" -maxdepth 1 -type f | head -n1)"
  mkdir -p "$dest"
  mv "$built" "$dest/$name"
  rmdir "$gobin"
  log "built $name in $((SECONDS - t0)) s"
}

# kwok does nothing without Stage configs. Its release ships them as kustomize files next to the code:
# copy the "fast" node/pod lifecycle and the lease heartbeat (else nodes go NotReady after 40 s).
install_kwok_stages() {
  local dest="$CACHE_ROOT/kwok-$KWOK_VERSION/stages" dir f
  [[ -f "$dest/pod-ready.yaml" ]] && return 0
  dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "$dest"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cp "$dir/kustomize/stage/$f" "$dest/"
  done
  chmod 644 "$dest"/*.yaml   # the module cache is read-only
}

# KEDA's ScaledObject CRD, as KEDA's own release installs it (config/crd/bases in its Go module).
install_keda_crds() {
  [[ -f "$KEDA_CRDS/keda.sh_scaledobjects.yaml" ]] && return 0
  local dir
  dir="$(go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$dir/config/crd/bases/keda.sh_scaledobjects.yaml" ]] || die "KEDA $KEDA_VERSION has no ScaledObject CRD"
  mkdir -p "$KEDA_CRDS"
  cp "$dir/config/crd/bases/keda.sh_scaledobjects.yaml" "$KEDA_CRDS/"
  chmod 644 "$KEDA_CRDS"/*.yaml   # the module cache is read-only
}

# kube-linter's go.mod names it golang.stackrox.io/kube-linter, a path the module proxy does not serve here,
# and `go install github.com/stackrox/kube-linter@...` refuses the mismatch. So build the downloaded source
# as the main module itself (its dependencies still come from the proxy), from a writable copy.
build_kube_linter() {
  [[ -x "$KUBE_LINTER_BIN/kube-linter" ]] && return 0
  local t0=$SECONDS dir src="$CACHE_ROOT/kube-linter-$KUBE_LINTER_VERSION/src"
  dir="$(go mod download -json "github.com/stackrox/kube-linter@$KUBE_LINTER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$dir/go.mod" ]] || die "could not download github.com/stackrox/kube-linter@$KUBE_LINTER_VERSION"
  log "building kube-linter $KUBE_LINTER_VERSION from $dir"
  rm -rf "$src"
  mkdir -p "$src" "$KUBE_LINTER_BIN"
  cp -R "$dir/." "$src/"
  chmod -R u+w "$src"   # the module cache is read-only
  # The version stamp its release build sets (kube-linter version prints "development" without it).
  (cd "$src" && go build -trimpath -ldflags \
    "-s -w -X golang.stackrox.io/kube-linter/internal/version.version=${KUBE_LINTER_VERSION#v}" \
    -o "$KUBE_LINTER_BIN/kube-linter.tmp" ./cmd/kube-linter)
  mv "$KUBE_LINTER_BIN/kube-linter.tmp" "$KUBE_LINTER_BIN/kube-linter"
  rm -rf "$src"
  log "built kube-linter in $((SECONDS - t0)) s"
}

# livekit-server: newer releases (v1.13.11) replace pion's webrtc, dtls and ice modules with LiveKit's forks in
# their go.mod, and `go install ...@version` refuses a module with replace directives. So, as for kube-linter,
# build the downloaded source as the main module (its own go.mod and go.sum, replaces included) from a
# writable copy. Where the module proxy does not serve the forks, build against the upstream pion versions the
# go.mod requires instead: the forks only add WARP (rtc.enable_warp, experimental and off by default), so the
# fork-only EnableSped call is dropped. A pinned version without replace directives (v1.9.12) uses go_install.
# The command package is named "server"; install it under its usual name.
install_livekit() {
  [[ -x "$LIVEKIT_BIN/livekit-server" ]] && return 0
  local module="github.com/livekit/livekit-server" dir
  dir="$(go mod download -json "$module@$LIVEKIT_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$dir/go.mod" ]] || die "could not download $module@$LIVEKIT_VERSION"
  if ! grep -Eq '^replace[[:space:](]' "$dir/go.mod"; then
    go_install "$LIVEKIT_BIN" livekit-server "$module/cmd/server@$LIVEKIT_VERSION"
    return
  fi
  local t0=$SECONDS src="$CACHE_ROOT/livekit-server-$LIVEKIT_VERSION/src" old new mod_flag=()
  log "building livekit-server $LIVEKIT_VERSION from $dir (its go.mod has replace directives)"
  rm -rf "$src"
  mkdir -p "$src" "$LIVEKIT_BIN"
  cp -R "$dir/." "$src/"
  chmod -R u+w "$src"   # the module cache is read-only
  # Each replace line: "[replace] OLD [VERSION] => NEW VERSION".
  while read -r old new; do
    go mod download "$new" 2>/dev/null && continue
    log "livekit-server $LIVEKIT_VERSION: $new is not available, building with upstream $old"
    (cd "$src" && go mod edit -dropreplace="$old")
    mod_flag=(-mod=mod)   # go.sum gains the upstream module's hashes
  done < <(awk '/=>/ && $(NF-1) != "=>" { print ($1 == "replace" ? $2 : $1), $(NF-1) "@" $NF }' "$src/go.mod")
  if ((${#mod_flag[@]})); then
    grep -rlZ --include='*.go' '\.EnableSped(' "$src/pkg" | xargs -0r sed -i '/\.EnableSped(/d'
  fi
  (cd "$src" && go build "${mod_flag[@]}" -trimpath -ldflags "-s -w" -o "$LIVEKIT_BIN/livekit-server.tmp" ./cmd/server)
  mv "$LIVEKIT_BIN/livekit-server.tmp" "$LIVEKIT_BIN/livekit-server"   # atomic, as for kubernetes
  rm -rf "$src"
  log "built livekit-server in $((SECONDS - t0)) s"
}

# The API server's OpenAPI v2 document, from the same k8s.io/kubernetes module the control plane is built
# from: storyteller_devkit.kube_schemas turns it into kubeconform's schemas (make lint, offline).
install_openapi() {
  [[ -f "$K8S_OPENAPI" ]] && return 0
  local dir
  dir="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$dir/api/openapi-spec/swagger.json" ]] || die "k8s.io/kubernetes@$K8S_VERSION has no api/openapi-spec/swagger.json"
  mkdir -p "$(dirname "$K8S_OPENAPI")"
  cp "$dir/api/openapi-spec/swagger.json" "$K8S_OPENAPI.tmp"
  chmod 644 "$K8S_OPENAPI.tmp"
  mv "$K8S_OPENAPI.tmp" "$K8S_OPENAPI"
}

# The CRDs of the Prometheus Operator kinds the chart and the operator render, as its release ships them.
install_prometheus_crds() {
  local kinds=(servicemonitors podmonitors prometheusrules) dir k
  [[ -f "$PROMETHEUS_CRDS/monitoring.coreos.com_prometheusrules.yaml" ]] && return 0
  dir="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  mkdir -p "$PROMETHEUS_CRDS"
  for k in "${kinds[@]}"; do
    [[ -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$k.yaml" ]] ||
      die "prometheus-operator $PROMETHEUS_OPERATOR_VERSION has no $k CRD"
    cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$k.yaml" "$PROMETHEUS_CRDS/"
  done
  chmod 644 "$PROMETHEUS_CRDS"/*.yaml   # the module cache is read-only
}

((want_k8s)) && APT_PACKAGES+=("${NODE_APT_PACKAGES[@]}")
((want_apt)) && install_apt
((only_apt)) && exit 0
# Go is preinstalled under /usr/local/go on many machines without being on a non-login PATH.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH="$PATH:/usr/local/go/bin"; fi
command -v go >/dev/null || die "Go is required to build the cluster binaries (https://go.dev/doc/install)"
((want_k8s)) && build_kubernetes
go_install "$KWOK_BIN" kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
install_kwok_stages
install_keda_crds
go_install "$HELM_BIN" helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
# The real node's cluster DNS (Service names, as on any cluster); its go.mod has no replace directives.
((want_k8s)) && go_install "$COREDNS_BIN" coredns "github.com/coredns/coredns@$COREDNS_VERSION"
install_livekit
# make lint (tests/cluster/lint-manifests.sh) and the chart README.
go_install "$KUBECONFORM_BIN" kubeconform "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
  "-X main.version=$KUBECONFORM_VERSION"
build_kube_linter
# Stamped so the README footer names the version, as a released helm-docs writes it.
go_install "$HELM_DOCS_BIN" helm-docs "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION" \
  "-X main.version=${HELM_DOCS_VERSION#v}"
install_openapi
install_prometheus_crds
log "tools ready in $CACHE_ROOT (PATH: eval \"\$(tests/cluster/env.sh)\")"
