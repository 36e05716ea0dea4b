#!/usr/bin/env bash
# Where flowlat's time goes under a handshake storm: the end-to-end bench's
# storm through a veth pair between two namespaces, flowlat attached at one
# end, sampled machine-wide with `perf record -a -g`, BPF programs' JIT
# symbols visible. Prints flowlat's share of the samples by function (its own
# instructions, htab_lru_map_update_elem, bpf_perf_event_output's path, ...)
# and by what the program called. Takes about a minute after the build; needs
# root (uses sudo when not root) and installs linux-perf when perf is missing.
#
#   scripts/profile.sh [--end in|out] [--mode record|aggregate] [--secs N] [--rate N] [--bin PATH]
#
# Last, the instructions of flowlat's programs that the samples landed on,
# disassembled from the programs' JIT images (the bench saves them beside the
# profile while flowlat runs).
#
# --end in (default): flowlat at the server's end, every handshake `in`; out:
# at the clients' end. --bin profiles another build of flowlat instead of
# this tree's. The raw profile stays in target/flowlat-profile.data (`perf
# report -i` it for more); only the samples of this run's flowlat programs
# are counted, told apart from other flowlat processes by their tags.
#
# Reading it: samples come from a timer (no hardware counters in a virtual
# machine), and a sample due while interrupts are off lands where they are
# turned on again, so the time spent holding a hash bucket's or the LRU's lock
# shows at the end of the function that held it, not inside.
set -euo pipefail
cd "$(dirname "$0")/.."

end=in mode=record secs=10 rate=5000 bin=()
while [ $# -gt 0 ]; do
    case "$1" in
        --end) end="$2"; shift 2 ;;
        --mode) mode="$2"; shift 2 ;;
        --secs) secs="$2"; shift 2 ;;
        --rate) rate="$2"; shift 2 ;;
        --bin) bin=(--against "$2"); shift 2 ;;
        *) echo "usage: $0 [--end in|out] [--mode record|aggregate] [--secs N] [--rate N] [--bin PATH]" >&2; exit 2 ;;
    esac
done

. scripts/lib.sh

missing=()
command -v perf >/dev/null || missing+=(linux-perf)
command -v clang >/dev/null || missing+=(clang)
command -v ip >/dev/null || missing+=(iproute2)
command -v objdump >/dev/null || missing+=(binutils)
install_missing ${missing[@]+"${missing[@]}"}

# JIT-compiled programs appear in kallsyms (and so in the profile) only with this.
kallsyms=$(sysctl -n net.core.bpf_jit_kallsyms)
restore() { as_root sysctl -q -w net.core.bpf_jit_kallsyms="$kallsyms"; }
trap restore EXIT
as_root sysctl -q -w net.core.bpf_jit_kallsyms=1

data=target/flowlat-profile.data
if [ "$(id -u)" -ne 0 ]; then
    export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="sudo -E"
fi
cargo bench --locked --bench e2e -- --run --profile "$data" --profile-end "$end" \
    --profile-mode "$mode" --profile-secs "$secs" --kernel-rate "$rate" ${bin[@]+"${bin[@]}"}

echo
echo "flowlat at the $end end ($mode), a storm of $rate handshakes/s, $secs s sampled:"
echo
# Only this run's flowlat: its programs' tags, which the bench wrote down.
tags=$(paste -sd'|' "${data%.data}.tags")
as_root perf script -i "$data" -F period,ip,sym 2>/dev/null | awk -v hs=$((rate * secs)) -v tags="$tags" '
# A sample is a line with its period (ns), then its call chain, leaf first,
# one tab-indented frame per line.
function flush(   i, prog) {
    if (n == 0) return
    total += period
    prog = 0
    for (i = 1; i <= n; i++) if (f[i] ~ ours_re) { prog = i; break }
    if (prog) {
        ours += period
        self[prog == 1 ? OWN : f[1]] += period
        called[prog == 1 ? OWN : f[prog - 1]] += period
    }
    n = 0
}
function table(title, a,   k, sort) {
    printf "\n%s\n\n| function | share of flowlat'"'"'s samples | ns per handshake |\n|---|---:|---:|\n", title
    sort = "sort -t\"|\" -k3 -rn"
    for (k in a)
        if (a[k] >= ours / 200)
            printf "| `%s` | %.1f%% | %.0f |\n", k, 100 * a[k] / ours, a[k] / hs | sort
    close(sort)
}
BEGIN { OWN = "(the program'"'"'s own instructions)"; ours_re = "^bpf_prog_(" tags ")_" }
/^ *[0-9]+ *$/ { flush(); period = $1; next }
/^\t/ { f[++n] = $2 }
END {
    flush()
    if (!ours) { print "no sample in a flowlat program"; exit 1 }
    printf "flowlat'"'"'s programs and what they called: %.2f%% of the samples, about %.0f ns per handshake\n", 100 * ours / total, ours / hs
    table("By function sampled (its own time; functions under 0.5% left out):", self)
    table("By what the program called (a helper or an inlined call, with everything it called):", called)
}'

# Where in the programs: each program's samples by offset (the leaf frame only;
# a sample in a helper counts above, under the helper).
echo
echo "Where in the programs' own instructions (a timer sample lands on the instruction after"
echo "the one it waited for, such as a load that missed the caches, a call or an atomic;"
echo "the two instructions before it are shown with it):"
echo
echo "| program+offset | share of the programs' own samples | ns per handshake | instructions up to the sample |"
echo "|---|---:|---:|---|"
as_root perf script -i "$data" -G -F period,ip,sym,symoff 2>/dev/null |
    awk -v tags="$tags" -v hs=$((rate * secs)) '
    $3 ~ "^bpf_prog_(" tags ")_" { n[$3] += $1; all += $1 }
    END { for (k in n) if (n[k] >= all / 100) printf "%d %.1f %.0f %s\n", n[k], 100 * n[k] / all, n[k] / hs, k }' |
    sort -rn | head -15 |
    while read -r _ share ns where; do
        tag=${where#bpf_prog_}
        tag=${tag%%_*}
        off=${where##*+}
        asm="(no JIT image)"
        image="${data%.data}.$tag.jit"
        if [ -s "$image" ]; then
            asm=$(objdump -D -b binary -mi386:x86-64 "$image" | awk -F '\t' -v off="$(printf '%x' "$off")" '
                NF >= 3 { sub(/^ +/, "", $1); sub(/:$/, "", $1); k++; at[k] = $1; text[k] = $3; gsub(/ +/, " ", text[k]) }
                END {
                    for (i = 1; i <= k; i++) if (at[i] == off) break
                    if (i > k) { print "(offset not at an instruction)"; exit }
                    s = ""
                    for (j = (i > 2 ? i - 2 : 1); j <= i; j++) s = s (s == "" ? "" : " ; ") "`" text[j] "`"
                    print s
                }')
        fi
        echo "| \`${where#bpf_prog_}\` | $share% | $ns | $asm |"
    done
