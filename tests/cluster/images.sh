#!/usr/bin/env bash
# Build the images the real node runs, here, without a Docker engine or a registry; import them into its containerd.
#
#   build          storyteller-base:bookworm   Debian bookworm from Debian packages (mmdebstrap, minbase)
#                  storyteller-pause:dev       Kubernetes' own pause.c, static, in an otherwise empty image
#                  storyteller-operator:dev    operator/Dockerfile on the base
#                  storyteller-worker:dev      worker/Dockerfile on the base
#                  Each is built only when its content hash changed (the files that go into it, its recipe and
#                  the base's hash) and ends up as a docker-archive tar in $IMAGES_DIR: NAME-HASH.tar, with the
#                  symlink NAME.tar pointing at the current one.
#   check          runs the operator's and the worker's commands in their images as their pods do (uid 1000,
#                  read-only root, tmpfs /tmp): --help past their own checks, and Silero VAD loaded in the worker.
#   apt            installs the Debian packages the build needs (build does it too; make test does it first)
#   import [SOCK]  imports the current tars into that containerd (default: the real node's), namespace k8s.io,
#                  skipping an image already there with the same config digest.
#
# buildah runs with its own storage under $CACHE_ROOT/buildah (layers cached across runs, nothing shared with
# the system's storage) and chroot isolation (no runtime daemon). Needs root, like the real node.
# Environment:
#   STORYTELLER_BUILDAH_DRIVER  overlay or vfs (default: overlay when the kernel allows it here, else vfs)
#   STORYTELLER_DEBIAN_MIRROR   Debian mirror URL for the base (default: the host's apt sources, read at run time)
#   STORYTELLER_DEBIAN_SECURITY_MIRROR  its security archive (default: none with STORYTELLER_DEBIAN_MIRROR)
# Usage: tests/cluster/images.sh build | check | apt | import [CONTAINERD_SOCKET]
set -euo pipefail
# shellcheck source=tests/cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APT_PACKAGES=(buildah runc mmdebstrap gcc libc6-dev)
BASE_IMAGE="storyteller-base:bookworm"
# What the operator's and the worker's wheels need at run time besides Python: onnxruntime (Silero VAD) links
# libstdc++ and libgomp; pip's TLS needs the CA certificates.
BASE_PACKAGES=(python3 python3-venv ca-certificates libstdc++6 libgomp1)
# Small: no manuals, docs (copyrights stay), translations; mmdebstrap already drops apt's lists and cache.
BASE_DPKG_OPTS=(
  'path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/locale/*' 'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/lintian/*'
)
# Bump when the way an image is made changes in a way its inputs do not show.
RECIPE_VERSION=2

BUILDAH_DIR="$CACHE_ROOT/buildah"
# Under /run: containers/storage keeps mount counts there, which must not survive a reboot.
BUILDAH_RUNROOT="/run/storyteller-buildah"
BASE_READY=""   # set once ensure_base has run

# --- helpers ----------------------------------------------------------------------------------------------

install_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "apt: installing ${missing[*]}"
  # Refresh the package lists only when the install cannot find the packages (fresh CI image).
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# The storage driver is chosen once per storage root (containers/storage cannot switch a root's driver).
setup_buildah() {
  mkdir -p "$BUILDAH_DIR" "$BUILDAH_RUNROOT"
  local driver="${STORYTELLER_BUILDAH_DRIVER:-}"
  [[ -n "$driver" ]] || driver="$(cat "$BUILDAH_DIR/driver" 2>/dev/null || true)"
  if [[ -z "$driver" ]]; then
    driver=overlay
    write_storage_conf overlay
    if ! buildah info >/dev/null 2>&1; then
      log "buildah: the overlay driver does not work here, using vfs (every layer a full copy)"
      rm -rf "$BUILDAH_DIR/storage"
      driver=vfs
    fi
  fi
  write_storage_conf "$driver"
  echo "$driver" >"$BUILDAH_DIR/driver"
}

write_storage_conf() {
  printf '[storage]\ndriver = "%s"\ngraphroot = "%s"\nrunroot = "%s"\n' \
    "$1" "$BUILDAH_DIR/storage" "$BUILDAH_RUNROOT" >"$BUILDAH_DIR/storage.conf"
  export CONTAINERS_STORAGE_CONF="$BUILDAH_DIR/storage.conf"
  export BUILDAH_ISOLATION=chroot
}

# hash_inputs STRING PATH...: sha256 (16 hex digits) of STRING and of the paths' files (names, modes, contents),
# leaving out what .dockerignore leaves out of the build context.
hash_inputs() {
  local recipe="$1"
  shift
  {
    printf '%s\n' "$recipe"
    cd "$REPO_ROOT"
    find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -printf '%m %p\n' |
      LC_ALL=C sort -k2 | while read -r mode path; do
        printf '%s %s %s\n' "$mode" "$path" "$(sha256sum <"$path" | cut -d' ' -f1)"
      done
  } | sha256sum | cut -c1-16
}

# Debian apt lines for bookworm from the host's apt configuration (read now, never written down): every source
# of the host's own release, its -updates and -security suites, with the suite renamed to bookworm's.
debian_sources() {
  if [[ -n "${STORYTELLER_DEBIAN_MIRROR:-}" ]]; then
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$STORYTELLER_DEBIAN_MIRROR" "$STORYTELLER_DEBIAN_MIRROR"
    [[ -z "${STORYTELLER_DEBIAN_SECURITY_MIRROR:-}" ]] ||
      printf 'deb %s bookworm-security main\n' "$STORYTELLER_DEBIAN_SECURITY_MIRROR"
    return 0
  fi
  local id="" codename=""
  # shellcheck disable=SC1091
  id="$(. /etc/os-release && echo "${ID:-}")"
  # shellcheck disable=SC1091
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  [[ "$id" == debian && -n "$codename" ]] ||
    die "the host is not Debian: set STORYTELLER_DEBIAN_MIRROR to a Debian mirror URL for the base image"
  local lists=() deb822=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -f "$f" ]] && lists+=("$f"); done
  for f in /etc/apt/sources.list.d/*.sources; do [[ -f "$f" ]] && deb822+=("$f"); done
  {
    # One-line format: deb [options] URI SUITE COMPONENT...
    ((${#lists[@]} == 0)) || awk '$1 == "deb" { sub(/\[[^]]*\]/, ""); print $2, $3 }' "${lists[@]}"
    # deb822: paragraphs of Types/URIs/Suites (Enabled: no skips one).
    ((${#deb822[@]} == 0)) || awk '
      function flush(   u, s, nu, ns, us, ss) {
        if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
          nu = split(uris, us, " "); ns = split(suites, ss, " ")
          for (u = 1; u <= nu; u++) for (s = 1; s <= ns; s++) print us[u], ss[s]
        }
        types = uris = suites = enabled = ""; field = ""
      }
      FNR == 1 { flush() }
      /^[[:space:]]*#/ { next }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]/ { if (field == "uris") uris = uris " " $0; else if (field == "suites") suites = suites " " $0; next }
      {
        field = tolower($1); sub(/:$/, "", field); value = $0; sub(/^[^:]*:[[:space:]]*/, "", value)
        if (field == "types") types = value; else if (field == "uris") uris = value
        else if (field == "suites") suites = value; else if (field == "enabled") enabled = value
      }
      END { flush() }' "${deb822[@]}"
  } | awk -v cn="$codename" '
      { suite = $2; sub(/\/$/, "", $1) }
      suite == cn { print "deb " $1 " bookworm main"; next }
      suite == cn "-updates" { print "deb " $1 " bookworm-updates main"; next }
      suite == cn "-security" || suite == cn "/updates" { print "deb " $1 " bookworm-security main" }' |
    awk '!seen[$0]++'
}

human_size() { numfmt --to=iec --suffix=B "$1"; }

# report NAME WHAT SECONDS: one line per image.
report() {
  local tar="$IMAGES_DIR/$1.tar" size=""
  [[ -e "$tar" ]] && size="$(human_size "$(stat -L -c %s "$tar")")"
  [[ "$1" != storyteller-base ]] || size="$(buildah images --format '{{.Size}}' "$BASE_IMAGE" 2>/dev/null | head -n1)"
  printf '[images] %-20s %-7s %4d s  %s\n' "$1" "$2" "$3" "$size"
}

# save NAME HASH REF: the image as a docker-archive tar, current symlink updated, older tars of NAME removed.
save() {
  local name="$1" hash="$2" ref="$3" tar="$IMAGES_DIR/$1-$2.tar" old
  mkdir -p "$IMAGES_DIR"
  rm -f "$tar.tmp"
  # By ID: pushing by name would add buildah's own localhost/ name to the archive's tags.
  buildah push -q "$(buildah images -q --no-trunc "$ref")" "docker-archive:$tar.tmp:$ref" >/dev/null
  mv "$tar.tmp" "$tar"
  ln -sfn "$(basename "$tar")" "$IMAGES_DIR/$name.tar"
  for old in "$IMAGES_DIR/$name"-*.tar; do
    [[ "$old" == "$tar" ]] || rm -f "$old"
  done
}

# --- the images -------------------------------------------------------------------------------------------

base_hash() {
  echo "base $RECIPE_VERSION bookworm minbase ${BASE_PACKAGES[*]} ${BASE_DPKG_OPTS[*]}" | sha256sum | cut -c1-16
}

# The base lives in buildah's storage only (nothing imports it); its label (which the images built on it
# inherit) says which recipe made it.
ensure_base() {
  local hash="$1" t0=$SECONDS have work sources=() line include
  [[ -z "$BASE_READY" ]] || return 0
  BASE_READY=1
  have="$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "io.storyteller.base-recipe"}}' \
    "$BASE_IMAGE" 2>/dev/null || true)"
  if [[ "$have" == "$hash" ]]; then
    report storyteller-base reused 0
    return 0
  fi
  while IFS= read -r line; do sources+=("$line"); done < <(debian_sources)
  ((${#sources[@]})) || die "no Debian source for the base image in the host's apt configuration"
  log "base: mmdebstrap bookworm from ${#sources[@]} apt sources (about 2 minutes)"
  local opts=() o proxy
  for o in "${BASE_DPKG_OPTS[@]}"; do opts+=(--dpkgopt="$o"); done
  # The host's apt proxy, if it has one (mmdebstrap does not read the host's apt.conf).
  for o in Acquire::http::Proxy Acquire::https::Proxy; do
    proxy="$(apt-config dump "$o" | sed -n "s/^$o \"\(.*\)\";$/\1/p")"
    [[ -z "$proxy" ]] || opts+=(--aptopt="$o \"$proxy\"")
  done
  work="$(mktemp -d)"
  include="$(
    IFS=,
    echo "${BASE_PACKAGES[*]}"
  )"
  # The image keeps no apt sources (they name the build host's mirror) and no host name or resolver: the
  # runtime provides those. (The hook is run by mmdebstrap with $1 = the new root.)
  # shellcheck disable=SC2016
  if ! mmdebstrap -q --variant=minbase --include="$include" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "${opts[@]}" \
    --customize-hook='rm -f "$1/etc/apt/sources.list" "$1"/etc/apt/sources.list.d/*; : >"$1/etc/resolv.conf"; : >"$1/etc/hostname"' \
    bookworm "$work/rootfs.tar" "${sources[@]}" >"$work/mmdebstrap.log" 2>&1; then
    cat "$work/mmdebstrap.log" >&2
    rm -rf "$work"
    die "mmdebstrap failed"
  fi
  local ctr
  ctr="$(buildah from scratch)"
  buildah add -q "$ctr" "$work/rootfs.tar" / >/dev/null
  rm -rf "$work"
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd '["python3"]' --label "io.storyteller.base-recipe=$hash" "$ctr"
  buildah commit -q --rm "$ctr" "$BASE_IMAGE" >/dev/null
  report storyteller-base built $((SECONDS - t0))
}

pause_source() {
  local dir
  command -v go >/dev/null || die "go is needed to fetch Kubernetes' pause.c (make tools needs it too)"
  dir="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -f "$dir/build/pause/linux/pause.c" ]] || die "no build/pause/linux/pause.c in k8s.io/kubernetes@$K8S_VERSION"
  echo "$dir/build/pause"
}

build_pause() {
  local src hash tag t0=$SECONDS
  src="$(pause_source)"
  tag="$(sed -n 's/^TAG ?= \(.*\)$/\1/p' "$src/Makefile")"
  hash="$( (
    echo "pause $RECIPE_VERSION $K8S_VERSION $tag"
    gcc --version | head -n1
    cat "$src/linux/pause.c"
  ) | sha256sum | cut -c1-16)"
  if [[ -f "$IMAGES_DIR/storyteller-pause-$hash.tar" ]]; then
    ln -sfn "storyteller-pause-$hash.tar" "$IMAGES_DIR/storyteller-pause.tar"
    report storyteller-pause reused 0
    return 0
  fi
  local work ctr
  work="$(mktemp -d)"
  # As upstream's Makefile builds it (CFLAGS there), upstream's image: /pause alone, as 65535.
  gcc -Os -Wall -Werror -static -DVERSION="v$tag-$K8S_VERSION" -o "$work/pause" "$src/linux/pause.c"
  strip "$work/pause"
  ctr="$(buildah from scratch)"
  buildah copy -q --chmod 0755 "$ctr" "$work/pause" /pause >/dev/null
  rm -rf "$work"
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit -q --rm --format docker "$ctr" "$PAUSE_IMAGE" >/dev/null
  save storyteller-pause "$hash" "$PAUSE_IMAGE"
  report storyteller-pause built $((SECONDS - t0))
}

# pip's way to PyPI on this host, for the build only: the CA bundle it trusts (a TLS proxy's CA may be in the
# host's bundle alone) and its index settings, written to a pip.conf mounted at build time. Nothing of it is
# copied into an image: the final stages take /opt/venv only.
write_pip_conf() {
  local dir="$1" cert="" line key value
  local keys=(index-url extra-index-url trusted-host timeout default-timeout retries proxy)
  while IFS= read -r line; do
    key="${line%%=*}"
    value="${line#*=}"
    value="${value#\'}"
    value="${value%\'}"
    key="${key##*.}"
    if [[ "$key" == cert ]]; then
      cert="$value"
    elif [[ " ${keys[*]} " == *" $key "* ]]; then
      printf '%s = %s\n' "$key" "$value" >>"$dir/settings"
    fi
  done < <(python3 -m pip config list 2>/dev/null || true)
  [[ -n "$cert" ]] || cert="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
  {
    echo "[global]"
    [[ ! -f "$dir/settings" ]] || awk -F' = ' '!seen[$1]++' "$dir/settings"   # the first one pip reports wins
    [[ ! -f "$cert" ]] || echo "cert = /run/storyteller-build/ca.crt"
    [[ -z "${https_proxy:-${HTTPS_PROXY:-}}" ]] || echo "proxy = ${https_proxy:-$HTTPS_PROXY}"
  } >"$dir/pip.conf"
  rm -f "$dir/settings"
  [[ ! -f "$cert" ]] || cp "$cert" "$dir/ca.crt"
}

# build_python NAME REF DIR BASE_HASH: DIR/Dockerfile on the base, when its inputs changed.
build_python() {
  local name="$1" ref="$2" dir="$3" base="$4" hash t0=$SECONDS
  # api/: the pure spec package both images install first.
  hash="$(hash_inputs "$name $RECIPE_VERSION base=$base" "$dir/Dockerfile" .dockerignore "$dir/pyproject.toml" \
    "$dir/storyteller_${dir}" api/pyproject.toml api/storyteller_api)"
  if [[ -f "$IMAGES_DIR/$name-$hash.tar" ]]; then
    ln -sfn "$name-$hash.tar" "$IMAGES_DIR/$name.tar"
    report "$name" reused 0
    return 0
  fi
  ensure_base "$base"
  t0=$SECONDS
  local work
  work="$(mktemp -d)"
  write_pip_conf "$work"
  log "$name: building $ref from $dir/Dockerfile"
  local bud=(buildah bud --layers --pull=never --format docker -f "$REPO_ROOT/$dir/Dockerfile"
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg PIP_CONFIG_FILE=/run/storyteller-build/pip.conf
    --volume "$work:/run/storyteller-build:ro")
  # The dependency stage gets a name of its own (NAME-deps:cache) so prune_storage keeps its layers: they are
  # the cache of the dependency install. The second run reuses them and builds the code and the final stage.
  if ! { "${bud[@]}" --target deps -t "$name-deps:cache" "$REPO_ROOT" && "${bud[@]}" -t "$ref" "$REPO_ROOT"; } \
    >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    rm -rf "$work"
    die "$name: build failed"
  fi
  rm -rf "$work"
  save "$name" "$hash" "$ref"
  report "$name" built $((SECONDS - t0))
}

# Unnamed images nothing builds on: an older build of a name, layers cached for inputs that changed since.
# Each pass removes the childless ones, which may leave their parents childless: repeat until none is left.
prune_storage() {
  local pass
  # A failed build leaves its working containers behind, and they pin the images they were made from.
  # This storage is ours alone, and the lock keeps any other build out.
  buildah rm --all >/dev/null 2>&1 || true
  for ((pass = 0; pass < 16; pass++)); do
    [[ -n "$(buildah images -a -q --filter dangling=true)" ]] || return 0
    buildah rmi --prune >/dev/null || return 0
  done
}

cmd_build() {
  ((EUID == 0)) || die "images.sh needs root (buildah with chroot isolation, mmdebstrap)"
  install_apt
  setup_buildah
  mkdir -p "$IMAGES_DIR"
  exec 9>"$IMAGES_DIR/.lock"
  flock 9 || die "another images.sh holds $IMAGES_DIR/.lock"
  local t0=$SECONDS base
  base="$(base_hash)"
  build_pause
  build_python storyteller-operator "$OPERATOR_IMAGE" operator "$base"
  build_python storyteller-worker "$WORKER_IMAGE" worker "$base"
  prune_storage
  log "images: $((SECONDS - t0)) s; buildah storage ($(cat "$BUILDAH_DIR/driver")) $(du -sh "$BUILDAH_DIR" | cut -f1), tars $(du -shL "$IMAGES_DIR" | cut -f1)"
}

# --- import -----------------------------------------------------------------------------------------------

# config_digest_of_tar TAR: the image's config digest (its ID), from the archive's manifest.json.
config_digest_of_tar() {
  tar -xOf "$1" manifest.json | python3 -c 'import json, sys; c = json.load(sys.stdin)[0]["Config"]; print("sha256:" + c.split("/")[-1].removesuffix(".json").removeprefix("sha256:"))'
}

# config_digest_in_containerd CTR... REF: the config digest of REF's manifest there, empty when absent.
config_digest_in_containerd() {
  local ref="${*: -1}" manifest
  set -- "${@:1:$#-1}"
  manifest="$("$@" images ls -q "name==$ref" 2>/dev/null | head -n1)"
  [[ -n "$manifest" ]] || return 0
  manifest="$("$@" images ls "name==$ref" | awk 'NR == 2 { print $3 }')"
  "$@" content get "$manifest" 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])' 2>/dev/null || true
}

cmd_import() {
  local sock="${1:-$CONTAINERD_SOCK}" name ref tar want have t0
  [[ -S "$sock" ]] || die "no containerd socket at $sock"
  command -v ctr >/dev/null || die "ctr (Debian package containerd) is needed to import"
  local ctr=(ctr --address "$sock" -n k8s.io)
  for name in storyteller-pause:"$PAUSE_IMAGE" storyteller-operator:"$OPERATOR_IMAGE" storyteller-worker:"$WORKER_IMAGE"; do
    ref="${name#*:}"
    name="${name%%:*}"
    tar="$IMAGES_DIR/$name.tar"
    [[ -f "$tar" ]] || die "no $tar: run $0 build first"
    t0=$SECONDS
    want="$(config_digest_of_tar "$tar")"
    # containerd names a docker-archive's short reference as Docker does.
    have="$(config_digest_in_containerd "${ctr[@]}" "docker.io/library/$ref")"
    if [[ "$have" == "$want" ]]; then
      printf '[images] %-20s %-7s %4d s  %s\n' "$name" present 0 "${want:7:12}"
      continue
    fi
    "${ctr[@]}" images import "$tar" >/dev/null
    printf '[images] %-20s %-7s %4d s  %s\n' "$name" imported $((SECONDS - t0)) "${want:7:12}"
  done
}

# --- check ------------------------------------------------------------------------------------------------

# run_as_pod REF ENV... -- CMD...: CMD in a container of REF as its pod runs it (runc: uid 1000, read-only root,
# no capabilities, no new privileges, a tmpfs /tmp, the tenant config mounted at /etc/storyteller, no network).
run_as_pod() {
  local ref="$1" ctr rootfs bundle rc=0 envs=()
  shift
  while [[ "$1" != -- ]]; do
    envs+=("$1")
    shift
  done
  shift
  ctr="$(buildah from --pull=never "$ref")" || return 1
  bundle="$(mktemp -d)"
  # Called as `run_as_pod ... || die`, where errexit does not apply: every step checked.
  if rootfs="$(buildah mount "$ctr")" && buildah inspect --type container "$ctr" >"$bundle/inspect.json" &&
    write_check_bundle "$bundle" "$rootfs" "${envs[@]}" -- "$@"; then
    runc --root "$BUILDAH_RUNROOT/runc" run --bundle "$bundle" "storyteller-check-$$" </dev/null || rc=$?
  else
    rc=1
  fi
  buildah umount "$ctr" >/dev/null || true
  buildah rm "$ctr" >/dev/null || true
  rm -rf "$bundle"
  return "$rc"
}

# write_check_bundle BUNDLE ROOTFS ENV... -- CMD...: runc's default spec (read-only root, own namespaces), made
# into the pod's: uid/gid 1000, no capabilities, the image's environment, a tmpfs /tmp, a tenant config.
write_check_bundle() {
  mkdir "$1/config" || return 1
  cat >"$1/config/tenant.json" <<'EOF' || return 1
{"tenant": "acme", "namespace": "acme", "agentName": "acme-storyteller",
 "livekit": {"url": "ws://127.0.0.1:7880", "credentialsSecret": "livekit-credentials"},
 "intro": {"llm": {"provider": "openai", "model": "gpt-4o-mini"}, "stt": {"provider": "deepgram", "model": "nova-3"},
           "tts": {"provider": "openai", "model": "gpt-4o-mini-tts"}},
 "story": {"llm": {"provider": "openai", "model": "gpt-4o"}}}
EOF
  runc spec -b "$1" || return 1
  python3 - "$@" <<'EOF'
import json, sys
bundle, rootfs, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
cut = rest.index("--")
spec = json.load(open(f"{bundle}/config.json"))
image = json.load(open(f"{bundle}/inspect.json"))["OCIv1"]["config"]
spec["root"] = {"path": rootfs, "readonly": True}
proc = spec["process"]
proc.update(terminal=False, user={"uid": 1000, "gid": 1000}, cwd="/", args=rest[cut + 1 :], noNewPrivileges=True)
proc["env"] = image.get("Env", []) + rest[:cut]
proc["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
spec["mounts"] += [
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=1g"]},
    {"destination": "/etc/storyteller", "type": "bind", "source": f"{bundle}/config", "options": ["rbind", "ro"]},
]
json.dump(spec, open(f"{bundle}/config.json", "w"))
EOF
}

# The commands the pods run, with what they need to get past their own checks.
cmd_check() {
  ((EUID == 0)) || die "images.sh needs root (runc)"
  setup_buildah
  local keys=(LIVEKIT_API_KEY=check LIVEKIT_API_SECRET=check OPENAI_API_KEY=check DEEPGRAM_API_KEY=check)
  log "check: $OPERATOR_IMAGE --help"
  run_as_pod "$OPERATOR_IMAGE" -- python -m storyteller_operator --help >/dev/null || die "$OPERATOR_IMAGE --help failed"
  log "check: $WORKER_IMAGE --help (past its config and environment checks)"
  run_as_pod "$WORKER_IMAGE" "${keys[@]}" -- python -m storyteller_worker --help >/dev/null ||
    die "$WORKER_IMAGE --help failed"
  log "check: $WORKER_IMAGE loads the framework, its plugins and Silero VAD"
  run_as_pod "$WORKER_IMAGE" -- python -c 'import livekit.agents, livekit.plugins.openai, livekit.plugins.deepgram
from livekit.plugins import silero
silero.VAD.load()
print("silero VAD loaded")' || die "$WORKER_IMAGE could not load Silero VAD"
  log "check: passed"
}

case "${1:-}" in
  build) cmd_build ;;
  check) cmd_check ;;
  apt)
    ((EUID == 0)) || die "images.sh needs root (apt, buildah with chroot isolation)"
    install_apt
    ;;
  import)
    shift
    cmd_import "$@"
    ;;
  *) die "usage: $0 build | check | apt | import [CONTAINERD_SOCKET]" ;;
esac
