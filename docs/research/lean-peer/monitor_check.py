# Diagnostic, not part of the benchmark: attributes each FIFO inversion of a lean run to the
# client side, using the server's order of the script calls from a MONITOR capture.
#
#   redis-cli -n 15 FLUSHDB; redis-cli MONITOR > mon.txt &   # note its PID, kill it afterwards
#   EXECUTIONS=500 LEAN_IDS_FILE=ids.csv lean/bin/lean       # from the peers folder
#   kill <PID>; redis-cli -n 15 FLUSHDB
#   python3 lean/monitor_check.py mon.txt ids.csv
#
# It replays the FCALLs in server order (same logic as the scripts), counts server-side FIFO
# violations (an id enqueued earlier but granted later: must be 0), and splits the client-visible
# inversions (t_submit(a) < t_submit(b), t_start(b) < t_start(a)) into "a reached Redis after b"
# (send delay after t_submit) and "a was granted first" (delay between grant and t_start).
import csv, re, sys, collections
mon, ids = sys.argv[1], sys.argv[2]
LIMIT = 4
pat = re.compile(r'^(\d+\.\d+) \[15 [^\]]+\] "fcall" "(lean_enqueue|lean_release)" "2" "([^"]+)" "([^"]+)" "([^"]*)"(?: "([^"]*)")?')
count = collections.Counter(); queue = collections.defaultdict(collections.deque)
enq = {}; grant = {}; seq = 0; bad = 0
for line in open(mon, errors='replace'):
    m = pat.match(line)
    if not m: continue
    seq += 1
    ts, fn, ck, qk, a1, a2 = m.groups()
    if fn == 'lean_enqueue':
        enq[a2] = (seq, float(ts))
        if not queue[qk] and count[qk] < int(a1):
            count[qk] += 1; grant[a2] = (seq, float(ts))
        else:
            queue[qk].append(a2)
    else:
        if queue[qk]:
            i = queue[qk].popleft(); grant[i] = (seq, float(ts))
        else:
            count[qk] -= 1
            if count[qk] < 0: bad += 1
print('script calls seen', seq, 'enqueues', len(enq), 'grants', len(grant), 'negative counts', bad)
recs = collections.defaultdict(list)
for r in csv.DictReader(open(ids)):
    recs[r['key']].append((int(r['submit_ns']), int(r['start_ns']), r['id']))
cls = collections.Counter(); srv_viol = 0
for k, rs in recs.items():
    for a in rs:
        for b in rs:
            if a[1] < 0 or b[1] < 0: continue
            if a[0] < b[0] and b[1] < a[1]:
                gap = b[0] - a[0] > 1_000_000
                # server order
                if grant[b[2]][0] < grant[a[2]][0] and enq[a[2]][0] < enq[b[2]][0]:
                    srv_viol += 1
                if enq[a[2]][0] > enq[b[2]][0]:
                    c = 'a reached Redis after b (send delay)'
                else:
                    c = 'a granted first by Redis (delivery delay)'
                cls[(gap, c)] += 1
print('server-side FIFO violations (enqueued earlier, granted later):', srv_viol)
for (gap, c), n in sorted(cls.items()):
    print('gt1ms' if gap else 'le1ms', c, n)
