#!/usr/bin/env bash
# Build both images, load them into a kind cluster, install the chart and the example tenant.
# The images cannot be pulled from a registry in a fresh kind cluster, so they are loaded directly
# (pullPolicy Never). Needs docker, kind, helm and kubectl; run from anywhere:
#
#   examples/kind/deploy.sh            # cluster "storyteller" (tests/cluster/up.sh --kind creates it)
#   KIND_CLUSTER=other examples/kind/deploy.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="${KIND_CLUSTER:-${STORYTELLER_KIND_NAME:-storyteller}}"
TAG="${IMAGE_TAG:-dev}"
OPERATOR_IMAGE="storyteller-operator:$TAG"
WORKER_IMAGE="storyteller-worker:$TAG"

log() { printf '[kind] %s\n' "$*" >&2; }

# Both Dockerfiles use the repository root as build context (they copy operator/ and worker/).
log "building $OPERATOR_IMAGE and $WORKER_IMAGE"
docker build -f "$REPO/operator/Dockerfile" -t "$OPERATOR_IMAGE" "$REPO"
docker build -f "$REPO/worker/Dockerfile" -t "$WORKER_IMAGE" "$REPO"

log "loading the images into kind cluster $CLUSTER"
kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$WORKER_IMAGE"

log "installing the chart"
helm upgrade --install storyteller "$REPO/helm/storyteller" \
  --namespace storyteller-system --create-namespace \
  --set operator.image.repository=storyteller-operator \
  --set operator.image.tag="$TAG" \
  --set operator.image.pullPolicy=Never \
  --wait --timeout 5m
helm test storyteller --namespace storyteller-system --timeout 2m

log "creating the example tenant with the local worker image"
kubectl apply -f "$REPO/examples/tenant-secrets.yaml"
# The example as it is, with only the image switched to the one just loaded.
sed -e "s|image: ghcr.io/storyteller-dev/storyteller-worker:0.1.0|image: $WORKER_IMAGE\n    imagePullPolicy: Never|" \
  "$REPO/examples/tenant.yaml" | kubectl apply -f -
# Worker pods are Ready once registered with LiveKit (GET :8082/ready): with the example's placeholder
# spec.livekit.url they run but stay unready until it points at a LiveKit server they can reach.
kubectl -n storyteller-example rollout status deployment/acme-worker --timeout=5m ||
  log "worker pods not Ready: set spec.livekit.url to a reachable LiveKit server (kubectl edit sd acme)"
kubectl -n storyteller-example get sd,pods
