#!/usr/bin/env bash
# User-space instructions per admission of the naive limiter, the baton adapter and the lean variants, counted by
# callgrind on a private redis-server (port 6392), one peer at a time, EXECUTIONS=100 (800 admissions). Run it from
# the peers folder with lean/ and baton/bin/baton built (see README.md). System calls are not counted.
#
#   lean/callgrind.sh        # prints, per peer, admitted/lost/errors and instructions per admission
set -uo pipefail
cd "$(dirname "$0")/.."
port=${CG_PORT:-6392}
out=$(mktemp -d)
echo "callgrind: dumps in $out" >&2
for spec in "naive=PEERS=naive-go" "baton=baton=baton/bin/baton" "lean=lean=lean/bin/lean" \
            "lean-lease=lean-lease=LEAN_LEASE=1 lean/bin/lean" "lean-full=lean-full=LEAN_FULL=1 lean/bin/lean"; do
  name=${spec%%=*} rest=${spec#*=}
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.$name.%p" \
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$out/$name.vg.log" 2>&1 &
  vg=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.3; done
  callgrind_control -z "$vg" >/dev/null 2>&1 # count from here: not the server's start-up
  run=(env REDIS_PORT="$port" EXECUTIONS=100 DEADLINE_S=200 PEER_TIMEOUT_S=240)
  if [[ $rest == PEERS=* ]]; then
    "${run[@]}" "$rest" ./run-all.sh >"$out/$name.jsonl" 2>"$out/$name.err"
  else
    "${run[@]}" PEERS=none ./run-all.sh "$rest" >"$out/$name.jsonl" 2>"$out/$name.err"
  fi
  callgrind_control -d "$vg" >/dev/null 2>&1 # the dump of the run (file suffix .1)
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1
  wait "$vg"
  admitted=$(jq -r 'select(.peer != "limit") | .admitted' "$out/$name.jsonl")
  printf '%-11s %s ' "$name" "$(jq -c 'select(.peer != "limit") | {admitted, lost, errors}' "$out/$name.jsonl")"
  callgrind_annotate --inclusive=yes "$out"/callgrind."$name".*.1 2>/dev/null |
    grep -E 'PROGRAM TOTALS|:fcallCommand |:lua_pcall |:scriptCall |:parseReply |:lua_pushlstring |strtod \[|vfprintf_internal ' |
    awk -v n="$admitted" '{ gsub(",", "", $1); name = ($NF == "TOTALS") ? "total" : $(NF - 1); sub(/.*:/, "", name)
      printf " %s=%.1fk", name, $1 / n / 1000 }'
  echo
done
