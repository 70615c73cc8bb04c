#!/usr/bin/env bash
# Benchmark: fio through NBD into a 3-node local cluster with copies 1, 2 and 3, next to the
# same jobs against qemu-nbd serving a raw file on the same disk (the floor), in the same run.
#
#   bench/nbd-fio.sh [RUNTIME_S [REPS]]     (default 10 seconds per job, 3 repetitions)
#   COPIES="3" JOBS="a e" bench/nbd-fio.sh 5 1   (a subset, while working on one figure)
#
# Sheep run from a release build with fsync on (no -n). For each copies value the cluster is
# reformatted, a fresh 2 GiB VDI is filled with a sequential 1 MiB fio write (so reads hit
# data), then six fio jobs (ioengine=nbd) run, each time-bounded (time_based, RUNTIME_S) over
# the 2 GiB. Each job runs against the sheep's NBD export and then against
# `qemu-nbd -f raw -t --cache=none --aio=threads` serving a filled 2 GiB raw file in the same
# directory (O_DIRECT; a flush is an fdatasync of the file):
#   (a) 4 KiB random write, iodepth 1, fsync=1: an NBD_CMD_FLUSH after every write
#       (fio's nbd engine maps fsync to NBD_CMD_FLUSH; it refuses fdatasync)
#   (b) 4 KiB random read, iodepth 1
#   (c) 4 KiB random write, iodepth 32
#   (d) 4 KiB random read, iodepth 32
#   (e) 1 MiB sequential write, iodepth 8
#   (f) 1 MiB sequential read, iodepth 8
# 4 KiB jobs report IOPS, 1 MiB jobs MB/s (10^6 bytes). Every job runs REPS times against
# each server, alternating which goes first, and each figure is the median (the disk's write
# cache makes single runs swing). Prints a Markdown table and the issue's targets: with
# copies 3, (a) >= 0.5 x floor and (e) >= 1/3 x floor.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-10}
reps=${2:-3}
size=2g
for cmd in fio qemu-nbd jq bc; do
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
    "$bin/sheep" ${SHEEP_OPTS:-} -b 127.0.0.1 -p $((base + i)) --gossip-port $((base + 100 + i)) \
        --nbd-port $((base + 200 + i)) -z "$i" -c "local:$work/local" "$work/n$i" \
        >"$work/n$i.log" 2>&1 &
    pids+=($!)
done
dog() { "$bin/dog" "$@" -a 127.0.0.1 -p "$base"; }
for _ in $(seq 1 100); do
    [ "$(dog node list -r 2>/dev/null | wc -l)" = 3 ] && break
    sleep 0.1
done

floor_port=$((base + 300))
truncate -s "$size" "$work/floor.raw"
qemu-nbd -f raw -t --cache=none --aio=threads -b 127.0.0.1 -p "$floor_port" -x floor \
    "$work/floor.raw" >"$work/qemu-nbd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
    nbdinfo "nbd://127.0.0.1:$floor_port/floor" >/dev/null 2>&1 && break
    sleep 0.1
done
sheep_uri="nbd://127.0.0.1:$((base + 200))/bench"
floor_uri="nbd://127.0.0.1:$floor_port/floor"

# fio_run URI NAME OPTIONS... -> prints the job's figure (IOPS, or MB/s for 1 MiB jobs)
fio_run() {
    local uri=$1 name=$2
    shift 2
    fio --name="$name" --ioengine=nbd --uri="$uri" --size="$size" "$@" \
        --output-format=json --output="$work/$name.json" >/dev/null
    jq -e '.jobs[0].error == 0' "$work/$name.json" >/dev/null ||
        { echo "fio job $name against $uri failed" >&2; exit 1; }
    jq -r --arg name "$name" '.jobs[0]
        | if ($name | startswith("seq")) then (.read.bw_bytes + .write.bw_bytes) / 1e6
          else .read.iops + .write.iops end
        | . * 10 | round / 10' "$work/$name.json"
}

fill() { fio_run "$1" fill --rw=write --bs=1M --iodepth=8 >/dev/null; }

timed=(--time_based --runtime="$runtime" --ramp_time=1)
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
read -r -a jobs <<<"${JOBS:-a b c d e f}"
declare -A label opts
label[a]="4K randwrite QD1 + flush (IOPS)"
label[b]="4K randread QD1 (IOPS)"
label[c]="4K randwrite QD32 (IOPS)"
label[d]="4K randread QD32 (IOPS)"
label[e]="1M seq write QD8 (MB/s)"
label[f]="1M seq read QD8 (MB/s)"
opts[a]="--rw=randwrite --bs=4k --iodepth=1 --fsync=1"
opts[b]="--rw=randread --bs=4k --iodepth=1"
opts[c]="--rw=randwrite --bs=4k --iodepth=32"
opts[d]="--rw=randread --bs=4k --iodepth=32"
opts[e]="--rw=write --bs=1M --iodepth=8"
opts[f]="--rw=read --bs=1M --iodepth=8"
jobname() { case $1 in e | f) echo "seq$1" ;; *) echo "rand$1" ;; esac; }

fill "$floor_uri"
declare -A result
echo "| copies | fio job | Sheepfold NBD | qemu-nbd floor | Sheepfold / floor |"
echo "|---|---|---|---|---|"
for copies in ${COPIES:-1 2 3}; do
    dog cluster format -f --copies "$copies" >/dev/null
    dog vdi create bench 2G
    fill "$sheep_uri"
    for j in "${jobs[@]}"; do
        s_runs=() f_runs=()
        for rep in $(seq 1 "$reps"); do
            for who in $( ((rep % 2)) && echo sheep floor || echo floor sheep); do
                sync
                uri=$sheep_uri
                [ "$who" = floor ] && uri=$floor_uri
                # shellcheck disable=SC2086
                v=$(fio_run "$uri" "$(jobname "$j")" ${opts[$j]} "${timed[@]}")
                if [ "$who" = sheep ]; then s_runs+=("$v"); else f_runs+=("$v"); fi
            done
        done
        [ -n "${VERBOSE:-}" ] && echo "runs $copies$j: sheep ${s_runs[*]} / floor ${f_runs[*]}" >&2
        s=$(median "${s_runs[@]}")
        f=$(median "${f_runs[@]}")
        r=$(printf %.2f "$(echo "$s / $f" | bc -l)")
        result[$copies$j]=$r
        echo "| $copies | ${label[$j]} | $s | $f | $r |"
    done
    dog vdi delete bench >/dev/null
done

echo
[ -n "${result[3a]:-}" ] && [ -n "${result[3e]:-}" ] || exit 0
verdict() { if [ "$(echo "$1 >= $2" | bc -l)" = 1 ]; then echo met; else echo "NOT met"; fi; }
echo "Targets (copies 3): flushed 4K QD1 write >= 0.5 x floor: ratio ${result[3a]}," \
    "$(verdict "${result[3a]}" 0.5); 1 MiB sequential write >= 1/3 x floor: ratio" \
    "${result[3e]}, $(verdict "${result[3e]}" 0.3333)."
