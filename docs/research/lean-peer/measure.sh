#!/usr/bin/env bash
# Redis CPU per admission of the lean strict-FIFO peer (and its pipelined, EVALSHA and lease
# and full variants) beside every peer of the harness and the baton adapter, in ONE run-all.sh invocation
# (same Redis, same machine state), then a compact table.
#
#   lean/measure.sh                      # EXECUTIONS=5000 (override via environment)
#
# Run it on a quiet machine: run-all.sh charges all of the Redis server's CPU during a peer's run
# to that peer, so other Redis clients (or CPU hogs slowing everything) distort the figures.
# Full output (JSON lines, per-peer stdout/stderr/records) stays in results/<timestamp>/.
set -euo pipefail
cd "$(dirname "$0")"
(mkdir -p bin && go build -o bin/lean .) || { echo "measure: building lean failed" >&2; exit 2; }
cd ..
[[ -x baton/bin/baton ]] || { echo "measure: baton/bin/baton is missing (build it with baton/build.sh)" >&2; exit 2; }

export EXECUTIONS=${EXECUTIONS:-5000}
host=${REDIS_HOST:-127.0.0.1} port=${REDIS_PORT:-6379}
cpu() { redis-cli -h "$host" -p "$port" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f", s }'; }
others=$(( $(redis-cli -h "$host" -p "$port" CLIENT LIST | wc -l) - 1 ))
c0=$(cpu); sleep 3; c1=$(cpu)
echo "measure: before the run: $others other client connection(s) on $host:$port;" \
  "idle Redis CPU $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.0f", (b - a) * 1e6 / 3 }') us/s" >&2
uptime >&2

out=$(mktemp)
trap 'rm -f "$out"' EXIT
./run-all.sh \
  "baton=baton/bin/baton" \
  "lean=lean/bin/lean" \
  "lean-pipe=LEAN_PIPELINE=1 lean/bin/lean" \
  "lean-lease=LEAN_LEASE=1 lean/bin/lean" \
  "lean-lease-pipe=LEAN_LEASE=1 LEAN_PIPELINE=1 lean/bin/lean" \
  "lean-full=LEAN_FULL=1 lean/bin/lean" \
  "lean-full-pipe=LEAN_FULL=1 LEAN_PIPELINE=1 lean/bin/lean" | tee "$out"

echo
{
  echo "peer admitted_per_s handoff_p99_ms redis_cpu_us_per_admission fifo_inversions_gt1ms wait_p99_ms"
  jq -r 'if .error then [.peer, "ERROR", "-", "-", "-", "-"] else
    [.peer, .admitted_per_s, .handoff_p99_ms, .redis_cpu_us_per_admission, .fifo_inversions_gt1ms, .wait_p99_ms] end
    | map(tostring) | join(" ")' "$out"
} | column -t
# sanity: anything that makes a row meaningless
jq -r --argjson limit "${LIMIT:-4}" 'select(.error or (.lost // 0) > 0 or (.errors // 0) > 0 or (.max_concurrency_seen // 0) > $limit)
  | "measure: WARNING \(.peer): \(.error // "lost \(.lost), errors \(.errors), max_concurrency_seen \(.max_concurrency_seen)")"' "$out" >&2
