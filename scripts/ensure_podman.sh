#!/usr/bin/env bash
# Make sure podman (with runc, and netavark + iptables for networked containers) and a static
# busybox are installed: the container-job integration tests run an image imported from a
# busybox rootfs (no registry is needed).
# Quiet and idempotent when they are there; without root it only says what is missing
# (those tests then skip where podman is absent).
set -euo pipefail

have() {
    # `podman info` fails while a helper it needs (netavark) is missing.
    command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v iptables >/dev/null 2>&1 && podman info >/dev/null 2>&1 &&
        { [ -x /bin/busybox ] || [ -x /usr/bin/busybox ]; }
}

if have; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_podman: podman, runc or busybox missing and no root: the container-job tests will skip" >&2
    echo "ensure_podman: install them with 'apt-get install podman runc netavark iptables busybox-static'" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_podman: apt-get is unavailable; install podman, runc and a static busybox yourself" >&2
    exit 0
fi

echo "ensure_podman: installing podman, runc, netavark, iptables and busybox-static from the Debian archive"
${as_root[@]+"${as_root[@]}"} apt-get update -qq
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends podman runc netavark iptables busybox-static >/dev/null
