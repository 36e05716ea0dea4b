#!/usr/bin/env bash
# The end-to-end benchmark (README, "Performance"): a handshake storm through a
# veth pair between two namespaces with flowlat attached, bulk iperf3
# throughput with and without it, and its start-up time, for the release
# binary and the static musl one, and the classifier's kernel time per
# handshake in that traffic. Takes about five minutes; needs root (it
# makes namespaces and attaches filters) and is not part of the test suite.
# Options go to the bench: --quick, --secs N, --rates 2000,5000,0 (0 = flat
# out), --clients N.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v clang >/dev/null || missing+=(clang)
command -v ip >/dev/null || missing+=(iproute2)
command -v iperf3 >/dev/null || missing+=(iperf3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The static binary's start-up is measured too, when its target is installed.
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    cargo build --release --locked --target x86_64-unknown-linux-musl --target-dir target/static-musl
else
    echo "x86_64-unknown-linux-musl is not installed: measuring the release binary only" >&2
fi

if [ "$(id -u)" -ne 0 ]; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="sudo -E"
fi
exec cargo bench --locked --bench e2e -- --run "$@"
