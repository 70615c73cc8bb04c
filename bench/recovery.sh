#!/usr/bin/env bash
# Benchmark: recovery after losing a node (issue 5), 4-node local cluster, distinct zones,
# copies 3, fsync on, release build, default throttle, --recovery-grace 0; each figure next to
# a baseline measured in the same run.
#
#   bench/recovery.sh [HELD_GIB [FIO_SECONDS]]    (defaults 4 8)
#
# 1. A VDI is filled with random data (nbdcopy over NBD) so that node 3 holds about HELD_GIB of
#    object data (copies 3 of 4 nodes: the VDI is 4/3 of that). A second VDI, `lat`, 1 GiB, is
#    filled too, so the latency jobs write into allocated objects.
# 2. Idle baseline: fio (ioengine=nbd, 4 KiB random writes, iodepth 1, a flush after each write)
#    on `lat` through node 0 for FIO_SECONDS. Latency of a write and its flush: the mean over
#    the job (runtime divided by writes) and the sum of fio's p50 write and p50 flush latency.
# 3. Throughput: `kill -9` node 3 and time, from the kill (so failure detection is included),
#    until every object has 3 copies across the survivors' store directories. Throughput =
#    bytes node 3 held / that time. Baseline: `cp` of as many bytes on the same disk + `sync`.
# 4. Latency during recovery: node 3 comes back with an empty store (a replaced disk); while the
#    cluster moves its share of the objects back onto it, the fio job of step 2 runs again. The
#    script checks that the recovery outlasted the fio job.
# Targets: recovery >= 0.5 x cp throughput; latency during recovery <= 2 x idle.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
held_gib=${1:-4}
fio_s=${2:-8}
for cmd in fio nbdcopy jq bc; do
    command -v "$cmd" >/dev/null || { echo "$0: $cmd is required" >&2; exit 1; }
done
(cd "$root" && cargo build --release -q -p sheep -p dog)
bin=$root/target/release
work=$(mktemp -d "$root/target/bench-XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

base=$((20000 + RANDOM % 20000))
for i in 0 1 2 3; do
    "$bin/sheep" -b 127.0.0.1 -p $((base + i)) --gossip-port $((base + 100 + i)) \
        --nbd-port $((base + 200 + i)) -z "$i" -c "local:$work/local" --recovery-grace 0 \
        "$work/n$i" >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
dog() { "$bin/dog" "$@" -a 127.0.0.1 -p "$base"; }
for _ in $(seq 1 100); do
    [ "$(dog node list -r 2>/dev/null | wc -l)" = 4 ] && break
    sleep 0.1
done
dog cluster format --copies 3 >/dev/null
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
ratio() { printf '%.3g' "$(echo "$1 / $2" | bc -l)"; }
objects() { find "$work/n$1/obj" -maxdepth 1 2>/dev/null -name '[0-9a-f]*' -type f | wc -l; }

# 1. Fill.
vdi_mib=$((held_gib * 1024 * 4 / 3))
head -c "${vdi_mib}M" /dev/urandom >data.raw
dog vdi create data "${vdi_mib}M"
nbdcopy data.raw "nbd://127.0.0.1:$((base + 200))/data"
rm data.raw
dog vdi create lat 1G
head -c 1G /dev/urandom >lat.raw
nbdcopy lat.raw "nbd://127.0.0.1:$((base + 200))/lat"
rm lat.raw

fio_job() {
    fio --name=lat --ioengine=nbd --uri="nbd://127.0.0.1:$((base + 200))/lat" --rw=randwrite \
        --bs=4k --iodepth=1 --fsync=1 --size=1G --time_based --runtime="$1" \
        --output-format=json --output="fio-$1-$RANDOM.json" >/dev/null 2>&1
    jq -r '.jobs[0]
        | ((.write.clat_ns.percentile["50.000000"] + (.sync.lat_ns.percentile["50.000000"] // 0))
            / 1000) as $p50
        | (.job_runtime * 1000 / .write.total_ios) as $mean
        | "\($p50) \($mean)"' "$(ls -t fio-*.json | head -1)"
}

# 2. Idle latency.
read -r idle_p50 idle_mean < <(fio_job "$fio_s")
# Object data node 3 holds: 4 MiB per data object (files are sparse; the trailer is not data).
# Every object has 3 copies on the 4 nodes; recovery is done when the 3 survivors hold them all.
n3_objects=$(objects 3)
n3_bytes=$((n3_objects * 4 * 1024 * 1024))
total_objects=$(( $(objects 0) + $(objects 1) + $(objects 2) + n3_objects ))

# 3. Kill node 3, measure recovery without client load.
start=$EPOCHREALTIME; date -u +%H:%M:%S.%N > "$work/kill.t"
kill -9 "${pids[3]}"
while :; do
    have=$(( $(objects 0) + $(objects 1) + $(objects 2) ))
    [ "$have" -ge "$total_objects" ] && break
    sleep 0.1
    if [ "$(echo "$EPOCHREALTIME - $start > 600" | bc)" = 1 ]; then
        echo "recovery did not finish in 600 s" >&2
        exit 1
    fi
done
end=$EPOCHREALTIME
rec_s=$(echo "$end - $start" | bc -l)
rec_mbs=$(echo "$n3_bytes / 1048576 / $rec_s" | bc -l)

# 4. Node 3 returns with an empty store; latency while its share moves back onto it.
rm -rf "$work/n3"
"$bin/sheep" -b 127.0.0.1 -p $((base + 3)) --gossip-port $((base + 103)) \
    --nbd-port $((base + 203)) -z 3 -c "local:$work/local" --recovery-grace 0 \
    "$work/n3" >"$work/n3.log" 2>&1 &
pids[3]=$!
back=$EPOCHREALTIME
until [ "$(objects 3)" -gt 0 ]; do
    sleep 0.05
    if [ "$(echo "$EPOCHREALTIME - $back > 60" | bc)" = 1 ]; then
        echo "node 3 received nothing in 60 s" >&2
        exit 1
    fi
done
read -r rec_p50 rec_mean < <(fio_job "$fio_s")
fio_end=$EPOCHREALTIME
# The move is done when node 3 holds its share and the others dropped theirs.
while [ $(( $(objects 0) + $(objects 1) + $(objects 2) + $(objects 3) )) -ne "$total_objects" ]; do
    sleep 0.1
done
moved_s=$(echo "$EPOCHREALTIME - $back" | bc -l)
fio_s_actual=$(echo "$fio_end - $back" | bc -l)
if [ "$(echo "$moved_s < $fio_s_actual" | bc)" = 1 ]; then
    echo "warning: the move back (${moved_s} s) ended before the fio job (${fio_s_actual} s)" >&2
fi

# 5. cp baseline of as many bytes as node 3 held.
head -c "$n3_bytes" /dev/urandom >held.raw
sync
cs=$EPOCHREALTIME
cp held.raw copy.raw && sync
ce=$EPOCHREALTIME
cp_s=$(echo "$ce - $cs" | bc -l)
cp_mbs=$(echo "$n3_bytes / 1048576 / $cp_s" | bc -l)

printf '| measurement | Sheepfold | baseline (same run) | ratio |\n|---|---|---|---|\n'
printf '| restore 3 copies after kill -9 of a node holding %.2f GiB (s) | %.2f | `cp` + sync of as much: %.2f | |\n' \
    "$(echo "$n3_bytes / 1073741824" | bc -l)" "$rec_s" "$cp_s"
printf '| recovery throughput (MB/s) | %.1f | `cp`: %.1f | %s |\n' "$rec_mbs" "$cp_mbs" "$(ratio "$rec_mbs" "$cp_mbs")"
printf '| 4 KiB write + flush, QD1, p50 (µs) | during the move back: %.0f | idle: %.0f | %s |\n' \
    "$rec_p50" "$idle_p50" "$(ratio "$rec_p50" "$idle_p50")"
printf '| 4 KiB write + flush, QD1, mean (µs) | during the move back: %.0f | idle: %.0f | %s |\n' \
    "$rec_mean" "$idle_mean" "$(ratio "$rec_mean" "$idle_mean")"
echo
echo "Command: bench/recovery.sh $held_gib $fio_s; throttle: $(dog node recovery get-throttle 2>&1 | head -1);" \
    "the move back took $(printf %.1f "$moved_s") s, the fio job ran for the first $(printf %.1f "$fio_s_actual") s of it."
