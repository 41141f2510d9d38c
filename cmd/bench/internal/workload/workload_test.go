package workload

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestParseWork(t *testing.T) {
	for in, want := range map[string]Work{
		"2ms":         {Mean: 2 * time.Millisecond},
		"fixed:1ms":   {Mean: time.Millisecond},
		"exp:2ms":     {Exp: true, Mean: 2 * time.Millisecond},
		"0s":          {},
		"exp:500us":   {Exp: true, Mean: 500 * time.Microsecond},
		"exp:1.5ms":   {Exp: true, Mean: 1500 * time.Microsecond},
		"fixed:250us": {Mean: 250 * time.Microsecond},
	} {
		got, err := ParseWork(in)
		if err != nil || got != want {
			t.Errorf("ParseWork(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if back, _ := ParseWork(got.String()); back != got {
			t.Errorf("%q does not round-trip: %q", in, got.String())
		}
	}
	for _, bad := range []string{"", "exp:", "2", "-1ms", "poisson:2ms"} {
		if _, err := ParseWork(bad); err == nil {
			t.Errorf("ParseWork(%q): no error", bad)
		}
	}
}

func TestWorkSampleBounded(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	w := Work{Exp: true, Mean: time.Millisecond}
	var sum time.Duration
	for range 10000 {
		d := w.Sample(r)
		if d < 0 || d > maxExpFactor*time.Millisecond {
			t.Fatalf("sample %v out of bounds", d)
		}
		sum += d
	}
	// The mean of 10,000 draws is within 5% of 1ms (about 5 standard errors).
	if mean := sum / 10000; mean < 950*time.Microsecond || mean > 1050*time.Microsecond {
		t.Errorf("mean %v, want about 1ms", mean)
	}
	if got := (Work{Mean: 3}).Sample(r); got != 3 {
		t.Errorf("fixed sample %v", got)
	}
}

func TestClientsCoverEveryExecution(t *testing.T) {
	w := Workload{Actions: 8, Limit: 4, Executions: 500, Clients: 64, Processes: 4}
	perAction := map[string]int{}
	perProcessAction := map[[2]any]bool{}
	for _, c := range w.Plan() {
		perAction[c.Action] += c.Count
		perProcessAction[[2]any{c.Process, c.Action}] = true
	}
	for _, ref := range w.Refs() {
		if perAction[ref] != 500 {
			t.Errorf("%s: %d executions, want 500", ref, perAction[ref])
		}
		for p := range 4 {
			if !perProcessAction[[2]any{p, ref}] {
				t.Errorf("%s has no client in process %d", ref, p)
			}
		}
	}
	total := 0
	for p := range 4 {
		for _, c := range w.ClientsOf(p) {
			total += c.Count
		}
	}
	if total != w.Planned() {
		t.Errorf("processes run %d executions, want %d", total, w.Planned())
	}
}

func TestClientsUneven(t *testing.T) {
	// 3 clients on 2 actions: action 0 has clients 0 and 2, action 1 has client 1.
	w := Workload{Actions: 2, Limit: 1, Executions: 5, Clients: 3, Processes: 1}
	got := w.Plan()
	if got[0].Count != 3 || got[2].Count != 2 || got[1].Count != 5 {
		t.Errorf("counts %+v", got)
	}
}

func TestValidate(t *testing.T) {
	ok := Workload{Actions: 8, Limit: 4, Executions: 500, Clients: 64, Processes: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := ok
	bad.Clients = 4
	if err := bad.Validate(); err == nil {
		t.Error("fewer clients than actions accepted")
	}
}
