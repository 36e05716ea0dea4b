#!/usr/bin/env bash
# What each part of the classifier costs in real traffic: builds three
# classifiers that stop part of the way (FLOWLAT_ABLATE, see build.rs and
# bpf/ablate/) and measures them beside this tree's flowlat in the
# end-to-end bench's kernel-time section (scripts/bench-e2e.sh --only kernel):
#   headers  a look at an untagged IPv4 TCP frame's headers and one global
#   parse    flowlat's whole parsing, up to acting on a segment
#   table    parsing and the table (insert, lookups, delete, clock, cgroup),
#            no record and no aggregate
# The ablated builds report nothing useful; they exist to be measured. Takes
# about 10 minutes (three more builds, then the bench); needs root (uses sudo
# when not root). Options go to the bench (--kernel-rounds N, --kernel-secs N,
# --kernel-rate N).
set -euo pipefail
cd "$(dirname "$0")/.."

against=()
for part in headers parse table; do
    FLOWLAT_ABLATE=$part cargo build --release --locked --target-dir "target/ablate-$part"
    against+=(--against "target/ablate-$part/release/flowlat")
done
exec scripts/bench-e2e.sh --only kernel "${against[@]}" "$@"
