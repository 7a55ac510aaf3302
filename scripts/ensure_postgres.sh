#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed.
# The integration tests start a throwaway server from them; they never use a system
# cluster. Quiet and idempotent when the binaries are already there.
set -euo pipefail

have_server_binaries() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        return 0
    fi
    # Debian keeps the server binaries off PATH, one directory per major version.
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            return 0
        fi
    done
    return 1
}

if have_server_binaries; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_postgres: PostgreSQL server binaries (initdb, pg_ctl) not found." >&2
    echo "ensure_postgres: install them as root, e.g. 'apt-get install postgresql', then re-run." >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_postgres: PostgreSQL server binaries not found and apt-get is unavailable;" >&2
    echo "ensure_postgres: install PostgreSQL (initdb, pg_ctl) with this system's package manager." >&2
    exit 1
fi

echo "ensure_postgres: installing PostgreSQL from the Debian archive"
${as_root[@]+"${as_root[@]}"} apt-get update -qq
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if ! have_server_binaries; then
    echo "ensure_postgres: apt-get installed 'postgresql' but initdb/pg_ctl are still missing." >&2
    exit 1
fi
