#!/usr/bin/env bash
# Builds flowlat and runs it as root: `scripts/run.sh eth0`, or with any of
# flowlat's options (`scripts/run.sh --summary --duration 30s eth0`).
# Installs clang, which compiles the BPF probe, when it is missing (Debian
# and Ubuntu); builds as the calling user; uses sudo only when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

# clang compiles the BPF probe.
command -v clang >/dev/null || install_missing clang
cargo build --release --locked
exec_as_root() { if [ "$(id -u)" -eq 0 ]; then exec "$@"; else exec sudo "$@"; fi; }
exec_as_root ./target/release/flowlat "$@"
