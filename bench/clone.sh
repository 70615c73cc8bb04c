#!/usr/bin/env bash
# Benchmark: copy-on-write clones (issue 4) in a 3-node local cluster, copies 2, fsync on,
# release build, each figure next to a baseline measured in the same run.
#
#   bench/clone.sh [DATA_GIB [REPS [CLONES [COW_WRITES]]]]    (defaults 10 20 100 200)
#
# 1. A DATA_GIB file of random data (a 1 GiB chunk from /dev/urandom, repeated) is made in the
#    work directory; baseline: `cp` of it to a file on the same disk + `sync`.
# 2. A DATA_GIB VDI `base` is filled from that file with nbdcopy through NBD, then snapshotted
#    (`dog vdi snapshot -s snap base`).
# 3. REPS times: `dog vdi clone -s snap base cK` (wall time of the command), then the clone's
#    first 4 KiB read with `dog vdi read cK 0 4096` (wall time; compared with the base's).
#    Baselines in the same loop: `dog vdi create` of an empty VDI of the same size, and the
#    same 4 KiB read from the working base. Medians.
# 4. CLONES clones in a row (wall time of the whole loop), next to as many `dog vdi create`s.
# 5. Copy-on-write latency, over 3 fresh clones: fio (ioengine=nbd, iodepth 1) writes 4 KiB at
#    the start of COW_WRITES objects spread over the disk (zonemode=strided): each is the first
#    write into an object shared with the snapshot. The same job again on the same clone
#    writes into objects the clone now owns: the ordinary-write baseline. Median completion
#    latency of each pass (fio's clat p50), median over the 3 clones. Once more with a flush
#    after every write (fio fsync=1; NBD_CMD_FLUSH): mean time per write + flush.
# Targets: a clone < 20 ms, CLONES clones < 2 s, first write into a shared object within
# 3x an ordinary write. Prints a Markdown table (bench/results-clone.md keeps one run).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data_gib=${1:-10}
reps=${2:-20}
nclones=${3:-100}
cow_writes=${4:-200}
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
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work" # fio leaves *.state files in its working directory

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
dog cluster format --copies 2 >/dev/null
nbd() { echo "nbd://127.0.0.1:$((base + 200 + $1 % 3))/$2"; }

# Wall-clock milliseconds of a command (no subprocess for the clock: bash's EPOCHREALTIME).
ms() {
    local s e
    s=$EPOCHREALTIME
    "$@" >/dev/null
    e=$EPOCHREALTIME
    echo "($e - $s) * 1000" | bc -l
}
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
fmt() { printf '%.1f' "$1"; }
ratio() { printf '%.3g' "$(echo "$1 / $2" | bc -l)"; }
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo met; else echo "NOT met"; fi; }

# 1. The data and the cp baseline.
head -c 1G /dev/urandom >chunk
for _ in $(seq 1 "$data_gib"); do cat chunk; done >data.raw
rm chunk
sync
cp_ms=$(ms bash -c 'cp data.raw copy.raw && sync')
rm copy.raw
sync

# 2. The base: DATA_GIB of data, then a snapshot.
dog vdi create base "${data_gib}G"
fill_ms=$(ms nbdcopy --flush data.raw "$(nbd 0 base)")
rm data.raw
dog vdi snapshot -s snap base
dog vdi read base 0 4096 >base4k

# 3. Clone + first 4 KiB, REPS times, with their baselines.
clone=() read=() both=() create=() baseread=()
for k in $(seq 1 "$reps"); do
    c=$(ms dog vdi clone -s snap base "c$k")
    r=$(ms eval 'dog vdi read "c$k" 0 4096 >got4k')
    cmp -s got4k base4k || { echo "c$k: first 4 KiB differ from the base's" >&2; exit 1; }
    clone+=("$c") read+=("$r") both+=("$(echo "$c + $r" | bc -l)")
    create+=("$(ms dog vdi create "e$k" "${data_gib}G")")
    baseread+=("$(ms eval 'dog vdi read base 0 4096 >/dev/null')")
done
t_clone=$(median "${clone[@]}")
t_read=$(median "${read[@]}")
t_both=$(median "${both[@]}")
t_create=$(median "${create[@]}")
t_baseread=$(median "${baseread[@]}")

# 4. CLONES clones in a row, and as many creates.
many_clone() { for k in $(seq 1 "$nclones"); do dog vdi clone -s snap base "m$k"; done; }
many_create() { for k in $(seq 1 "$nclones"); do dog vdi create "n$k" "${data_gib}G"; done; }
t_many=$(ms many_clone)
t_many_create=$(ms many_create)

# 5. Copy-on-write latency over fresh clones.
stride=$(((data_gib << 30) / cow_writes))
stride=$((stride / 4194304 * 4194304))
[ "$stride" -ge 4194304 ] || { echo "COW_WRITES too large for DATA_GIB" >&2; exit 1; }
fio_pass() { # URI NAME [fio options...] -> JSON file
    local uri=$1 name=$2
    shift 2
    fio --name="$name" --ioengine=nbd --uri="$uri" --rw=write --bs=4k --iodepth=1 \
        --size="${data_gib}g" --zonemode=strided --zonesize=4k --zonerange="$stride" \
        --number_ios="$cow_writes" "$@" --output-format=json --output="$name.json" >/dev/null
    jq -e --argjson n "$cow_writes" '.jobs[0].error == 0 and .jobs[0].write.total_ios == $n' \
        "$name.json" >/dev/null || { echo "fio $name failed" >&2; exit 1; }
}
p50_us() { jq '.jobs[0].write.clat_ns.percentile["50.000000"] / 1000' "$1.json"; }
mean_us() { jq '.jobs[0].job_runtime * 1000 / .jobs[0].write.total_ios' "$1.json"; }
cow=() own=() cowf=() ownf=()
for rep in 1 2 3; do
    dog vdi clone -s snap base "w$rep"
    fio_pass "$(nbd "$rep" "w$rep")" "cow$rep"
    fio_pass "$(nbd "$rep" "w$rep")" "own$rep"
    cow+=("$(p50_us "cow$rep")") own+=("$(p50_us "own$rep")")
    dog vdi delete "w$rep"
    dog vdi clone -s snap base "f$rep"
    fio_pass "$(nbd "$rep" "f$rep")" "cowf$rep" --fsync=1
    fio_pass "$(nbd "$rep" "f$rep")" "ownf$rep" --fsync=1
    cowf+=("$(mean_us "cowf$rep")") ownf+=("$(mean_us "ownf$rep")")
    dog vdi delete "f$rep"
done
t_cow=$(median "${cow[@]}")
t_own=$(median "${own[@]}")
t_cowf=$(median "${cowf[@]}")
t_ownf=$(median "${ownf[@]}")

echo "Clones of a ${data_gib} GiB base (3 sheep, copies 2, fsync on, release build)."
echo
echo "| measurement | Sheepfold | baseline (same run) | Sheepfold / baseline |"
echo "|---|---|---|---|"
echo "| \`dog vdi clone\` (ms, median of $reps) | $(fmt "$t_clone") | \`dog vdi create\` ${data_gib}G: $(fmt "$t_create") | $(ratio "$t_clone" "$t_create") |"
echo "| first 4 KiB read of the new clone, \`dog vdi read\` (ms, median of $reps) | $(fmt "$t_read") | same read from the base: $(fmt "$t_baseread") | $(ratio "$t_read" "$t_baseread") |"
echo "| clone + first 4 KiB read (ms, median of $reps) | $(fmt "$t_both") | \`cp\` of a ${data_gib} GiB raw file + sync: $(fmt "$cp_ms") | $(ratio "$t_both" "$cp_ms") |"
echo "| $nclones clones in a row (ms) | $(fmt "$t_many") | $nclones \`dog vdi create\`: $(fmt "$t_many_create"); \`cp\` + sync: $(fmt "$cp_ms") | $(ratio "$t_many" "$cp_ms") of cp |"
echo "| first 4 KiB write into a shared object, QD1 (µs, p50; median of 3 clones x $cow_writes) | $(fmt "$t_cow") | 4 KiB write into an owned object: $(fmt "$t_own") | $(ratio "$t_cow" "$t_own") |"
echo "| same, with a flush after every write (µs per write + flush, mean) | $(fmt "$t_cowf") | owned object: $(fmt "$t_ownf") | $(ratio "$t_cowf" "$t_ownf") |"
echo
echo "Filling the base: ${data_gib} GiB with nbdcopy in $(fmt "$(echo "$fill_ms / 1000" | bc -l)") s" \
    "($(fmt "$(echo "($data_gib * 1073741824) / ($fill_ms / 1000) / 1000000" | bc -l)") MB/s)."
echo
echo "Targets: a clone < 20 ms: $(fmt "$t_clone") ms, $(verdict "$t_clone < 20");" \
    "clone + first read $(fmt "$t_both") ms; $nclones clones < 2 s: $(fmt "$t_many") ms," \
    "$(verdict "$t_many < 2000"); first write into a shared object within 3x an ordinary" \
    "write: $(ratio "$t_cow" "$t_own")x, $(verdict "$t_cow <= 3 * $t_own")" \
    "(with flushes: $(ratio "$t_cowf" "$t_ownf")x)."
