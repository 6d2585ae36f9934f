#!/usr/bin/env bash
# `make test`: the whole suite, with its phases side by side where they share nothing, and where the time went.
#
#   apt            the Debian packages every later phase needs, first (one apt at a time on a machine)
#   tools          the Go-built binaries (tests/cluster/install.sh --no-apt): CPU-bound, on a fresh machine
#                  the longest phase; a no-op once cached
#   venv           the virtualenv (make venv): mostly downloads, beside the tools
#   images         the real node's images (tests/cluster/images.sh build): downloads, then pip in the image;
#                  beside the tools, and still going while the first tests run (the realnode tests wait for
#                  it on its lock)
#   lint-python    ruff and mypy, once the venv is there
#   lint-manifests the chart's scenarios through kubeconform and kube-linter, once the tools are there
#   pytest         every tier on $STORYTELLER_TEST_WORKERS (3) xdist workers, grouped by tests/conftest.py,
#                  once venv and tools are there
#
# The background phases log to .state/suite/NAME.log (printed when one fails). At the end a table gives each
# phase's start (from the beginning of the run), duration and result; pytest adds its own per tier and per file.
# Exit status: non-zero when any phase failed. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LOGS=.state/suite
PY=.venv/bin/python
# pytest-xdist workers: the real node's tests hold one, the control planes' and the rest share the others.
WORKERS="${STORYTELLER_TEST_WORKERS:-3}"
: "${PY_PACKAGES:?the Makefile passes the packages mypy checks}"
mkdir -p "$LOGS"
T0=$EPOCHSECONDS
declare -A PID START END RC
ORDER=()

now() { echo $((EPOCHSECONDS - T0)); }
clock() { printf '%d:%02d' $(($1 / 60)) $(($1 % 60)); }
say() { printf '[suite %s] %s\n' "$(clock "$(now)")" "$*" >&2; }

# start NAME COMMAND...: run COMMAND in the background, its output in $LOGS/NAME.log, its end in NAME.end.
start() {
  local name="$1"
  shift
  ORDER+=("$name")
  START[$name]=$(now)
  rm -f "$LOGS/$name.end"
  (
    rc=0
    "$@" || rc=$?
    now >"$LOGS/$name.end"
    exit "$rc"
  ) >"$LOGS/$name.log" 2>&1 &
  PID[$name]=$!
  say "$name: started"
}

# finish NAME: wait for it; on failure print the end of its log. Returns its exit status.
finish() {
  local name="$1" rc=0
  [[ -n "${END[$name]:-}" ]] && return "${RC[$name]}"
  wait "${PID[$name]}" || rc=$?
  END[$name]=$(cat "$LOGS/$name.end" 2>/dev/null || now)
  RC[$name]=$rc
  if ((rc == 0)); then
    say "$name: done in $(clock $((END[$name] - START[$name])))"
  else
    say "$name: FAILED ($rc) after $(clock $((END[$name] - START[$name]))); the end of $LOGS/$name.log:"
    tail -n 60 "$LOGS/$name.log" >&2
  fi
  return "$rc"
}

# run NAME COMMAND...: in the foreground, timed like the others.
run() {
  local name="$1" rc=0
  shift
  ORDER+=("$name")
  START[$name]=$(now)
  "$@" || rc=$?
  END[$name]=$(now)
  RC[$name]=$rc
  return "$rc"
}

skip() {
  ORDER+=("$1")
  START[$1]=$(now)
  END[$1]=${START[$1]}
  RC[$1]="skipped: $2"
}

report() {
  local name rc
  printf '\n%-16s %7s %9s  %s\n' phase start duration result >&2
  for name in "${ORDER[@]}"; do
    [[ -n "${END[$name]:-}" ]] || continue
    rc="${RC[$name]}"
    [[ "$rc" == 0 ]] && rc=ok
    [[ "$rc" =~ ^[0-9]+$ ]] && rc="failed ($rc)"
    printf '%-16s %7s %9s  %s\n' "$name" "$(clock "${START[$name]}")" \
      "$(clock $((END[$name] - START[$name])))" "$rc" >&2
  done
  printf '%-16s %7s %9s\n' total "" "$(clock "$(now)")" >&2
}

failed=0
# Job control: each background phase is a process group of its own, so one left running when we leave (a
# failure, a Ctrl-C) goes with us whole (go build, pip and buildah included).
set -m
trap 'for p in "${PID[@]}"; do kill -- "-$p" 2>/dev/null; done' EXIT

run apt bash -c 'tests/cluster/install.sh --only-apt && if ((EUID == 0)); then tests/cluster/images.sh apt; fi' ||
  { report; exit 1; }
start tools tests/cluster/install.sh --no-apt
start venv make --no-print-directory venv
if ((EUID == 0)); then
  start images tests/cluster/images.sh build
else
  skip images "needs root, as the real node does"
fi

if finish venv; then
  start lint-python bash -c "$PY -m ruff check . && $PY -m ruff format --check . && $PY -m mypy $PY_PACKAGES"
else
  failed=1
fi
finish tools || failed=1
if ((failed)); then
  for name in lint-python images; do [[ -n "${PID[$name]:-}" ]] && { finish "$name" || true; }; done
  report
  exit 1
fi
start lint-manifests tests/cluster/lint-manifests.sh "$PY"

# The groups and their order are tests/conftest.py's (its pytest_xdist_make_scheduler).
run pytest "$PY" -m pytest -q -n "$WORKERS" --dist loadscope --no-loadscope-reorder "$@" || failed=1

for name in images lint-python lint-manifests; do
  [[ -n "${PID[$name]:-}" ]] && { finish "$name" || failed=1; }
done
report
exit "$failed"
