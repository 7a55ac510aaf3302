#!/usr/bin/env bash
# Build stripe-mock (Stripe's own API emulator) from the Go module proxy, once, into ~/.cache/nexa/bin.
# The billing tests start it on loopback; nothing here reaches Stripe.
set -euo pipefail

VERSION="${STRIPE_MOCK_VERSION:-v0.203.0}"
BIN_DIR="${NEXA_CACHE_DIR:-$HOME/.cache/nexa}/bin"
TARGET="$BIN_DIR/stripe-mock-$VERSION"

if [ -x "$TARGET" ]; then
    echo "$TARGET"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "stripe-mock: go is not installed (needed once, to build it)" >&2
    exit 1
fi
mkdir -p "$BIN_DIR"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
echo "stripe-mock: building $VERSION with $(go version | cut -d' ' -f3)" >&2
started=$SECONDS
GOBIN="$build" CGO_ENABLED=0 go install "github.com/stripe/stripe-mock@$VERSION"
mv "$build/stripe-mock" "$TARGET"
echo "stripe-mock: built in $((SECONDS - started))s" >&2
echo "$TARGET"
