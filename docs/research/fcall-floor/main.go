// Minimal RESP driver: one command per round trip (no pipelining).
// For each case it zeroes callgrind counters, runs N ops, dumps counters
// (callgrind_control -z / -d on the valgrind PID), and records the mapping.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

type conn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func dial(port int) *conn {
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		panic(err)
	}
	return &conn{c, bufio.NewReader(c), bufio.NewWriter(c)}
}

func (c *conn) send(args ...string) {
	fmt.Fprintf(c.w, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(c.w, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := c.w.Flush(); err != nil {
		panic(err)
	}
}

func (c *conn) read() string {
	line, err := c.r.ReadString('\n')
	if err != nil {
		panic(err)
	}
	line = strings.TrimRight(line, "\r\n")
	switch line[0] {
	case '+', ':':
		return line[1:]
	case '-':
		panic("redis error: " + line)
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "<nil>"
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(c.r, buf); err != nil {
			panic(err)
		}
		return string(buf[:n])
	case '*':
		n, _ := strconv.Atoi(line[1:])
		parts := []string{}
		for i := 0; i < n; i++ {
			parts = append(parts, c.read())
		}
		return strings.Join(parts, ",")
	}
	panic("bad reply " + line)
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (c *conn) do(args ...string) string { c.send(args...); return c.read() }

var pid string
var outFile *os.File

func cg(arg string) {
	out, err := exec.Command("callgrind_control", arg, pid).CombinedOutput()
	if err != nil {
		panic(fmt.Sprintf("callgrind_control %s: %v %s", arg, err, out))
	}
}

const lib = `#!lua name=bt
redis.register_function('noop', function(keys, args) return 0 end)
redis.register_function('enq', function(keys, args)
  local seq = redis.call('INCR', keys[1])
  redis.call('RPUSH', keys[2], seq)
  return seq
end)
redis.register_function('rel', function(keys, args)
  local id = redis.call('LPOP', keys[1])
  redis.call('RPUSH', '{a}:g:' .. id, '1')
  redis.call('INCR', keys[2])
  return id
end)
redis.register_function('enqh', function(keys, args)
  local m = redis.call('HMGET', keys[3], 'limit', 'ttl', 'prio')
  local seq = redis.call('INCR', keys[1])
  redis.call('RPUSH', keys[2], seq)
  return seq
end)
redis.register_function('relh', function(keys, args)
  local id = redis.call('LPOP', keys[1])
  redis.call('RPUSH', '{a}:g:' .. id, '1')
  redis.call('INCR', keys[2])
  redis.call('HSET', keys[3], 'last', id, 'ts', '12345')
  return id
end)
redis.register_function('c1', function(keys, args) redis.call('INCR', keys[1]) return 0 end)
redis.register_function('c2', function(keys, args) redis.call('INCR', keys[1]) redis.call('INCR', keys[1]) return 0 end)
redis.register_function('c4', function(keys, args) for i=1,4 do redis.call('INCR', keys[1]) end return 0 end)
`

type op func(i int)

func main() {
	port := flag.Int("port", 6399, "")
	flag.StringVar(&pid, "pid", "", "valgrind pid")
	n := flag.Int("n", 1000, "ops per phase")
	only := flag.String("only", "", "comma list of cases")
	flag.Parse()
	var err error
	outFile, err = os.OpenFile("/work/research-fcall/phases.log", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0644)
	if err != nil {
		panic(err)
	}
	c := dial(*port)
	c2 := dial(*port)
	c.do("FUNCTION", "LOAD", "REPLACE", lib)
	c2id := c2.do("CLIENT", "ID")
	polls := 0
	noopSha := c.do("SCRIPT", "LOAD", "return 0")

	keys := func(k int) []string {
		r := []string{}
		for i := 0; i < k; i++ {
			r = append(r, fmt.Sprintf("{a}:k%d", i))
		}
		return r
	}
	argv := func(a int) []string {
		r := []string{}
		for i := 0; i < a; i++ {
			r = append(r, fmt.Sprintf("arg%d", i))
		}
		return r
	}
	type cs struct {
		name  string
		setup func()
		f     op
	}
	cases := []cs{
		{"empty", nil, func(i int) {}},
		{"ping", nil, func(i int) { c.do("PING") }},
		{"incr", nil, func(i int) { c.do("INCR", "{a}:cnt") }},
		{"decr", nil, func(i int) { c.do("DECR", "{a}:cnt") }},
		{"incr_decr", nil, func(i int) { c.do("INCR", "{a}:cnt"); c.do("DECR", "{a}:cnt") }},
		{"rpush", nil, func(i int) { c.do("RPUSH", "{a}:l", "1") }},
		{"rpush_lpop", nil, func(i int) { c.do("RPUSH", "{a}:l2", "1"); c.do("LPOP", "{a}:l2") }},
		{"rpush_blpop_ready", nil, func(i int) { c.do("RPUSH", "{a}:l3", "1"); c.do("BLPOP", "{a}:l3", "0") }},
	}
	for _, k := range []int{0, 1, 2, 4, 8} {
		for _, a := range []int{0, 4, 8} {
			k, a := k, a
			args := append([]string{"FCALL", "noop", strconv.Itoa(k)}, keys(k)...)
			args = append(args, argv(a)...)
			cases = append(cases, cs{fmt.Sprintf("fcall_noop_k%d_a%d", k, a), nil, func(i int) { c.do(args...) }})
			eargs := append([]string{"EVALSHA", noopSha, strconv.Itoa(k)}, keys(k)...)
			eargs = append(eargs, argv(a)...)
			cases = append(cases, cs{fmt.Sprintf("evalsha_noop_k%d_a%d", k, a), nil, func(i int) { c.do(eargs...) }})
		}
	}
	cases = append(cases,
		cs{"eval_noop_k1_a0", nil, func(i int) { c.do("EVAL", "return 0", "1", "{a}:k0") }},
		cs{"fcall_c1", nil, func(i int) { c.do("FCALL", "c1", "1", "{a}:c") }},
		cs{"fcall_c2", nil, func(i int) { c.do("FCALL", "c2", "1", "{a}:c") }},
		cs{"fcall_c4", nil, func(i int) { c.do("FCALL", "c4", "1", "{a}:c") }},
		// enqueue alone (queue grows; fine)
		cs{"fcall_enq", nil, func(i int) { c.do("FCALL", "enq", "2", "{a}:seqE", "{a}:qE") }},
		// enqueue + release with grant pre-pushed then BLPOP (no blocking): full admission, non-blocking form
		cs{"cycle_ready", nil, func(i int) {
			id := c.do("FCALL", "enq", "2", "{a}:seq", "{a}:q")
			c.do("FCALL", "rel", "2", "{a}:q", "{a}:run")
			c.do("BLPOP", "{a}:g:"+id, "0")
		}},
		// release alone: needs a queued id; pre-fill queue in setup
		cs{"fcall_rel", func() {
			for j := 0; j < *n; j++ {
				c.do("RPUSH", "{a}:qR", "r"+strconv.Itoa(j))
			}
		}, func(i int) { c.do("FCALL", "rel", "2", "{a}:qR", "{a}:runR") }},
		// real blocking cycle: c2 enqueues and blocks on BLPOP; c releases; c2 gets grant
		cs{"cycle_blocked", nil, func(i int) {
			id := c2.do("FCALL", "enq", "2", "{a}:seqB", "{a}:qB")
			c2.send("BLPOP", "{a}:g:"+id, "0")
			// wait until the server has actually blocked c2 on BLPOP (flags=b) before releasing;
			// polls are counted and their cost subtracted using the "clientlist_poll" case
			time.Sleep(2 * time.Millisecond)
			for {
				polls++
				if strings.Contains(c.do("CLIENT", "LIST", "ID", c2id), "flags=b ") {
					break
				}
				time.Sleep(time.Millisecond)
			}
			c.do("FCALL", "rel", "2", "{a}:qB", "{a}:runB")
			c2.read()
		}},
		cs{"idle_3ms", nil, func(i int) { time.Sleep(3 * time.Millisecond) }},
		cs{"clientlist_poll", nil, func(i int) { c.do("CLIENT", "LIST", "ID", c2id) }},
		cs{"fcall_enqh", func() { c.do("HSET", "{a}:meta", "limit", "10", "ttl", "30", "prio", "1") },
			func(i int) { c.do("FCALL", "enqh", "3", "{a}:seqH", "{a}:qH", "{a}:meta") }},
		cs{"fcall_relh", func() {
			for j := 0; j < *n; j++ {
				c.do("RPUSH", "{a}:qRH", "h"+strconv.Itoa(j))
			}
		}, func(i int) { c.do("FCALL", "relh", "3", "{a}:qRH", "{a}:runRH", "{a}:meta") }},
	)
	sel := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			sel[s] = true
		}
	}
	for _, cse := range cases {
		if len(sel) > 0 && !sel[cse.name] {
			continue
		}
		if cse.setup != nil {
			cse.setup()
		}
		// warmup
		for i := 0; i < 50; i++ {
			cse.f(i)
		}
		if cse.setup != nil {
			cse.setup()
		}
		polls = 0
		cg("-z")
		for i := 0; i < *n; i++ {
			cse.f(i)
		}
		cg("-d")
		fmt.Fprintf(outFile, "%s n=%d polls=%d\n", cse.name, *n, polls)
		fmt.Println(cse.name, "done")
	}
}
