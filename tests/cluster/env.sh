#!/usr/bin/env bash
# Print shell exports that put the cached cluster tools first on PATH and select the local cluster:
#   eval "$(tests/cluster/env.sh)"
#   kubectl get nodes
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

printf 'export PATH=%q\n' "$TOOLS_PATH:$PATH"
printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH"
