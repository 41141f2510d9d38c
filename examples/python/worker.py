#!/usr/bin/env python3
"""A worker that runs executions of one action under Baton's limits, over HTTP.

    python3 examples/python/worker.py --url http://127.0.0.1:8080 --action core.http \
        --executions 5 --hold 0.2

For each execution it acquires a slot (waiting in FIFO order), holds it for
--hold seconds while a thread heartbeats, and releases it. With --log FILE
it appends one line per admission and per end to FILE (O_APPEND, so several
workers can share one file and its order is the real order):

    start <worker> <execution> <token> <seq>
    end <worker> <execution> <token>

The "end" line is written before the release, so in the shared file an
execution's end always comes before the next admission's start.
--hang-after N holds the N-th execution's slot until the process is killed
(heartbeating all along): for crash tests.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baton_client import BatonClient  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("BATON_URL", "http://127.0.0.1:8080"))
    p.add_argument("--auth-token", default=os.environ.get("BATON_HTTP_AUTH_TOKEN"))
    p.add_argument("--action", required=True)
    p.add_argument("--name", default="py%d" % os.getpid(), help="this worker's name, also the execution IDs' prefix")
    p.add_argument("--executions", type=int, default=1)
    p.add_argument("--hold", type=float, default=0.1, help="seconds to hold each slot")
    p.add_argument("--wait", type=float, default=30.0, help="seconds each acquire call waits on the daemon")
    p.add_argument("--log", help="append start/end lines to this file")
    p.add_argument("--hang-after", type=int, default=0, help="hold the N-th slot until killed")
    args = p.parse_args()

    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.log else None

    def record(line):
        if fd is not None:
            os.write(fd, (line + "\n").encode())
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    client = BatonClient(args.url, auth_token=args.auth_token, wait=args.wait)
    for i in range(1, args.executions + 1):
        execution = "%s-%d" % (args.name, i)
        lease = client.acquire(args.action, execution)
        with lease:
            record("start %s %s %d %d" % (args.name, execution, lease.token, lease.seq))
            if i == args.hang_after:
                while True:  # hold until killed; the heartbeat thread keeps the lease
                    time.sleep(3600)
            time.sleep(args.hold)
            if lease.lost.is_set():
                record("lost %s %s %d" % (args.name, execution, lease.token))
                continue
            record("end %s %s %d" % (args.name, execution, lease.token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
