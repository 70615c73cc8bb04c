#!/usr/bin/env bash
# Benchmark: the panel driver (examples/panel_driver.rs) against a 3-node local cluster,
# copies 2, fsync on, release build (issue 6). What a panel pays to give a VM its disk:
# clone the golden snapshot and attach the clone through the storage API, per VM, next to
# a full `cp` of the base image (+ sync) on the same disk, measured in the same run.
#
#   bench/panel.sh [IMAGE_MIB [VMS [REPS]]]        (defaults 1024 10 3)
#
# Each rep: `cp` of the raw image (+ sync), then the driver: import (qemu-img convert into
# the attachment's NBD address), snapshot, VMS x (clone + attach), tear down. Medians over
# REPS; prints one Markdown table row per figure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mib=${1:-1024}
vms=${2:-10}
reps=${3:-3}
for cmd in qemu-img bc; do
    command -v "$cmd" >/dev/null || { echo "$0: $cmd is required" >&2; exit 1; }
done
(cd "$root" && cargo build --release -q -p sheep -p dog && cargo build --release -q -p sheepfold-tests --example panel_driver)
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
        --nbd-port $((base + 200 + i)) --http-port $((base + 300 + i)) -z "$i" \
        -c "local:$work/local" "$work/n$i" >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
dog() { "$bin/dog" "$@" -a 127.0.0.1 -p "$base"; }
for _ in $(seq 1 100); do
    [ "$(dog node list -r 2>/dev/null | wc -l)" = 3 ] && break
    sleep 0.1
done
dog cluster format --copies 2 >/dev/null
for _ in $(seq 1 100); do
    dog cluster info | grep -q "^Cluster status: running" && break
    sleep 0.1
done

head -c "${mib}M" /dev/urandom >"$work/image.raw"
sync
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
cps=() imports=() snaps=() pervm=() downs=()
for r in $(seq 1 "$reps"); do
    s=$EPOCHREALTIME
    cp "$work/image.raw" "$work/copy.raw" && sync
    e=$EPOCHREALTIME
    cps+=("$(echo "$e - $s" | bc -l)")
    rm "$work/copy.raw"
    sync
    out=$("$root/target/release/examples/panel_driver" --api "http://127.0.0.1:$((base + 300 + r % 3))" \
        --image "$work/image.raw" --vms "$vms" --quiet)
    [ "$r" = 1 ] && echo "$out" >"$work/first-run.txt"
    step() { echo "$out" | grep "^$1 " | awk '{print $NF}'; }
    imports+=("$(step 'import base image')")
    snaps+=("$(step 'snapshot')")
    pervm+=("$(step 'clone and attach, per VM')")
    downs+=("$(step 'tear down')")
done
cp_s=$(median "${cps[@]}")
vm_s=$(median "${pervm[@]}")
echo "driver output (first run):"
cat "$work/first-run.txt"
echo
echo "| image | import (s) | snapshot (ms) | clone + attach per VM (ms) | cp + sync of the image (s) | cp / per VM | tear down of $vms VMs (s) |"
echo "|---|---|---|---|---|---|---|"
# The driver reports milliseconds.
printf '| %d MiB | %.2f | %.1f | %.1f | %.2f | %.0fx | %.2f |\n' "$mib" \
    "$(echo "$(median "${imports[@]}") / 1000" | bc -l)" "$(median "${snaps[@]}")" "$vm_s" "$cp_s" \
    "$(echo "$cp_s * 1000 / $vm_s" | bc -l)" "$(echo "$(median "${downs[@]}") / 1000" | bc -l)"
