#!/usr/bin/env bash
# The end-to-end benchmark (README, "Performance"): first the kernel time
# flowlat's classifier adds per handshake in real traffic beyond an empty
# classifier, at both ends of a veth pair between two namespaces and in each
# mode (records, kernel aggregation); then a handshake storm with flowlat
# attached, bulk iperf3 throughput with and without it, and its start-up
# time, for the release binary and the static musl one. Takes about five
# minutes; needs root (it makes namespaces and attaches filters) and is not
# part of the test suite. Tables on stdout, figures in target/flowlat-e2e.json.
# Options go to the bench: --quick, --only kernel,startup,ramp,daemon,capacity,rings,bulk,node
# (sections), --secs N, --rates 2000,5000,0 (0 = flat out), --clients N,
# --kernel-rounds N, --kernel-secs N, --kernel-rate N, --kernel-waiting N
# (attempts kept waiting for an answer beside the storm), --against PATH (another
# flowlat build measured beside this one in the kernel-time section).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

missing=()
command -v clang >/dev/null || missing+=(clang)
command -v ip >/dev/null || missing+=(iproute2)
command -v iperf3 >/dev/null || missing+=(iperf3)
install_missing ${missing[@]+"${missing[@]}"}

# The static binary's start-up is measured too, when its target is installed
# and the start-up section runs.
startup=yes
args=("$@")
for i in "${!args[@]}"; do
    if [ "${args[$i]}" = --only ] && [[ ",${args[$((i + 1))]:-}," != *,startup,* ]]; then
        startup=no
    fi
done
if [ $startup = yes ]; then
    if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        cargo build --release --locked --target x86_64-unknown-linux-musl --target-dir target/static-musl
    else
        echo "x86_64-unknown-linux-musl is not installed: measuring the release binary only" >&2
    fi
fi

if [ "$(id -u)" -ne 0 ]; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="sudo -E"
fi
exec cargo bench --locked --bench e2e -- --run "$@"
