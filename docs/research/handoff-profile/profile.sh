#!/usr/bin/env bash
# Counts the user-space instructions a redis-server spends per iteration of a Go benchmark of Baton's
# (default: BenchmarkScriptCPU/handoff, one queued enqueue.lua and one release.lua that grants, pipelined),
# with callgrind, and splits them by the Redis and Lua functions they run in. Research tool of issue 7; not
# part of Baton's build or tests. BENCHMARKS.md has its figures.
#
#   docs/research/handoff-profile/profile.sh [BENCH_REGEXP [N]]    # from the checkout; defaults: handoff, 3000
#
# The packaged redis-server is stripped, so Lua's and Redis's functions have no names. With REDIS_SRC set to a
# built Redis source tree (the same version as the server the tests use, 7.0.15 on Debian 12), its
# src/redis-server runs instead, and every function has its name:
#
#   (add a deb-src line for bookworm, then) apt-get source redis && make -C redis-7.0.15 -j2 MALLOC=libc BUILD_TLS=no
#   REDIS_SRC=$PWD/redis-7.0.15 docs/research/handoff-profile/profile.sh
#
# How: the benchmark's test servers are started as `redis-server` from PATH (internal/redistest), so a wrapper
# first on PATH runs them under callgrind. The tests kill their server with SIGKILL; the wrapper is a shell that
# waits for valgrind, so the kill ends the shell only, and this script then stops valgrind with SIGTERM, on which
# Redis shuts down and callgrind writes its counts. The counts include the server's start and the library's
# FUNCTION LOAD (about 9k per iteration at N=3000; the summary shows it).
set -euo pipefail
bench=${1:-'ScriptCPU/handoff$'}
n=${2:-3000}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
work=$(mktemp -d)
server=/usr/bin/redis-server
[[ -n ${REDIS_SRC:-} ]] && server=$REDIS_SRC/src/redis-server
mkdir -p "$work/bin" "$work/cg"
cat > "$work/bin/redis-server" <<WRAP
#!/usr/bin/env bash
valgrind --tool=callgrind --callgrind-out-file=$work/cg/callgrind.%p $server "\$@"
WRAP
chmod +x "$work/bin/redis-server"
(cd "$root" && go test -c -o "$work/coordinator.test" ./coordinator/)
PATH="$work/bin:$PATH" "$work/coordinator.test" -test.run '^$' -test.bench "$bench" -test.benchtime "${n}x" |
  grep -E '^Benchmark|FAIL' || true
pkill -TERM -f "valgrind.*$work/cg" || true
for _ in $(seq 100); do pgrep -f "valgrind.*$work/cg" >/dev/null || break; sleep 0.2; done
echo "callgrind output: $work/cg"
python3 "$here/summarize.py" "$n" "$work"/cg/callgrind.*
