#!/usr/bin/env bash
# Reference measurement (no Sheepfold involved): what flushed 4 KiB writes cost on this disk
# when one writer runs, and when three run at once, as three replicas on one disk do.
#
#   bench/sync-floor.sh [RUNTIME_S]      (default 6)
#
# fio, psync, 4 KiB random writes with an fdatasync after each, buffered (as the object store
# writes), on 64 MiB files in a work directory on the repository's disk: numjobs=1, then
# numjobs=3 (a file each). Prints each job's mean write+fdatasync latency and the ratio.
# A local cluster with copies 3 makes three such writes per client write, at the same time, on
# the one disk, so (1 writer / 3 writers) bounds what flushed depth-1 writes with copies 3 can
# reach next to a single-file floor such as qemu-nbd, before any network or software cost.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runtime=${1:-6}
command -v fio >/dev/null || { echo "$0: fio is required" >&2; exit 1; }
command -v jq >/dev/null || { echo "$0: jq is required" >&2; exit 1; }
mkdir -p "$root/target"
work=$(mktemp -d "$root/target/bench-XXXXXX")
trap 'rm -rf "$work"' EXIT

lat() {
    fio --name=sync --directory="$work" --rw=randwrite --bs=4k --size=64M --ioengine=psync \
        --fdatasync=1 --numjobs="$1" --time_based --runtime="$runtime" --group_reporting \
        --output-format=json 2>/dev/null |
        jq -r '.jobs[0] | (.write.clat_ns.mean + .sync.lat_ns.mean) / 1000'
}
one=$(lat 1)
three=$(lat 3)
printf '| writers | 4 KiB write + fdatasync, mean (µs) |\n|---|---|\n'
printf '| 1 | %.0f |\n| 3 at once | %.0f |\n' "$one" "$three"
printf '\nOne writer / three writers: %.2f\n' "$(echo "$one / $three" | bc -l)"
