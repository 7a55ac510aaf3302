#!/usr/bin/env bash
# Build promtool (Prometheus's rule checker and unit-test runner) from the Go module proxy, once,
# into ~/.cache/nexa/bin. tests/unit/test_alert_rules.py runs `promtool test rules` with it.
set -euo pipefail

VERSION="${PROMTOOL_VERSION:-v0.316.0}"  # the Go module version of Prometheus 3.x's promtool
BIN_DIR="${NEXA_CACHE_DIR:-$HOME/.cache/nexa}/bin"
TARGET="$BIN_DIR/promtool-$VERSION"

if [ -x "$TARGET" ]; then
    echo "$TARGET"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "promtool: go is not installed (needed once, to build it)" >&2
    exit 1
fi
mkdir -p "$BIN_DIR"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
echo "promtool: building $VERSION with $(go version | cut -d' ' -f3) (a few minutes, once)" >&2
started=$SECONDS
# One build lock per version: the Makefile and a test may both ask at once.
exec 9>"$BIN_DIR/.promtool-$VERSION.lock"
flock 9
if [ -x "$TARGET" ]; then
    echo "$TARGET"
    exit 0
fi
GOBIN="$build" CGO_ENABLED=0 go install "github.com/prometheus/prometheus/cmd/promtool@$VERSION" >&2
mv "$build/promtool" "$TARGET"
echo "promtool: built in $((SECONDS - started))s" >&2
echo "$TARGET"
