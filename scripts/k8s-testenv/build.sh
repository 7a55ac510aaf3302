#!/usr/bin/env bash
# Build a real Kubernetes control plane for the tests from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd and kwok.
#
# Binaries are cached outside the repo, by version, in
#   ${NEXA_CACHE_DIR:-$HOME/.cache/nexa}/k8s/<k8s-version>/bin
# so a second run returns at once and prints nothing. The throwaway Go modules used to
# build them live next to the binaries (…/<version>/src-*), never in the repo.
#
# Usage: build.sh            build what is missing (quiet when everything is cached)
#        build.sh --bin-dir  print the binary directory and exit (builds nothing)
#        build.sh --force    rebuild everything
# Versions can be overridden with NEXA_K8S_VERSION, NEXA_ETCD_VERSION, NEXA_KWOK_VERSION.
set -euo pipefail

K8S_VERSION="${NEXA_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${NEXA_ETCD_VERSION:-v3.5.35}"
KWOK_VERSION="${NEXA_KWOK_VERSION:-v0.7.0}"

CACHE_ROOT="${NEXA_CACHE_DIR:-$HOME/.cache/nexa}/k8s"
VERSION_DIR="$CACHE_ROOT/$K8S_VERSION"
BIN_DIR="$VERSION_DIR/bin"

FORCE=0
case "${1:-}" in
  --bin-dir) echo "$BIN_DIR"; exit 0 ;;
  --force) FORCE=1 ;;
  "") ;;
  *) echo "usage: $0 [--bin-dir|--force]" >&2; exit 2 ;;
esac

log() { echo "k8s-testenv: $*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "Go is required (https://go.dev/dl); none found on PATH"

# A binary counts as cached when it exists and its sidecar stamp names the wanted version.
is_cached() {
  local name="$1" version="$2"
  [[ $FORCE == 0 && -x "$BIN_DIR/$name" && "$(cat "$BIN_DIR/.$name.version" 2>/dev/null)" == "$version" ]]
}

stamp() { echo "$2" >"$BIN_DIR/.$1.version"; }

check_needs() {
  need_k8s=1; need_etcd=1; need_kwok=1
  is_cached kube-apiserver "$K8S_VERSION" && is_cached kube-controller-manager "$K8S_VERSION" \
    && is_cached kube-scheduler "$K8S_VERSION" && is_cached kubectl "$K8S_VERSION" && need_k8s=0
  is_cached etcd "$ETCD_VERSION" && need_etcd=0
  is_cached kwok "$KWOK_VERSION" && need_kwok=0
  [[ $need_k8s == 1 || $need_etcd == 1 || $need_kwok == 1 ]]
}
check_needs || exit 0

mkdir -p "$BIN_DIR"
# One build at a time per version dir: the test fixture and `make k8s-testenv` may race.
exec 9>"$VERSION_DIR/.build.lock"
if ! flock -n 9; then
  log "another build holds $VERSION_DIR/.build.lock; waiting for it"
  flock 9
  # The other build may have produced everything we need.
  FORCE=0
  check_needs || exit 0
fi

: >"$VERSION_DIR/build.log"
GO_VERSION="$(go env GOVERSION)"
export CGO_ENABLED=0
# Respect a caller's parallelism (GOFLAGS=-p=N); the default is one job per CPU.
GO_BUILD=(go build -trimpath)

# Field $2 of the `go` line in a go.mod file.
go_line() { awk '$1 == "go" { print $2; exit }' "$1"; }

# Path of the go.mod that the module proxy serves for module@version.
downloaded_gomod() {
  go mod download -json "$1@$2" \
    | awk -F'"' '$2 == "GoMod" { print $4 }'
}

# Fail early, with a clear message, when the installed Go is older than a module needs.
check_go_line() {
  local module="$1" needed="$2"
  local have="${GO_VERSION#go}"
  if [[ "$(printf '%s\n%s\n' "$needed" "$have" | sort -V | head -n1)" != "$needed" ]]; then
    die "$module needs Go >= $needed but $GO_VERSION is installed; pick an older release via the NEXA_*_VERSION variables"
  fi
}

elapsed() { echo $(($(date +%s) - $1)); }

# Run a command with its chatter (module downloads) kept in a log; show the log if it fails.
quietly() {
  local what="$1"; shift
  local log="$VERSION_DIR/build.log"
  if ! "$@" >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "$what failed (full log: $log)"
  fi
}

build_kubernetes() {
  local t0; t0=$(date +%s)
  local src="$VERSION_DIR/src-kubernetes"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging_version="v0.${K8S_VERSION#v1.}"
  log "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $K8S_VERSION with $GO_VERSION (cold: tens of minutes on 2 cores)"

  local upstream; upstream="$(downloaded_gomod k8s.io/kubernetes "$K8S_VERSION")"
  [[ -f "$upstream" ]] || die "could not download k8s.io/kubernetes@$K8S_VERSION from the Go module proxy"
  local goline; goline="$(go_line "$upstream")"
  check_go_line "k8s.io/kubernetes@$K8S_VERSION" "$goline"

  # k8s.io/kubernetes requires its staging modules at v0.0.0 and points them at
  # ./staging with replace lines, which only work inside its own repo. Each staging
  # module is published at v0.<minor>.<patch>; replace every one with that release.
  rm -rf "$src"; mkdir -p "$src"
  {
    echo "module nexa.local/k8s-testenv/kubernetes"
    echo
    echo "go $goline"
    echo
    # godebug lines of a dependency are ignored; copy them so the binaries behave as upstream's.
    grep -E '^godebug ' "$upstream" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    awk -v v="$staging_version" '$2 == "=>" && $3 ~ /^\.\/staging\// { printf "\t%s => %s %s\n", $1, $1, v }' "$upstream"
    echo ")"
  } >"$src/go.mod"
  grep -q "=> k8s.io/api $staging_version" "$src/go.mod" || die "no staging replace lines found in $upstream"

  local tools=(cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubectl)
  local pkgs=()
  for t in "${tools[@]}"; do pkgs+=("k8s.io/kubernetes/$t"); done
  # `tool` lines keep the requirements alive and let go.sum be filled in one step.
  (cd "$src" && quietly "resolving k8s.io/kubernetes@$K8S_VERSION" go get -tool "${pkgs[@]/%/@$K8S_VERSION}")

  local ldflags="-s -w"
  local vpkg
  for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor"
    ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done
  local out="$VERSION_DIR/.out-kubernetes"
  rm -rf "$out"; mkdir -p "$out"
  (cd "$src" && quietly "building Kubernetes $K8S_VERSION" "${GO_BUILD[@]}" -ldflags "$ldflags" -o "$out/" "${pkgs[@]}")
  for t in "${tools[@]}"; do
    local name="${t#cmd/}"
    mv -f "$out/$name" "$BIN_DIR/$name"
    stamp "$name" "$K8S_VERSION"
  done
  rm -rf "$out"
  # Captured first: `grep -q` closing the pipe early would fail the check under pipefail.
  local reported; reported="$("$BIN_DIR/kube-apiserver" --version)"
  [[ "$reported" == "Kubernetes $K8S_VERSION" ]] || die "kube-apiserver reports '$reported', not $K8S_VERSION"
  log "built Kubernetes $K8S_VERSION in $(elapsed "$t0")s"
}

build_etcd() {
  local t0; t0=$(date +%s)
  local src="$VERSION_DIR/src-etcd"
  log "building etcd $ETCD_VERSION with $GO_VERSION"
  local upstream; upstream="$(downloaded_gomod go.etcd.io/etcd/server/v3 "$ETCD_VERSION")"
  [[ -f "$upstream" ]] || die "could not download go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  local goline; goline="$(go_line "$upstream")"
  check_go_line "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$goline"
  # etcd's server module requires its sibling modules at published versions; only its
  # replace lines (ignored in a dependency) stop `go install`, so no replaces are needed.
  rm -rf "$src"; mkdir -p "$src"
  printf 'module nexa.local/k8s-testenv/etcd\n\ngo %s\n' "$goline" >"$src/go.mod"
  (cd "$src" && quietly "resolving go.etcd.io/etcd/server/v3@$ETCD_VERSION" go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  # The package go.etcd.io/etcd/server/v3 is etcd's main (it wraps etcdmain).
  (cd "$src" && quietly "building etcd $ETCD_VERSION" "${GO_BUILD[@]}" -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv -f "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
  local reported; reported="$("$BIN_DIR/etcd" --version)"
  [[ "$reported" == *"etcd Version: ${ETCD_VERSION#v}"* ]] || die "etcd reports '${reported%%$'\n'*}', not ${ETCD_VERSION#v}"
  stamp etcd "$ETCD_VERSION"
  log "built etcd $ETCD_VERSION in $(elapsed "$t0")s"
}

build_kwok() {
  local t0; t0=$(date +%s)
  log "building kwok $KWOK_VERSION with $GO_VERSION"
  local upstream; upstream="$(downloaded_gomod sigs.k8s.io/kwok "$KWOK_VERSION")"
  [[ -f "$upstream" ]] || die "could not download sigs.k8s.io/kwok@$KWOK_VERSION"
  check_go_line "sigs.k8s.io/kwok@$KWOK_VERSION" "$(go_line "$upstream")"
  # kwok has no replace lines, so `go install` works directly.
  local gobin="$VERSION_DIR/.out-kwok"
  rm -rf "$gobin"; mkdir -p "$gobin"
  GOBIN="$gobin" quietly "building kwok $KWOK_VERSION" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  mv -f "$gobin/kwok" "$BIN_DIR/kwok"
  rm -rf "$gobin"
  stamp kwok "$KWOK_VERSION"
  log "built kwok $KWOK_VERSION in $(elapsed "$t0")s"
}

T0=$(date +%s)
[[ $need_etcd == 1 ]] && build_etcd
[[ $need_kwok == 1 ]] && build_kwok
[[ $need_k8s == 1 ]] && build_kubernetes
log "done in $(elapsed "$T0")s; binaries in $BIN_DIR"
