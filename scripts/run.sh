#!/usr/bin/env bash
# Builds flowlat and runs it as root: `scripts/run.sh eth0`, or with any of
# flowlat's options (`scripts/run.sh --summary --duration 30s eth0`).
# Installs clang, which compiles the BPF probe, when it is missing (Debian
# and Ubuntu); builds as the calling user; uses sudo only when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v clang >/dev/null; then
    echo "installing clang (it compiles the BPF probe)" >&2
    # A fresh machine has no package lists until the first update.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
fi
cargo build --release --locked
exec_as_root() { if [ "$(id -u)" -eq 0 ]; then exec "$@"; else exec sudo "$@"; fi; }
exec_as_root ./target/release/flowlat "$@"
