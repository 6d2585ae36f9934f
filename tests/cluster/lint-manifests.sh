#!/usr/bin/env bash
# make lint's manifest checks, offline once `make tools` has run:
#   * the chart rendered for every helm/storyteller/ci/*-values.yaml scenario (its defaults if there is
#     none), CRDs included, each checked by kubeconform in strict mode (unknown fields and duplicate keys are errors)
#     against schemas generated from the OpenAPI document of K8S_VERSION and the CRDs it uses;
#   * kube-linter (.kube-linter.yaml) on the chart, and on each rendered scenario (its optional parts).
# Every scenario is checked and reported; the exit status is non-zero if any check failed.
# Usage: tests/cluster/lint-manifests.sh [PYTHON]   (PYTHON: the venv's, which has storyteller_devkit)
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

py="${1:-$REPO_ROOT/.venv/bin/python}"
chart="$REPO_ROOT/helm/storyteller"
kube_version="${K8S_VERSION#v}"
helm="$HELM_BIN/helm" kubeconform="$KUBECONFORM_BIN/kubeconform" kube_linter="$KUBE_LINTER_BIN/kube-linter"
for tool in "$helm" "$kubeconform" "$kube_linter"; do
  [[ -x "$tool" ]] || die "$tool is missing: run \`make tools\`"
done

location="$("$py" -m storyteller_devkit.kube_schemas "$KUBE_SCHEMAS")"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT

# Whatever scenarios the chart ships (chart-testing's convention), or its defaults when it ships none.
shopt -s nullglob
scenarios=("$chart"/ci/*-values.yaml)
shopt -u nullglob
((${#scenarios[@]})) || scenarios=(defaults)
failed=0
for scenario in "${scenarios[@]}"; do
  name="$(basename "$scenario" .yaml)"
  values=()
  [[ "$scenario" == defaults ]] || values=(-f "$scenario")
  if ! "$helm" template st "$chart" --namespace storyteller-system --include-crds \
    --kube-version "$kube_version" "${values[@]}" >"$rendered/$name.yaml"; then
    log "helm template failed for $name"
    failed=1
    continue
  fi
  log "kubeconform: $name"
  "$kubeconform" -strict -summary -schema-location "$location" -kubernetes-version "$kube_version" \
    "$rendered/$name.yaml" || failed=1
done

# One run per input: given several files at once, kube-linter matches objects across them (a binding in one
# scenario to a role in another) and repeats each finding per file.
log "kube-linter: $chart"
"$kube_linter" lint --config "$REPO_ROOT/.kube-linter.yaml" "$chart" || failed=1
for file in "$rendered"/*.yaml; do
  log "kube-linter: $(basename "$file" .yaml)"
  "$kube_linter" lint --config "$REPO_ROOT/.kube-linter.yaml" "$file" || failed=1
done
exit "$failed"
