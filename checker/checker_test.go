package checker

import (
	"fmt"
	"math/rand"
	"os"
	"strings"
	"testing"
	"time"
)

// Helpers that build ops tersely: client, invoke, complete, then the rest.
func app(c int, inv, comp int64, st Status, v string, idx uint64) Op {
	return Op{Client: c, Kind: Append, Invoke: inv, Complete: comp, Status: st, Value: v, Index: idx}
}

func linRead(c int, inv, comp int64, last int64, from uint64, entries ...string) Op {
	return Op{Client: c, Kind: Read, Invoke: inv, Complete: comp, Status: OK, Linearizable: true,
		LastIndex: last, From: from, Entries: entries}
}

func localRead(c int, inv, comp int64, last int64, from uint64, entries ...string) Op {
	r := linRead(c, inv, comp, last, from, entries...)
	r.Linearizable = false
	return r
}

// goodHistory is a correct concurrent history with every kind of outcome.
func goodHistory() (History, []string) {
	h := History{
		app(0, 0, 10, OK, "a", 0),
		app(1, 5, 20, OK, "b", 1),
		app(2, 6, 30, Unknown, "x", 0), // took effect at index 2, after its client gave up
		app(3, 7, 25, Unknown, "y", 0), // never took effect
		app(0, 12, 18, Fail, "f", 0),
		linRead(0, 21, 26, 1, 0, "a", "b"), // must see a and b; x still in flight
		localRead(1, 22, 24, 0, 0, "a"),    // stale, but local reads may be
		app(3, 31, 40, OK, "c", 3),
		linRead(2, 41, 45, 3, 2, "x", "c"),
		localRead(1, 50, 55, -1, 0), // very stale, still allowed
		{Client: 0, Kind: Read, Invoke: 50, Complete: 60, Status: Unknown, Linearizable: true},
	}
	return h, []string{"a", "b", "x", "c"}
}

func TestGoodHistoryPasses(t *testing.T) {
	h, final := goodHistory()
	r := Check(h, final)
	if !r.OK() {
		t.Fatalf("Check rejected a correct history:\n%s", r)
	}
	if r.Appends != 6 || r.Reads != 5 || r.OKs != 7 || r.Fails != 1 || r.Unknowns != 3 {
		t.Errorf("counts wrong: %s", r)
	}
	p := CheckPorcupine(h, final, PorcupineOptions{})
	if !p.OK() || p.Skipped != 0 || p.Windows == 0 {
		t.Fatalf("Porcupine rejected a correct history: %s", p)
	}
}

// Intervals are closed: ops that touch at one instant are concurrent, so
// these may take effect in either order, and no window may cut between them.
func TestTouchingIntervalsAreConcurrent(t *testing.T) {
	h := History{app(0, 0, 10, OK, "a", 1), app(1, 10, 20, OK, "b", 0), linRead(2, 20, 30, 1, 0, "b", "a")}
	final := []string{"b", "a"}
	if r := Check(h, final); !r.OK() {
		t.Errorf("Check: %s", r)
	}
	if p := CheckPorcupine(h, final, PorcupineOptions{MaxWindowOps: 1}); !p.OK() {
		t.Errorf("Porcupine: %s", p)
	}
}

func TestBadHistories(t *testing.T) {
	cases := []struct {
		name  string
		h     History
		final []string
		want  ViolationKind
		op    int  // op the violation must name
		porc  bool // must Porcupine find it illegal too?
	}{
		{"lost, index taken by another", History{
			app(0, 0, 10, OK, "a", 0),
			app(1, 0, 10, Unknown, "b", 0),
		}, []string{"b"}, Lost, 0, true},
		{"lost, log too short", History{
			app(0, 0, 10, OK, "a", 0),
			app(1, 20, 30, OK, "b", 1),
		}, []string{"a"}, Lost, 1, true},
		{"duplicated", History{
			app(0, 0, 10, OK, "a", 0),
			app(1, 20, 30, OK, "b", 1),
		}, []string{"a", "b", "a"}, Duplicated, 0, false},
		{"phantom in final log", History{
			app(0, 0, 10, OK, "a", 0),
		}, []string{"a", "z"}, Phantom, -1, false},
		{"phantom read entry", History{
			app(0, 0, 10, OK, "a", 0),
			localRead(1, 20, 30, 0, 0, "q"),
		}, []string{"a"}, Phantom, 1, false},
		{"stale read misses completed append", History{
			app(0, 0, 10, OK, "a", 0),
			linRead(1, 20, 30, -1, 0),
		}, []string{"a"}, Stale, 1, true},
		{"stale read behind earlier read", History{
			app(0, 0, 100, Unknown, "a", 0),
			linRead(1, 10, 20, 0, 0, "a"),
			linRead(2, 30, 40, -1, 0),
		}, []string{"a"}, Stale, 2, true},
		{"order", History{
			app(0, 0, 10, OK, "a", 1),
			app(1, 20, 30, OK, "b", 0),
		}, []string{"b", "a"}, Order, 1, true},
		{"read sees the future", History{
			linRead(1, 0, 10, 0, 0, "a"),
			app(0, 20, 30, OK, "a", 0),
		}, []string{"a"}, Order, 0, true},
		{"failed but present", History{
			app(0, 0, 10, OK, "a", 0),
			app(1, 0, 10, Fail, "f", 0),
		}, []string{"a", "f"}, FailedButPresent, 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Check(c.h, c.final)
			found := false
			for _, v := range r.Violations {
				found = found || (v.Kind == c.want && v.Op == c.op)
			}
			if !found {
				t.Errorf("Check did not report %s on op %d:\n%s", c.want, c.op, r)
			}
			if !strings.Contains(r.String(), string(c.want)) {
				t.Errorf("String does not mention %s:\n%s", c.want, r)
			}
			if c.porc {
				if p := CheckPorcupine(c.h, c.final, PorcupineOptions{}); p.OK() {
					t.Errorf("Porcupine accepted it: %s", p)
				}
			}
		})
	}
}

func TestVisualizationWritten(t *testing.T) {
	dir := t.TempDir()
	h := History{app(0, 0, 10, OK, "a", 0), linRead(1, 20, 30, -1, 0)}
	p := CheckPorcupine(h, []string{"a"}, PorcupineOptions{VisualizeDir: dir})
	if p.OK() || len(p.Files) != 1 || p.Err != nil {
		t.Fatalf("want one illegal window visualized, got %s (err %v)", p, p.Err)
	}
	b, err := os.ReadFile(p.Files[0])
	if err != nil || !strings.Contains(strings.ToLower(string(b)), "<html") {
		t.Fatalf("visualization %s unreadable or not HTML (err %v, %d bytes)", p.Files[0], err, len(b))
	}
}

// TestWindows checks that an append that took effect unseen by its client
// pins the rest of the history into one window (too big here, so skipped)
// when nothing observed it, but not when a later append did.
func TestWindows(t *testing.T) {
	build := func(lateFirst bool) (History, []string) {
		h := History{app(1, 0, 1, Unknown, "late", 0)} // client gave up at t=1
		var final []string
		if lateFirst {
			final = append(final, "late")
		}
		for i := range 30 {
			v := fmt.Sprint("v", i)
			h = append(h, app(0, int64(100+10*i), int64(105+10*i), OK, v, uint64(len(final))))
			final = append(final, v)
		}
		if !lateFirst {
			final = append(final, "late")
		}
		return h, final
	}
	opt := PorcupineOptions{MaxWindowOps: 5}

	h, final := build(false)
	if r := Check(h, final); !r.OK() {
		t.Errorf("Check: %s", r)
	}
	p := CheckPorcupine(h, final, opt)
	if !p.OK() || p.Windows != 2 || p.Skipped != 1 {
		t.Errorf("unobserved unknown append: want 2 windows (1 skipped), got %s", p)
	}

	h, final = build(true)
	if r := Check(h, final); !r.OK() {
		t.Errorf("Check: %s", r)
	}
	p = CheckPorcupine(h, final, opt)
	if !p.OK() || p.Windows < 6 || p.Skipped != 0 {
		t.Errorf("observed unknown append: want small windows, none skipped, got %s", p)
	}
}

// randomHistory simulates a correct log: each op takes effect at its own
// instant (in increasing order) inside an interval that overlaps its
// neighbours', with an occasional quiet period that allows a window cut.
func randomHistory(rng *rand.Rand, n int) (History, []string) {
	var h History
	var log []string
	t := int64(1000)
	for i := 0; len(h) < n; i++ {
		t += 1 + rng.Int63n(10)
		if rng.Intn(40) == 0 {
			t += 300 // longer than any interval: a quiescent point
		}
		o := Op{Client: rng.Intn(8), Invoke: t - rng.Int63n(60), Complete: t + rng.Int63n(60)}
		switch k := rng.Intn(100); {
		case k < 55:
			o.Kind, o.Value = Append, fmt.Sprint("v", i)
			switch s := rng.Intn(100); {
			case s < 80:
				o.Status, o.Index = OK, uint64(len(log))
				log = append(log, o.Value)
			case s < 88:
				o.Status = Fail
			default:
				o.Status = Unknown
				if s%2 == 0 {
					log = append(log, o.Value)
				}
			}
		default:
			o.Kind, o.Linearizable = Read, k < 80
			o.Status = OK
			if rng.Intn(10) == 0 {
				o.Status = Unknown
			}
			size := len(log)
			if !o.Linearizable {
				size = rng.Intn(len(log) + 1) // any earlier prefix
			}
			from := max(0, size-rng.Intn(6))
			o.LastIndex, o.From = int64(size)-1, uint64(from)
			o.Entries = append([]string(nil), log[from:size]...)
		}
		h = append(h, o)
	}
	return h, log
}

func TestLargeRandomHistory(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	h, final := randomHistory(rng, 5000)
	rng.Shuffle(len(h), func(i, j int) { h[i], h[j] = h[j], h[i] }) // order must not matter

	start := time.Now()
	if r := Check(h, final); !r.OK() {
		t.Fatalf("Check rejected a valid random history:\n%s", r)
	}
	p := CheckPorcupine(h, final, PorcupineOptions{Timeout: 20 * time.Second})
	t.Logf("%d ops, %d entries: %s in %v", len(h), len(final), p, time.Since(start))
	if !p.OK() || p.Skipped != 0 || p.Windows < 10 {
		t.Fatalf("want many windows, none skipped or illegal: %s", p)
	}

	// One corrupted acknowledgement must be caught by both checkers.
	for i := range h {
		if h[i].Kind == Append && h[i].Status == OK && h[i].Index > 100 {
			h[i].Index -= 2
			break
		}
	}
	if r := Check(h, final); r.OK() {
		t.Error("Check accepted a corrupted history")
	}
	if p := CheckPorcupine(h, final, PorcupineOptions{}); p.OK() {
		t.Errorf("Porcupine accepted a corrupted history: %s", p)
	}
}
