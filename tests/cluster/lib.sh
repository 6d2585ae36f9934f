# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings for install.sh, up.sh, down.sh and env.sh. Source it; it defines variables and helpers only.
#
# Everything is overridable from the environment so a user can pin other versions or move the cache:
#   STORYTELLER_CACHE        where built binaries live (default ~/.cache/storyteller), outside the repo
#   STORYTELLER_STATE        where a running control plane keeps certs, etcd data, logs and pids
#   STORYTELLER_K8S_VERSION  kube-apiserver/controller-manager/scheduler/kubectl version (k8s.io/kubernetes tag)
#   STORYTELLER_ETCD_PORT / STORYTELLER_API_PORT  loopback ports (defaults avoid 8081, 9100 and 7880-7882)
#   STORYTELLER_PLANE        0 (the default) or 1-9: one more local control plane beside the others, with its
#                            own state directory, ports and kwok pod range (each test worker runs one; the
#                            real node joins plane 0 only)

CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_DIR/../.." && pwd)"

K8S_VERSION="${STORYTELLER_K8S_VERSION:-v1.35.4}"
KWOK_VERSION="${STORYTELLER_KWOK_VERSION:-v0.8.0}"
# helm 3 on purpose: helm 4 changed flags and behaviour the chart tests rely on.
HELM_VERSION="${STORYTELLER_HELM_VERSION:-v3.22.0}"
# Newer releases replace pion modules with LiveKit forks in go.mod: install.sh builds those from source.
LIVEKIT_VERSION="${STORYTELLER_LIVEKIT_VERSION:-v1.13.11}"
# Only KEDA's CRDs (no build): the cluster tests check the ScaledObjects the operator renders against them.
KEDA_VERSION="${STORYTELLER_KEDA_VERSION:-v2.21.0}"
COREDNS_VERSION="${STORYTELLER_COREDNS_VERSION:-v1.14.7}"
# make lint: manifests against schemas generated from K8S_VERSION's OpenAPI document, and the chart's linter.
KUBECONFORM_VERSION="${STORYTELLER_KUBECONFORM_VERSION:-v0.8.0}"
# Built from github.com/stackrox/kube-linter: its golang.stackrox.io vanity path is not served here.
KUBE_LINTER_VERSION="${STORYTELLER_KUBE_LINTER_VERSION:-v0.8.3}"
HELM_DOCS_VERSION="${STORYTELLER_HELM_DOCS_VERSION:-v1.14.2}"
# Only the ServiceMonitor, PodMonitor and PrometheusRule CRDs (no build): schemas for make lint.
PROMETHEUS_OPERATOR_VERSION="${STORYTELLER_PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"

CACHE_ROOT="${STORYTELLER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/storyteller}"
# One directory per tool and version: bumping a version builds next to the old one, never over it.
K8S_BIN="$CACHE_ROOT/k8s-$K8S_VERSION/bin"
KWOK_BIN="$CACHE_ROOT/kwok-$KWOK_VERSION/bin"
KWOK_STAGES="$CACHE_ROOT/kwok-$KWOK_VERSION/stages"
HELM_BIN="$CACHE_ROOT/helm-$HELM_VERSION/bin"
LIVEKIT_BIN="$CACHE_ROOT/livekit-server-$LIVEKIT_VERSION/bin"
KEDA_CRDS="$CACHE_ROOT/keda-$KEDA_VERSION/crds"
COREDNS_BIN="$CACHE_ROOT/coredns-$COREDNS_VERSION/bin"
KUBECONFORM_BIN="$CACHE_ROOT/kubeconform-$KUBECONFORM_VERSION/bin"
KUBE_LINTER_BIN="$CACHE_ROOT/kube-linter-$KUBE_LINTER_VERSION/bin"
HELM_DOCS_BIN="$CACHE_ROOT/helm-docs-$HELM_DOCS_VERSION/bin"
K8S_OPENAPI="$CACHE_ROOT/k8s-$K8S_VERSION/openapi/swagger.json"   # the API server's OpenAPI v2 document
PROMETHEUS_CRDS="$CACHE_ROOT/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/crds"
# JSON schemas for kubeconform (storyteller_devkit.kube_schemas writes them when its inputs change).
KUBE_SCHEMAS="$CACHE_ROOT/kube-schemas-$K8S_VERSION"
TOOLS_PATH="$K8S_BIN:$KWOK_BIN:$HELM_BIN:$LIVEKIT_BIN:$COREDNS_BIN:$KUBECONFORM_BIN:$KUBE_LINTER_BIN:$HELM_DOCS_BIN"

PLANE="${STORYTELLER_PLANE:-0}"
[[ "$PLANE" =~ ^[0-9]$ ]] || { printf '[cluster] ERROR: STORYTELLER_PLANE must be 0-9, not %s\n' "$PLANE" >&2; exit 1; }
PORT_OFFSET=$((PLANE * 100))   # plane N's ports are plane 0's plus N*100
if ((PLANE)); then
  STATE_DIR="${STORYTELLER_STATE:-$REPO_ROOT/.state/cluster-$PLANE}"
else
  STATE_DIR="${STORYTELLER_STATE:-$REPO_ROOT/.state/cluster}"   # /.state/ is git-ignored
fi
ETCD_PORT="${STORYTELLER_ETCD_PORT:-$((23790 + PORT_OFFSET))}"
ETCD_PEER_PORT="${STORYTELLER_ETCD_PEER_PORT:-$((23800 + PORT_OFFSET))}"
API_PORT="${STORYTELLER_API_PORT:-$((16443 + PORT_OFFSET))}"
# Not the default 10257/10259: a laptop may run a real cluster.
KCM_PORT="${STORYTELLER_KCM_PORT:-$((16457 + PORT_OFFSET))}"
SCHED_PORT="${STORYTELLER_SCHED_PORT:-$((16459 + PORT_OFFSET))}"
KWOK_PORT="${STORYTELLER_KWOK_PORT:-$((16460 + PORT_OFFSET))}"
KUBECONFIG_PATH="$STATE_DIR/kubeconfig"
SERVICE_CIDR="10.0.0.0/24"   # its first address, 10.0.0.1, is in the serving certificate
# kwok gives pods addresses from here. On loopback, so a test can stand in for a pod's HTTP endpoints
# (the worker's :8081/worker the operator reads) by listening on that pod's own address.
POD_CIDR="${STORYTELLER_POD_CIDR:-127.$((77 + PLANE)).0.0/16}"
FAKE_NODES="${STORYTELLER_FAKE_NODES:-2}"

# Processes in start order; down.sh stops them in reverse (the apiserver before etcd, see stop_all).
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# wait_for DESCRIPTION DEADLINE_SECONDS COMMAND...: retry COMMAND until it succeeds or the deadline passes.
wait_for() {
  local what="$1" deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# pid_alive PID: the process exists and is not a zombie (an unreaped zombie holds no port and no memory).
pid_alive() {
  local stat
  [[ -n "${1:-}" ]] && stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

pid_gone() { ! pid_alive "$1"; }

# lock_plane: one up.sh or down.sh at a time on this plane (test workers starting together, a terminal);
# held until the script exits.
lock_plane() {
  mkdir -p "$(dirname "$STATE_DIR")"
  exec 8>"$STATE_DIR.lock"
  flock 8
}

# Processes a script starts: pid in $PROC_DIR/NAME.pid, output in $PROC_DIR/logs/NAME.log (up.sh and
# down.sh: the control plane's $STATE_DIR; real-node.sh: its $NODE_DIR).
PROC_DIR="$STATE_DIR"
AWAIT_DEADLINE=0   # the $SECONDS value `await` gives up at; each script sets it when it starts

# start_detached NAME COMMAND...: run detached in its own session (a Ctrl-C in the caller's terminal must
# not kill etcd before the apiserver), with no inherited stdout (a caller capturing ours would never see EOF).
start_detached() {
  local name="$1"
  shift
  # 8>&-: not the plane's lock (lock_plane), which a long-lived process would otherwise hold for good.
  setsid "$@" </dev/null >"$PROC_DIR/logs/$name.log" 2>&1 8>&- &
  echo $! >"$PROC_DIR/$name.pid"
}

# Keep this process alive or report why not, instead of waiting out the deadline on a dead process.
alive_or_die() {
  pid_alive "$(cat "$PROC_DIR/$1.pid")" || die "$1 exited; see $PROC_DIR/logs/$1.log"
}

# await PROCESS DESCRIPTION COMMAND...: retry COMMAND until it succeeds, failing early if PROCESS died
# and at $AWAIT_DEADLINE.
await() {
  local proc="$1" what="$2"
  shift 2
  until "$@" >/dev/null 2>&1; do
    alive_or_die "$proc"
    ((SECONDS < AWAIT_DEADLINE)) || die "timed out waiting for $what"
    sleep 0.2
  done
}

# stop_pid NAME: SIGTERM the recorded process, wait up to 20 s, then SIGKILL. Only the pid we recorded.
stop_pid() {
  local name="$1" pidfile="$PROC_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$name (pid $pid) to exit" 20 pid_gone "$pid"; then
      log "$name ignored SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_for "$name (pid $pid) to die" 10 pid_gone "$pid" || true
    fi
  fi
  rm -f "$pidfile"
}

# Reverse start order: kube-apiserver must go before etcd (with etcd gone first it ignored SIGTERM for minutes).
stop_all() {
  local i
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_pid "${COMPONENTS[i]}"
  done
}

# --- the real node (up.sh --real-node; tests/cluster/real-node.sh) and the images it runs (images.sh)
REAL_NODE_NAME="storyteller-real-0"
NODE_DIR="$STATE_DIR/node"                       # containerd root/state, kubelet dirs, CNI config
CONTAINERD_SOCK="$NODE_DIR/containerd.sock"
IMAGES_DIR="$CACHE_ROOT/images"                  # docker-archive tars of the built images, by content hash
PAUSE_IMAGE="storyteller-pause:dev"              # the CRI sandbox image, built here (no registry)
OPERATOR_IMAGE="storyteller-operator:dev"
WORKER_IMAGE="storyteller-worker:dev"
# The node's network: a bridge whose address is the node IP; pods get addresses from the same /24.
BRIDGE="${STORYTELLER_BRIDGE:-stbr0}"
NODE_SUBNET_PREFIX="${STORYTELLER_NODE_SUBNET_PREFIX:-10.213.7}"
NODE_SUBNET="$NODE_SUBNET_PREFIX.0/24"
NODE_IP="$NODE_SUBNET_PREFIX.1"
CNI_NETWORK="storyteller"
CNI_BIN_DIR="${STORYTELLER_CNI_BIN_DIR:-/usr/lib/cni}"   # Debian's containernetworking-plugins
