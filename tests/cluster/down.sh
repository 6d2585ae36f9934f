#!/usr/bin/env bash
# Stop the cluster started by up.sh and remove its state (certificates, etcd data, logs, kubeconfig).
#
# Local mode stops processes in reverse start order, kube-apiserver before etcd: with etcd gone first the
# apiserver ignored SIGTERM for minutes. Only the pids up.sh recorded are signalled. Safe to run twice.
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KIND_NAME="${STORYTELLER_KIND_NAME:-storyteller}"
lock_plane

if [[ -f "$STATE_DIR/mode" ]] && [[ "$(cat "$STATE_DIR/mode")" == kind ]]; then
  log "deleting kind cluster $KIND_NAME"
  kind delete cluster --name "$KIND_NAME" >&2
else
  # The real node first (its pods, mounts, network namespaces, bridge, iptables rules), then the rest.
  "$CLUSTER_DIR/real-node.sh" down
  stop_all
fi
rm -rf "${STATE_DIR:?}"
log "cluster stopped, state removed"
