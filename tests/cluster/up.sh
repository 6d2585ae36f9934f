#!/usr/bin/env bash
# Start a Kubernetes control plane for tests and the demo, and print where its kubeconfig is.
#
#   tests/cluster/up.sh            local control plane if docker+kind are not usable, else kind
#   tests/cluster/up.sh --local    etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok
#                                  on 127.0.0.1 (binaries from tests/cluster/install.sh)
#   tests/cluster/up.sh --kind     a kind cluster (needs a running Docker engine and `kind`)
#   tests/cluster/up.sh --real-node  the local control plane plus one real node (containerd + runc + CNI
#                                  bridge + kubelet, tests/cluster/real-node.sh) that runs the built images;
#                                  needs root. Adds the node to a control plane that is already up.
#
# The last line on stdout is the kubeconfig path; logs and state live in $STORYTELLER_STATE
# (default .state/cluster/). Running it again while the cluster is up is a no-op. Stop with down.sh.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND_NAME="${STORYTELLER_KIND_NAME:-storyteller}"
START_DEADLINE="${STORYTELLER_START_DEADLINE:-120}"

mode="${STORYTELLER_CLUSTER:-auto}"
real_node=0
case "${1:-}" in
  --kind) mode=kind ;;
  --local) mode=local ;;
  --real-node)
    mode=local real_node=1
    # Its bridge, addresses and iptables chains are the machine's: one node, on one plane.
    ((PLANE == 0)) || die "the real node joins plane 0 only (STORYTELLER_PLANE=$PLANE)"
    ;;
  "") ;;
  *) die "usage: $0 [--local|--kind|--real-node]" ;;
esac
if [[ "$mode" == auto ]]; then
  # `docker --version` answers even without an engine; `docker info` needs the engine to be running.
  if command -v kind >/dev/null && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    mode=kind
  else
    mode=local
  fi
fi

kubectl_bin() {
  if [[ -x "$K8S_BIN/kubectl" ]]; then echo "$K8S_BIN/kubectl"; else command -v kubectl; fi
}
kc() { "$(kubectl_bin)" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

lock_plane
started=$SECONDS
mkdir -p "$STATE_DIR"

# ---------------------------------------------------------------------------------------------- kind
if [[ "$mode" == kind ]]; then
  echo kind >"$STATE_DIR/mode"
  if ! kind get clusters 2>/dev/null | grep -qx "$KIND_NAME"; then
    log "creating kind cluster $KIND_NAME"
    kind create cluster --name "$KIND_NAME" --kubeconfig "$KUBECONFIG_PATH" --wait "${START_DEADLINE}s" >&2
  fi
  kind get kubeconfig --name "$KIND_NAME" >"$KUBECONFIG_PATH"
  wait_for "the default ServiceAccount" "$START_DEADLINE" kc -n default get serviceaccount default
  log "kind cluster ready in $((SECONDS - started)) s"
  echo "$KUBECONFIG_PATH"
  exit 0
fi

# --------------------------------------------------------------------------------------------- local
for bin in "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl} "$KWOK_BIN/kwok"; do
  [[ -x "$bin" ]] || die "$bin is missing: run tests/cluster/install.sh (or make tools) first"
done
[[ -f "$KWOK_STAGES/pod-ready.yaml" ]] || die "kwok stages missing in $KWOK_STAGES: run tests/cluster/install.sh"
command -v etcd >/dev/null || die "etcd is missing: run tests/cluster/install.sh (Debian package etcd-server)"

readyz() {
  curl -fsS --max-time 2 --cacert "$STATE_DIR/pki/ca.crt" --cert "$STATE_DIR/pki/admin.crt" \
    --key "$STATE_DIR/pki/admin.key" "https://127.0.0.1:$API_PORT/readyz"
}

all_running() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ -f "$STATE_DIR/$c.pid" ]] && pid_alive "$(cat "$STATE_DIR/$c.pid")" || return 1
  done
}

# The real node: the API server's own identity towards kubelets may use their API (logs, exec,
# port-forward), then real-node.sh brings the node up (a no-op when it runs).
add_real_node() {
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: storyteller:kube-apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
EOF
  "$CLUSTER_DIR/real-node.sh" up
}

if [[ -f "$STATE_DIR/mode" ]] && [[ "$(cat "$STATE_DIR/mode")" == local ]] && all_running && readyz >/dev/null 2>&1; then
  log "local control plane already running"
  ((real_node)) && add_real_node
  echo "$KUBECONFIG_PATH"
  exit 0
fi
# Leftovers of a crashed run: stop what is still alive (in order) and start from clean state.
stop_all
# A process this state no longer knows (a crashed run's, whose pid files are gone) may still hold a port:
# say which, rather than let a component exit on "address already in use".
for port in "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port (plane $PLANE) is in use: stop what listens there (ss -ltnp 'sport = :$port') or pick another STORYTELLER_PLANE"
  fi
done
rm -rf "${STATE_DIR:?}"/{etcd,pki,logs,kubeconfig,mode}
mkdir -p "$STATE_DIR"/{pki,logs}
echo local >"$STATE_DIR/mode"
# If anything below fails (or the user interrupts), do not leave half a cluster running.
ready=0
on_exit() {
  ((ready)) && return 0
  log "start failed; logs in $STATE_DIR/logs"
  stop_all
}
trap on_exit EXIT

# --- certificates and the service-account key, fresh on every start (they never leave this machine)
pki="$STATE_DIR/pki"
gen_pki() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=storyteller-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt"
  # sign NAME SUBJECT EXTENSIONS: a key and a certificate signed by the local CA.
  sign() {
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
    printf '%s\n' "$3" >"$pki/$1.ext"
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -out "$pki/$1.crt" -extfile "$pki/$1.ext"
  }
  # 10.0.0.1 is the `kubernetes` Service address in SERVICE_CIDR; in-cluster clients verify it.
  sign apiserver "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  # One admin identity (system:masters) for kubectl and the control-plane components: a test cluster.
  sign admin "/O=system:masters/CN=storyteller-admin" "extendedKeyUsage=clientAuth"
  # The API server's client identity towards kubelets (logs, exec): bound to system:kubelet-api-admin.
  sign apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$pki/sa.key" 2048
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
}
gen_pki >"$STATE_DIR/logs/openssl.log" 2>&1

cat >"$KUBECONFIG_PATH" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: storyteller-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: storyteller-admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: storyteller-local
  context: {cluster: storyteller-local, user: storyteller-admin}
current-context: storyteller-local
EOF
chmod 600 "$KUBECONFIG_PATH"

AWAIT_DEADLINE=$((started + START_DEADLINE))
start_detached etcd etcd --name storyteller --data-dir "$STATE_DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "storyteller=http://127.0.0.1:$ETCD_PEER_PORT"
await etcd "etcd health" curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

# RBAC via --authorization-mode; PodSecurity is in the default admission plugins of this version.
# WatchList=false: Debian's etcd 3.4 cannot serve streamed lists (no RequestWatchProgress), yet with the gate on
# the server turns every watch from version 0 into one, and fails it. kwok watches from 0: each of its
# watches failed at once and it saw a pod only at its next relist, up to 30 s late (tests waited on that).
# --endpoint-reconciler-type=none: there is no routable endpoint for the `kubernetes` Service here.
start_detached kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction,PodSecurity \
  --endpoint-reconciler-type none \
  --feature-gates WatchList=false \
  --allow-privileged=true \
  --profiling=false
await kube-apiserver "kube-apiserver /readyz" readyz

# A very long node-monitor grace period: kwok's node leases lapse after some minutes against Debian's
# etcd 3.4 (its watches end with "RequestWatchProgress" unsupported); the node lifecycle controller
# would then mark every pod unready and never back, failing whatever test runs next. It must still run:
# it lifts the not-ready taint new nodes are born with. Fake nodes have no health to watch.
start_detached kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG_PATH" --leader-elect=false \
  --node-monitor-grace-period 8760h \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --use-service-account-credentials=false --profiling=false
start_detached kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig "$KUBECONFIG_PATH" --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --profiling=false

# kwok plays the kubelet for Nodes carrying the annotation below, so scheduled Pods report Running/Ready
# without containers. It does not schedule: kube-scheduler does.
start_detached kwok "$KWOK_BIN/kwok" \
  --kubeconfig "$KUBECONFIG_PATH" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --manage-nodes-with-label-selector "" \
  --manage-single-node "" \
  --config "$(printf '%s,' "$KWOK_STAGES"/*.yaml | sed 's/,$//')" \
  --node-lease-duration-seconds 40 \
  --cidr "$POD_CIDR" --node-ip 127.0.0.1 \
  --server-address "127.0.0.1:$KWOK_PORT"

for ((i = 0; i < FAKE_NODES; i++)); do
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
done | kc apply -f - >/dev/null

nodes_ready() {
  [[ "$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
    grep -c True)" -eq "$FAKE_NODES" ]]
}
await kwok "$FAKE_NODES kwok nodes to be Ready" nodes_ready
# The default ServiceAccount appears once the controller-manager runs: before that, Pods are refused.
await kube-controller-manager "the default ServiceAccount" kc -n default get serviceaccount default
for c in "${COMPONENTS[@]}"; do alive_or_die "$c"; done
ready=1
((real_node)) && add_real_node

log "local control plane ready in $((SECONDS - started)) s (kubectl: $K8S_BIN/kubectl; stop: tests/cluster/down.sh)"
echo "$KUBECONFIG_PATH"
