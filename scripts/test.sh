#!/usr/bin/env bash
# Runs flowlat's whole test suite: unit tests, the classifier under
# BPF_PROG_TEST_RUN, the end-to-end tests in network namespaces, and the
# tests of the kit they share (tests/kit, a member of the workspace).
# Installs what a fresh Debian machine lacks, builds as the calling user and
# runs the test binaries as root (they load BPF programs and make namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

missing=()
command -v clang >/dev/null || missing+=(clang)
command -v tc >/dev/null || missing+=(iproute2)
command -v setpriv >/dev/null || missing+=(util-linux)
# The lifecycle tests check with bpftool that no program or map outlives flowlat.
command -v bpftool >/dev/null || [ -x /usr/sbin/bpftool ] || missing+=(bpftool)
# The static-binary test checks the musl build with file and strips a copy.
command -v file >/dev/null || missing+=(file)
command -v strip >/dev/null || missing+=(binutils)
# The metrics tests check the exposition with promtool and scrape it with a
# real Prometheus server (the package brings both).
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
# The loss tests run a real HTTP server and load generator through nftables
# that drops SYNs and SYN-ACKs, and hold flowlat to tcpdump's captures, read
# back with tshark (whose install asks no question: install_missing says so).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v ab >/dev/null || missing+=(apache2-utils)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing+=(nftables)
command -v tcpdump >/dev/null || [ -x /usr/bin/tcpdump ] || [ -x /usr/sbin/tcpdump ] || missing+=(tcpdump)
command -v tshark >/dev/null || missing+=(tshark)
# The Kubernetes test validates the manifests with kubernetes-validate, in a
# virtual environment of its own (pinned; Debian's pip installs nothing
# system-wide), and builds the image with podman; runc is its fallback where
# crun refuses a host with both cgroup v1 and v2 mounted.
dpkg -s python3-venv >/dev/null 2>&1 || missing+=(python3-venv)
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
# The process tests' listeners and clients are small Python programs that
# name themselves, thread and fork.
command -v python3 >/dev/null || missing+=(python3)
install_missing ${missing[@]+"${missing[@]}"}
if [ "$(target/kubernetes-validate/bin/kubernetes-validate --version 2>/dev/null)" != 1.37.0 ]; then
    rm -rf target/kubernetes-validate
    /usr/bin/python3 -m venv target/kubernetes-validate
    target/kubernetes-validate/bin/pip install --quiet kubernetes-validate==1.37.0
fi

if [ "$(id -u)" -ne 0 ]; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="sudo -E"
fi
# One line at the end that counts every test binary's results together.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
