#!/usr/bin/env bash
# Builds Sheepfold and starts a local 3-node cluster, formatted and ready.
#
#   examples/local-cluster.sh          build, start 3 sheep on ports 7000-7002 (NBD on
#                                      10809-10811, HTTP API and /metrics on 7080-7082), format
#   examples/local-cluster.sh stop     stop them (data stays)
#   examples/local-cluster.sh wipe     stop them and delete their stores
#
# Stores live in ${SHEEPFOLD_HOME:-$HOME/.local/share/sheepfold}/n0..n2, logs beside
# them. The nodes find each other through the default `-c local` runtime directory,
# so nothing needs configuring. Running it again restarts stopped nodes and keeps
# the existing format and VDIs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
home=${SHEEPFOLD_HOME:-$HOME/.local/share/sheepfold}
bin=$root/target/release
nodes=3

stop() {
    for i in $(seq 0 $((nodes - 1))); do
        local pidfile=$home/n$i.pid
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            kill "$(cat "$pidfile")"
        fi
        rm -f "$pidfile"
    done
}

case "${1:-start}" in
stop)
    stop
    echo "stopped; data kept in $home"
    exit 0
    ;;
wipe)
    stop
    sleep 1
    rm -rf "$home"
    echo "stopped and removed $home"
    exit 0
    ;;
start) ;;
*)
    echo "usage: $0 [start|stop|wipe]" >&2
    exit 64
    ;;
esac

(cd "$root" && cargo build --release -p sheep -p dog)
mkdir -p "$home"
for i in $(seq 0 $((nodes - 1))); do
    pidfile=$home/n$i.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        continue
    fi
    "$bin/sheep" -p $((7000 + i)) --nbd-port $((10809 + i)) --http-port $((7080 + i)) -z "$i" \
        "$home/n$i" >"$home/n$i.log" 2>&1 &
    echo $! >"$pidfile"
done

dog=$bin/dog
for _ in $(seq 1 100); do
    [ "$("$dog" node list -r 2>/dev/null | wc -l)" = "$nodes" ] && break
    sleep 0.1
done
if [ "$("$dog" node list -r 2>/dev/null | wc -l)" != "$nodes" ]; then
    echo "the nodes did not find each other; see $home/n*.log" >&2
    exit 1
fi
if "$dog" cluster info | grep -q "Waiting for cluster to be formatted"; then
    "$dog" cluster format --copies 2
fi
for _ in $(seq 1 100); do
    "$dog" cluster info | grep -q "^Cluster status: running" && break
    sleep 0.1
done

"$dog" node list
echo
"$dog" cluster info
cat <<EOF

A 3-node Sheepfold cluster is running (stores in $home).
Try:
  export PATH=$bin:\$PATH
  dog vdi create alpha 1G
  head -c 64M /dev/urandom > /tmp/data && dog vdi write alpha < /tmp/data
  dog vdi read alpha 0 64M -p 7001 | cmp - /tmp/data && echo identical
  dog vdi list
  dog node info

The storage API (every node; docs/openapi.json describes it) and Prometheus metrics:
  curl -s localhost:7080/v1/cluster
  curl -s -X POST localhost:7080/v1/vdis -d '{"name": "vm1", "size": "1G"}'
  curl -s -X POST localhost:7081/v1/vdis/vm1/attachments -d '{"host": "hv1"}'
  curl -s localhost:7082/metrics | grep ^sheepfold_
  cargo run --release -p sheepfold-tests --example panel_driver -- --api http://127.0.0.1:7080

  $0 stop        # or: $0 wipe
EOF
