#!/usr/bin/env bash
# Benchmark: importing a 1 GiB raw image into a VDI over NBD with
# `qemu-img convert -n -O raw SRC nbd://...`, in a 3-node local cluster with copies 2 and 3,
# next to `cp` of the same file on the same disk followed by `sync`, in the same run.
#
#   bench/import.sh [SIZE_MIB]        (default 1024)
#
# Sheep run from a release build with fsync on (no -n). The image is random data (nothing to
# skip as zeros). qemu-img flushes the export before it exits, and `cp` is followed by `sync`,
# so both figures include getting the bytes to disk. For context, the same file is also
# written with `dog vdi write` (the Sheepdog protocol) into another VDI. Each import is verified
# with `qemu-img compare` (untimed). Each figure is the median of three runs, alternating.
# Prints a Markdown table.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
size_mib=${1:-1024}
for cmd in qemu-img nbdinfo bc; do
    command -v "$cmd" >/dev/null || { echo "$0: $cmd is required" >&2; exit 1; }
done
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
    "$bin/sheep" -b 127.0.0.1 -p $((base + i)) --gossip-port $((base + 100 + i)) \
        --nbd-port $((base + 200 + i)) -z "$i" -c "local:$work/local" "$work/n$i" \
        >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
dog() { "$bin/dog" "$@" -a 127.0.0.1 -p "$base"; }
for _ in $(seq 1 100); do
    [ "$(dog node list -r 2>/dev/null | wc -l)" = 3 ] && break
    sleep 0.1
done

head -c $((size_mib << 20)) /dev/urandom >"$work/src.raw"
seconds() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
mbps() { echo "scale=1; $size_mib * 1048576 / $1 / 1000000" | bc -l; }
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
cp_sync() { cp "$work/src.raw" "$work/copy.raw" && sync; }

echo "| copies | qemu-img convert over NBD | cp + sync | convert / cp time | dog vdi write |"
echo "|---|---|---|---|---|"
for copies in 2 3; do
    dog cluster format -f --copies "$copies" >/dev/null
    cp_runs=() imp_runs=() dog_runs=()
    for run in 1 2 3; do
        sync
        cp_runs+=("$(seconds cp_sync)")
        rm -f "$work/copy.raw"
        dog vdi create "imp$run" "${size_mib}M"
        uri="nbd://127.0.0.1:$((base + 200 + run % 3))/imp$run"
        sync
        imp_runs+=("$(seconds qemu-img convert -n -f raw -O raw "$work/src.raw" "$uri")")
        qemu-img compare -q -f raw -F raw "$work/src.raw" "$uri"
        dog vdi delete "imp$run"
        dog vdi create "dog$run" "${size_mib}M"
        sync
        dog_runs+=("$(seconds dog vdi write "dog$run" <"$work/src.raw")")
        dog vdi delete "dog$run"
    done
    t_cp=$(median "${cp_runs[@]}")
    t_imp=$(median "${imp_runs[@]}")
    t_dog=$(median "${dog_runs[@]}")
    printf '| %s | %.2f s (%s MB/s) | %.2f s (%s MB/s) | %.2f | %.2f s (%s MB/s) |\n' \
        "$copies" "$t_imp" "$(mbps "$t_imp")" "$t_cp" "$(mbps "$t_cp")" \
        "$(echo "$t_imp / $t_cp" | bc -l)" "$t_dog" "$(mbps "$t_dog")"
done
