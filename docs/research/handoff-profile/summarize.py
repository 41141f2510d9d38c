#!/usr/bin/env python3
"""Sums callgrind outputs of one benchmark run and prints instructions per iteration, split by the Redis and Lua
functions a script call runs in (inclusive counts). Usage: summarize.py ITERATIONS callgrind.out..."""
import collections
import re
import subprocess
import sys

ROWS = [
    ("whole server", "PROGRAM TOTALS"),
    ("  FUNCTION LOAD (start-up, not per call)", "functionLoadCommand"),
    ("  FCALL", "fcallCommand"),
    ("    KEYS and ARGV tables (luaCreateArray)", "luaCreateArray"),
    ("    the script (lua_pcall)", "lua_pcall"),
    ("      redis.call, all of it (luaRedisGenericCommand)", "luaRedisGenericCommand"),
    ("        the commands themselves (scriptCall)", "scriptCall"),
    ("        arguments to Redis (luaArgsToRedisArgv)", "luaArgsToRedisArgv"),
    ("      string.format", "str_format"),
    ("      string.match", "str_match"),
    ("    the reply to RESP (luaReplyToRedisReply)", "luaReplyToRedisReply"),
    ("    forced GC steps, every 50 calls (lua_gc)", "lua_gc"),
]


def main():
    n = float(sys.argv[1])
    incl = collections.Counter()
    for f in sys.argv[2:]:
        out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", f],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
            if not m:
                continue
            name = re.sub(r"\s*\[.*\]$", "", m.group(2)).strip()
            if name != "PROGRAM TOTALS":
                name = name.split(":", 1)[-1]
            incl[name] += int(m.group(1).replace(",", ""))
    if not incl["luaCreateArray"]:
        print("(no Lua function names: run with REDIS_SRC set to a built Redis source tree)")
    for label, fn in ROWS:
        if fn in incl:
            print("%-52s %8.1fk" % (label, incl[fn] / n / 1000))


main()
