#!/usr/bin/env bash
# Benchmark: `dog vdi write` of 1 GiB into a 3-node local cluster with copies 1, 2 and 3,
# next to `dd` of the same bytes to a file on the same disk, in the same run.
#
#   bench/dog-write.sh [SIZE_MIB]        (default 1024)
#
# Sheep run with fsync on (no -n): a write is acknowledged when it is durable on every
# replica. dd uses conv=fdatasync so its figure includes getting the bytes to disk too.
# Each figure is the median of three runs, alternating dog and dd.
# Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
(cd "$root" && cargo build --release -q -p sheep -p dog)
bin=$root/target/release
work=$(mktemp -d "$root/target/bench-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

base=$((20000 + RANDOM % 20000))
for i in 0 1 2; do
    "$bin/sheep" ${SHEEP_OPTS:-} -b 127.0.0.1 -p $((base + i)) --gossip-port $((base + 100 + i)) --nbd-port 0 -z "$i" \
        -c "local:$work/local" "$work/n$i" >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
dog() { "$bin/dog" "$@" -a 127.0.0.1 -p "$base"; }
for _ in $(seq 1 100); do
    [ "$(dog node list -r 2>/dev/null | wc -l)" = 3 ] && break
    sleep 0.1
done

head -c $((size_mib << 20)) /dev/urandom >"$work/src"
seconds() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
mbps() { echo "scale=1; $size_mib * 1048576 / $1 / 1000000" | bc -l; }

median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }

echo "| copies | dog vdi write (MB/s) | dd conv=fdatasync (MB/s) | dog / dd |"
echo "|---|---|---|---|"
for copies in 1 2 3; do
    dog cluster format -f --copies "$copies" >/dev/null
    dd_runs=() dog_runs=()
    # Alternate the two, three times each, and keep the median of each.
    for run in 1 2 3; do
        sync
        dd_runs+=("$(seconds dd if="$work/src" of="$work/dd.out" bs=4M conv=fdatasync status=none)")
        rm -f "$work/dd.out"
        dog vdi create "bench$run" "$((size_mib * 2))M"
        sync
        dog_runs+=("$(seconds dog vdi write "bench$run" <"$work/src")")
        dog vdi read "bench$run" 0 "${size_mib}M" | cmp - "$work/src"
        dog vdi delete "bench$run"
    done
    t_dd=$(median "${dd_runs[@]}")
    t_dog=$(median "${dog_runs[@]}")
    echo "| $copies | $(mbps "$t_dog") | $(mbps "$t_dd") | $(echo "scale=2; $t_dd / $t_dog" | bc -l) |"
done
