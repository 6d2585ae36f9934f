#!/usr/bin/env bash
# One real node beside the kwok nodes: containerd + runc + a CNI bridge + kubelet, on this machine.
#
#   tests/cluster/real-node.sh up     add the node to the running local control plane (needs root)
#   tests/cluster/real-node.sh down   remove everything it made: pods' containers and shims, mounts,
#                                     network namespaces, the bridge, iptables rules, its state
#
# Called by `up.sh --real-node` and by down.sh; safe to run twice. The node is `storyteller-real-0`,
# labelled storyteller.dev/real-node=true and tainted with the same key (NoSchedule), so only pods that
# ask for it land there: the kwok-based tests keep their fake nodes. It runs the images built by
# tests/cluster/images.sh (imported into its containerd), never pulls from a registry.
#
# Network rule of this machine: pods' addresses live only in network namespaces made here; nothing they
# send may leave the machine. So: no masquerade, and a FORWARD rule drops whatever crosses the bridge to
# or from any other network. Pods reach the host's services on the bridge address ($NODE_IP) and the API
# server through the `kubernetes` Service address (a DNAT to its loopback port: the API server listens on
# loopback only). kube-proxy (iptables mode) routes the other Services, CoreDNS on the node IP names them
# (cluster.local, and nothing else: no forwarding, so no name lookup leaves the machine).
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBELET_PORT="${STORYTELLER_KUBELET_PORT:-16250}"
KUBELET_HEALTHZ_PORT="${STORYTELLER_KUBELET_HEALTHZ_PORT:-16248}"
PROXY_HEALTHZ_PORT="${STORYTELLER_PROXY_HEALTHZ_PORT:-16256}"
PROXY_METRICS_PORT="${STORYTELLER_PROXY_METRICS_PORT:-16249}"
CLUSTER_DOMAIN="cluster.local"
DNS_HEALTH_PORT="${STORYTELLER_DNS_HEALTH_PORT:-16281}"
DNS_READY_PORT="${STORYTELLER_DNS_READY_PORT:-16282}"
NODE_START_DEADLINE="${STORYTELLER_NODE_START_DEADLINE:-120}"
CHAIN="STORYTELLER-NODE"   # our iptables chain (filter FORWARD and nat PREROUTING jump to it)
PKI="$STATE_DIR/pki"
PROC_DIR="$NODE_DIR"   # lib.sh's start_detached/await/stop_pid keep pids and logs there

kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# ------------------------------------------------------------------------------------------------ down
# Pods' network namespaces: the ones holding an address of our subnet (CNI names them cni-<uuid>).
our_netns() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    ip -n "$ns" -4 addr show 2>/dev/null | grep -q "inet ${NODE_SUBNET_PREFIX}\." && echo "$ns"
  done
  return 0
}

down() {
  stop_pid coredns
  stop_pid kube-proxy
  # kube-proxy's own clean-up of its KUBE-* chains (only when it ran: it needs no API server for this).
  if [[ -f "$NODE_DIR/kube-proxy.ran" ]] && [[ -x "$K8S_BIN/kube-proxy" ]]; then
    "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  stop_pid kubelet
  if [[ -S "$CONTAINERD_SOCK" ]]; then
    local t
    for t in $(ctr_ tasks list -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
  fi
  stop_pid containerd
  # Shims outlive containerd by design; ours are the ones started with our socket.
  pkill -KILL -f "containerd-shim.*-address $CONTAINERD_SOCK" 2>/dev/null || true
  local ns m
  for ns in $(our_netns); do ip netns delete "$ns" 2>/dev/null || true; done
  # Deepest first: tmpfs secrets, overlay rootfs, shm, netns bind mounts, all under the node's directory.
  if [[ -d "$NODE_DIR" ]]; then
    while read -r m; do umount -l "$m" 2>/dev/null || true; done \
      < <(awk -v d="$NODE_DIR" '$2 ~ "^"d {print $2}' /proc/self/mounts | sort -r)
  fi
  ip link delete "$BRIDGE" 2>/dev/null || true
  iptables -D FORWARD -j "$CHAIN" 2>/dev/null || true
  iptables -D INPUT -i "$BRIDGE" -j "$CHAIN-IN" 2>/dev/null || true
  iptables -F "$CHAIN-IN" 2>/dev/null || true
  iptables -X "$CHAIN-IN" 2>/dev/null || true
  iptables -F "$CHAIN" 2>/dev/null || true
  iptables -X "$CHAIN" 2>/dev/null || true
  iptables -t nat -D PREROUTING -j "$CHAIN" 2>/dev/null || true
  iptables -t nat -F "$CHAIN" 2>/dev/null || true
  iptables -t nat -X "$CHAIN" 2>/dev/null || true
  # The kubelet's own chains (its canaries and the localnet firewall), which nothing else removes.
  local table chain
  iptables -D INPUT -j KUBE-FIREWALL 2>/dev/null || true
  iptables -D OUTPUT -j KUBE-FIREWALL 2>/dev/null || true
  for table in filter nat mangle; do
    for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  # containerd's cgroups (cgroupfs driver, no QoS tree): empty once the containers are gone.
  find /sys/fs/cgroup/*/k8s.io -depth -type d -exec rmdir {} + 2>/dev/null || true
  if [[ -f "$NODE_DIR/ip_forward.orig" ]]; then
    sysctl -q -w "net.ipv4.ip_forward=$(cat "$NODE_DIR/ip_forward.orig")" || true
  fi
  rm -rf /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  rm -rf "${NODE_DIR:?}"
  if [[ -f "$KUBECONFIG_PATH" ]] && [[ -x "$K8S_BIN/kubectl" ]]; then
    kc delete node "$REAL_NODE_NAME" --ignore-not-found --wait=false --request-timeout=10s >/dev/null 2>&1 || true
  fi
}

# -------------------------------------------------------------------------------------------------- up
node_running() {
  local p
  for p in containerd kubelet kube-proxy coredns; do
    [[ -f "$NODE_DIR/$p.pid" ]] && pid_alive "$(cat "$NODE_DIR/$p.pid")" || return 1
  done
  node_ready
}

node_ready() {
  [[ "$(kc get node "$REAL_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# sign NAME SUBJECT EXTENSIONS with the cluster CA up.sh made.
sign() {
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$NODE_DIR/pki/$1.key" -out "$NODE_DIR/pki/$1.csr"
  printf '%s\n' "$3" >"$NODE_DIR/pki/$1.ext"
  openssl x509 -req -in "$NODE_DIR/pki/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -out "$NODE_DIR/pki/$1.crt" -extfile "$NODE_DIR/pki/$1.ext"
}

# client_kubeconfig CERT: a kubeconfig for the API server on loopback with $NODE_DIR/pki/CERT.{crt,key}.
client_kubeconfig() {
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: storyteller-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $NODE_DIR/pki/$1.crt
    client-key: $NODE_DIR/pki/$1.key
contexts:
- name: default
  context: {cluster: storyteller-local, user: $1}
current-context: default
EOF
}

up() {
  ((EUID == 0)) || die "the real node needs root (containerd, network namespaces, iptables)"
  [[ -f "$KUBECONFIG_PATH" ]] || die "no local control plane: run tests/cluster/up.sh first"
  local bin
  for bin in containerd containerd-shim-runc-v2 ctr runc iptables ip openssl; do
    command -v "$bin" >/dev/null || die "$bin is missing: run tests/cluster/install.sh"
  done
  for bin in bridge host-local portmap loopback; do
    [[ -x "$CNI_BIN_DIR/$bin" ]] || die "CNI plugin $CNI_BIN_DIR/$bin is missing: run tests/cluster/install.sh"
  done
  for bin in "$K8S_BIN/kubelet" "$K8S_BIN/kube-proxy" "$COREDNS_BIN/coredns"; do
    [[ -x "$bin" ]] || die "$bin is missing: run tests/cluster/install.sh"
  done
  if node_running; then
    log "real node $REAL_NODE_NAME already running"
    return 0
  fi
  down   # whatever a crashed run left, this one's or another state directory's: up owns them now
  mkdir -p "$NODE_DIR"/{pki,logs,cni/net.d,cni/ipam,containerd/root,containerd/state,kubelet,pod-logs}
  sysctl -n net.ipv4.ip_forward >"$NODE_DIR/ip_forward.orig"
  AWAIT_DEADLINE=$((SECONDS + NODE_START_DEADLINE))
  started_ok=0   # global: the EXIT trap runs outside this function
  trap '((started_ok)) || { log "real node failed to start; logs in $NODE_DIR/logs"; down; }' EXIT

  # --- network: the bridge (its address is the node IP), the fence, the API server's Service address
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  iptables -N "$CHAIN"
  iptables -A "$CHAIN" -s "$NODE_SUBNET" -d "$NODE_SUBNET" -j ACCEPT
  iptables -A "$CHAIN" -s "$NODE_SUBNET" -j DROP
  iptables -A "$CHAIN" -d "$NODE_SUBNET" -j DROP
  iptables -I FORWARD 1 -j "$CHAIN"
  # From a pod to this host: only the node IP (livekit-server, model servers, Prometheus live there) and
  # the API server behind the Service DNAT below; never the host's other addresses.
  iptables -N "$CHAIN-IN"
  iptables -A "$CHAIN-IN" -d "$NODE_IP" -j RETURN
  iptables -A "$CHAIN-IN" -d 127.0.0.1 -p tcp --dport "$API_PORT" -j RETURN
  iptables -A "$CHAIN-IN" -j DROP
  iptables -I INPUT 1 -i "$BRIDGE" -j "$CHAIN-IN"
  # In-cluster clients (the operator pod) dial the `kubernetes` Service; the API server listens on loopback.
  sysctl -q -w "net.ipv4.conf.$BRIDGE.route_localnet=1"
  iptables -t nat -N "$CHAIN"
  iptables -t nat -A "$CHAIN" -i "$BRIDGE" -d "${SERVICE_CIDR%0/24}1" -p tcp --dport 443 \
    -j DNAT --to-destination "127.0.0.1:$API_PORT"
  iptables -t nat -I PREROUTING 1 -j "$CHAIN"
  cat >"$NODE_DIR/cni/net.d/10-storyteller.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$NODE_SUBNET", "rangeStart": "${NODE_SUBNET_PREFIX}.10", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  # --- containerd with the CRI plugin, its own root, state and socket
  cat >"$NODE_DIR/containerd/config.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = "$CONTAINERD_SOCK.debug"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without it every sandbox fails here ("can't get final child's PID from pipe"): see shared notes.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$NODE_DIR/cni/net.d"
EOF
  start_detached containerd containerd --config "$NODE_DIR/containerd/config.toml"
  await containerd "containerd's socket" ctr_ version
  "$CLUSTER_DIR/images.sh" import "$CONTAINERD_SOCK" >&2

  # --- the node's identity: a client certificate for system:node:<name> (Node authorizer, NodeRestriction)
  # (The kubelet keeps its self-signed serving certificate as kubelet.crt in the same directory.)
  sign kubelet-client "/O=system:nodes/CN=system:node:$REAL_NODE_NAME" "extendedKeyUsage=clientAuth" \
    >"$NODE_DIR/logs/openssl.log" 2>&1
  client_kubeconfig kubelet-client >"$NODE_DIR/kubelet.kubeconfig"
  # An empty resolv.conf: pods get no name server that would send their queries off the machine.
  : >"$NODE_DIR/resolv.conf"
  # cgroup v1 on this machine (1.35 refuses it unless told), no QoS cgroups, no eviction or allocatable
  # enforcement: a test node on a shared machine. Webhook authn/authz so `kubectl logs/exec` go through
  # the API server's own client certificate (up.sh: --kubelet-client-certificate).
  cat >"$NODE_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
failSwapOn: false
evictionHard: {}
resolvConf: $NODE_DIR/resolv.conf
podLogsDir: $NODE_DIR/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
serializeImagePulls: false
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN
registerWithTaints:
- {key: storyteller.dev/real-node, value: "true", effect: NoSchedule}
EOF
  start_detached kubelet "$K8S_BIN/kubelet" \
    --config "$NODE_DIR/kubelet-config.yaml" \
    --kubeconfig "$NODE_DIR/kubelet.kubeconfig" \
    --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/pki" \
    --hostname-override "$REAL_NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "storyteller.dev/real-node=true"
  await kubelet "node $REAL_NODE_NAME to be Ready" node_ready

  # --- kube-proxy: Services' virtual IPs, as on any node (identity system:kube-proxy, bound by default)
  sign kube-proxy-client "/CN=system:kube-proxy" "extendedKeyUsage=clientAuth" >>"$NODE_DIR/logs/openssl.log" 2>&1
  client_kubeconfig kube-proxy-client >"$NODE_DIR/kube-proxy.kubeconfig"
  # Conntrack sizes and timeouts 0: leave the host's settings alone. NodePorts on the node IP only.
  cat >"$NODE_DIR/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $REAL_NODE_NAME
clusterCIDR: $NODE_SUBNET
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: [$NODE_IP/32]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  touch "$NODE_DIR/kube-proxy.ran"
  start_detached kube-proxy "$K8S_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy-config.yaml"
  await kube-proxy "kube-proxy's healthz" curl -fsS --max-time 2 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"

  # --- CoreDNS on the node IP: cluster names only (no forward plugin: nothing is resolved off-machine)
  cat >"$NODE_DIR/Corefile" <<EOF
.:53 {
  bind $NODE_IP
  errors
  health 127.0.0.1:$DNS_HEALTH_PORT
  ready 127.0.0.1:$DNS_READY_PORT
  kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
    kubeconfig $KUBECONFIG_PATH storyteller-local
    pods insecure
  }
  cache 5
}
EOF
  start_detached coredns "$COREDNS_BIN/coredns" -conf "$NODE_DIR/Corefile"
  await coredns "CoreDNS to be ready" curl -fsS --max-time 2 "http://127.0.0.1:$DNS_READY_PORT/ready"
  started_ok=1
  log "real node $REAL_NODE_NAME Ready at $NODE_IP (logs: $NODE_DIR/logs)"
}

case "${1:-}" in
  up) up ;;
  # Only a state directory that holds a node owns the machine-wide parts (bridge, chains): a second
  # control plane's down.sh (another $STORYTELLER_STATE) must not tear down this one's node.
  down) if [[ -d "$NODE_DIR" ]]; then down; fi ;;
  *) die "usage: $0 up|down" ;;
esac
