package learner_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/learner"
)

// t0 is a wall clock (Unix ms, November 2023): log time in these tests
// starts there, so that an hour's or a day's error is small beside it.
const (
	t0   = uint64(1_700_000_000_000)
	hour = uint64(3_600_000)
	day  = 24 * hour
)

// applyOne learns v as the next instance and applies it.
func applyOne(t testing.TB, l *learner.Learner, v core.Value) learner.Applied {
	t.Helper()
	i := l.Applied()
	if !l.Learn(i, v) || !l.Ready() {
		t.Fatalf("instance %d not learnable/ready", i)
	}
	return l.ApplyNext()
}

// A master whose wall clock is wrong by any amount moves log time by at most
// one step per lease command, so it cannot expire a client that is still
// retrying; a slow clock never moves log time back.
func TestLogTimeStepBoundsAWrongClock(t *testing.T) {
	lim := learner.DefaultLimits()
	step := lim.LogTimeStep
	for _, tc := range []struct {
		name  string
		wall  uint64 // the renewing master's wall clock
		plant bool   // PlantLogTimeJump
		want  uint64 // log time after the renewal
	}{
		{"an hour ahead", t0 + hour, false, t0 + step},
		{"a day ahead", t0 + day, false, t0 + step},
		{"a century ahead", t0 + 36500*day, false, t0 + step},
		{"the largest wall clock", ^uint64(0), false, t0 + step},
		{"a second ahead: an ordinary renewal", t0 + 1000, false, t0 + 1000},
		{"exactly one step ahead", t0 + step, false, t0 + step},
		{"an hour behind", t0 - hour, false, t0},
		{"a day behind", t0 - day, false, t0},
		{"zero", 0, false, t0},
		{"planted log-time-jump: a day ahead", t0 + day, true, t0 + day},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := learner.New(core.ApplyState{LogTime: t0}, nil, 100)
			if tc.plant {
				l.PlantLogTimeJump()
			}
			applyOne(t, l, value(user(5, 1, 1, "a")))
			a := applyOne(t, l, value(wallLease(0, tc.wall)))
			if got := l.State().LogTime; got != tc.want {
				t.Fatalf("log time %d after a renewal with wall clock %d, want %d (moved by %d)", got, tc.wall, tc.want, int64(got-t0))
			}
			if tc.plant {
				// The planted bug expires client 5 and applies its retry twice:
				// what the simulator must catch.
				if !reflect.DeepEqual(a.Dedup, []core.DedupEntry{{ClientID: 5, Deleted: true}}) {
					t.Fatalf("planted jump: dedup writes %+v, want client 5 expired", a.Dedup)
				}
				return
			}
			if a.Dedup != nil {
				t.Fatalf("the renewal wrote dedup rows %+v, want none (client 5 is live)", a.Dedup)
			}
			if got := applyOne(t, l, value(user(5, 1, 2, "a"))).Results; !reflect.DeepEqual(got, []learner.Result{dup(2, 0, 0)}) {
				t.Fatalf("client 5's retry: %+v, want a duplicate of [0,0]", got)
			}
		})
	}

	// However often a master an hour ahead renews, log time moves by one
	// step per renewal: a client within TTL/step renewals keeps its row.
	t.Run("many renewals an hour ahead", func(t *testing.T) {
		l := learner.New(core.ApplyState{LogTime: t0}, nil, 100)
		applyOne(t, l, value(user(5, 1, 1, "a")))
		renewals := hour/step - 1
		for k := range renewals {
			if a := applyOne(t, l, value(wallLease(k, t0+hour))); a.Dedup != nil {
				t.Fatalf("renewal %d expired %+v", k, a.Dedup)
			}
			if got, want := l.State().LogTime, min(t0+(k+1)*step, t0+hour); got != want {
				t.Fatalf("after renewal %d: log time %d, want %d", k, got, want)
			}
		}
		if got := applyOne(t, l, value(user(5, 1, 2, "a"))).Results; !reflect.DeepEqual(got, []learner.Result{dup(2, 0, 0)}) {
			t.Fatalf("client 5's retry after %d renewals: %+v, want a duplicate", renewals, got)
		}
	})

	// A lease command that does not take effect (its compare-and-set failed)
	// comes from a node that is not the master: it does not move log time.
	t.Run("a failed lease does not move log time", func(t *testing.T) {
		l := learner.New(core.ApplyState{LogTime: t0, LeaseVersion: 4}, nil, 100)
		applyOne(t, l, value(wallLease(3, t0+1000)))
		if got := l.State().LogTime; got != t0 {
			t.Fatalf("log time %d after a failed lease, want %d", got, t0)
		}
	})

	// A new cluster: log time 0 and no row. The first lease sets log time to
	// its wall clock, however wrong (there is nothing to expire); after that
	// the step holds, even when the table is empty again.
	t.Run("new cluster", func(t *testing.T) {
		l := learner.New(core.ApplyState{}, nil, 100)
		applyOne(t, l, value(wallLease(0, 0))) // a node without a wall clock
		if got := l.State().LogTime; got != 0 {
			t.Fatalf("log time %d after a lease without a wall clock", got)
		}
		applyOne(t, l, value(wallLease(1, t0+day)))
		if got := l.State().LogTime; got != t0+day {
			t.Fatalf("first lease of a new cluster: log time %d, want its wall clock %d", got, t0+day)
		}
		applyOne(t, l, value(wallLease(2, t0+2*day)))
		if got := l.State().LogTime; got != t0+day+step {
			t.Fatalf("second lease, empty table: log time %d, want %d", got, t0+day+step)
		}
	})
	t.Run("log time 0 with rows", func(t *testing.T) {
		l := learner.New(core.ApplyState{}, []core.DedupEntry{row(5, 0, si(1, 0, 0, "a"))}, 100)
		applyOne(t, l, value(wallLease(0, t0)))
		if got := l.State().LogTime; got != step {
			t.Fatalf("log time %d, want %d: a row exists, the step holds", got, step)
		}
		if _, ok := l.Dedup(5); !ok {
			t.Fatal("client 5's row expired")
		}
	})
}

// capLimits: three rows, a retry window of 1000 ms of log time.
var capLimits = learner.Limits{ClientTTL: 10_000, ClientRetry: 1000, MaxClients: 3, LogTimeStep: 3000}

// At the cap a new client evicts the least recently used row only if it is
// idle past the retry window; otherwise it is refused and nothing applies.
func TestCapNeverEvictsAClientThatMayRetry(t *testing.T) {
	l := learner.New(core.ApplyState{LogTime: t0}, nil, 100)
	l.SetClientLimits(capLimits)
	for c := uint64(1); c <= 3; c++ {
		applyOne(t, l, value(user(c, 1, c, "a")))
	}
	refused := func(client, req uint64) {
		t.Helper()
		before := l.State()
		a := applyOne(t, l, value(user(client, 1, req, "new")))
		want := learner.Applied{Instance: a.Instance, Value: a.Value, Results: []learner.Result{{Origin: 9, Req: req, Err: &core.TooManyClientsError{Max: 3}}}}
		if !reflect.DeepEqual(a, want) {
			t.Fatalf("client %d at the cap: %+v, want %+v", client, a, want)
		}
		if st := l.State(); st.NextIndex != before.NextIndex || l.Clients() != 3 {
			t.Fatalf("a refused append changed the state: next index %d -> %d, %d clients", before.NextIndex, st.NextIndex, l.Clients())
		}
		if _, ok := l.Dedup(client); ok {
			t.Fatalf("refused client %d got a row", client)
		}
	}
	admitted := func(client, req uint64, evicted uint64) {
		t.Helper()
		next, lt := l.State().NextIndex, l.State().LogTime
		a := applyOne(t, l, value(user(client, 1, req, "new")))
		want := []core.DedupEntry{{ClientID: evicted, Deleted: true}, row(client, lt, si(1, next, next, "new"))}
		if !reflect.DeepEqual(a.Results, []learner.Result{res(req, next, next)}) || !reflect.DeepEqual(a.Dedup, want) {
			t.Fatalf("client %d: results %+v dedup %+v, want applied at %d evicting client %d", client, a.Results, a.Dedup, next, evicted)
		}
	}
	refused(4, 10) // all three used just now

	applyOne(t, l, value(wallLease(0, t0+500)))
	applyOne(t, l, value(user(2, 2, 11, "b"))) // client 2 last used at t0+500
	applyOne(t, l, value(wallLease(1, t0+1000)))
	refused(4, 12) // clients 1 and 3 idle exactly the window: they may still retry

	applyOne(t, l, value(wallLease(2, t0+1001)))
	admitted(4, 13, 1) // 1 and 3 idle past the window, tied: the lower ID goes
	admitted(5, 14, 3)
	refused(6, 15) // 2 idle 501 ms, 4 and 5 just now

	// An existing client is never refused at the cap.
	if got := applyOne(t, l, value(user(2, 3, 16, "c"))).Results; got[0].Err != nil {
		t.Fatalf("client 2 at the cap: %+v", got)
	}
}

// expire deletes idle rows least recently used first, ties by client ID:
// the order every replica writes them in.
func TestExpireOrder(t *testing.T) {
	lim := learner.Limits{ClientTTL: 2000, ClientRetry: 1000, MaxClients: 10, LogTimeStep: 3000}
	l := learner.New(core.ApplyState{LogTime: t0}, []core.DedupEntry{
		row(3, t0+100, si(1, 0, 0)), row(7, t0+100, si(1, 1, 1)), row(8, t0+200, si(1, 2, 2)), row(9, t0, si(1, 3, 3)),
	}, 100)
	l.SetClientLimits(lim)
	a := applyOne(t, l, value(wallLease(0, t0+2150)))
	want := []core.DedupEntry{{ClientID: 9, Deleted: true}, {ClientID: 3, Deleted: true}, {ClientID: 7, Deleted: true}}
	if !reflect.DeepEqual(a.Dedup, want) {
		t.Fatalf("expired %+v, want %+v", a.Dedup, want)
	}
	if l.Clients() != 1 {
		t.Fatalf("%d clients left, want 1", l.Clients())
	}
}

// Replicas that rebuilt their table from a snapshot (storage loads rows in
// client ID order) or installed a base make the same evictions, refusals and
// expiries, in the same order, as the replica that built it by applying.
func TestEvictionsDeterministicAfterRebuild(t *testing.T) {
	lim := learner.Limits{ClientTTL: 6000, ClientRetry: 2000, MaxClients: 50, LogTimeStep: 3000}
	r := rand.New(rand.NewPCG(1, 2))
	wall, prev := t0, uint64(0)
	// A value is a lease renewal (deletions are expiries) or 1-4 appends
	// (deletions are evictions). Now and then the wall clock jumps ahead,
	// and log time follows a step per renewal.
	next := func() core.Value {
		if r.IntN(8) == 0 {
			wall += r.Uint64N(1500)
			if r.IntN(20) == 0 {
				wall += 10_000
			}
			prev++
			return value(wallLease(prev-1, wall))
		}
		var cmds []core.Command
		for range 1 + r.IntN(4) {
			cmds = append(cmds, user(1+r.Uint64N(200), 1+r.Uint64N(40), 1, fmt.Sprint(r.IntN(3))))
		}
		return value(cmds...)
	}
	orig := learner.New(core.ApplyState{}, nil, 100)
	orig.SetClientLimits(lim)
	for range 2000 {
		applyOne(t, orig, next())
	}
	s := orig.Snapshot()
	rebuilt := learner.New(s.State, s.Dedup, 100)
	rebuilt.SetClientLimits(lim)
	installed := learner.New(core.ApplyState{}, nil, 100)
	installed.SetClientLimits(lim)
	installed.Install(s)
	var refusals, evictions, expiries int
	for k := range 5000 {
		v := next()
		want := applyOne(t, orig, v)
		if orig.Clients() > lim.MaxClients {
			t.Fatalf("%d rows, over the cap of %d", orig.Clients(), lim.MaxClients)
		}
		for _, l := range []*learner.Learner{rebuilt, installed} {
			if got := applyOne(t, l, v); !reflect.DeepEqual(got, want) {
				t.Fatalf("instance %d (step %d) applied differently:\n got %+v\nwant %+v", want.Instance, k, got, want)
			}
		}
		for _, res := range want.Results {
			if errors.Is(res.Err, core.ErrTooManyClients) {
				refusals++
			}
		}
		for _, d := range want.Dedup {
			switch {
			case d.Deleted && len(want.Leases) > 0:
				expiries++
			case d.Deleted:
				evictions++
			}
		}
	}
	if !reflect.DeepEqual(rebuilt.Snapshot(), orig.Snapshot()) || !reflect.DeepEqual(installed.Snapshot(), orig.Snapshot()) {
		t.Fatal("the tables differ at the end")
	}
	if refusals == 0 || evictions == 0 || expiries == 0 {
		t.Fatalf("the run did not exercise the cap: %d refusals, %d evictions, %d expiries", refusals, evictions, expiries)
	}
	t.Logf("%d refusals, %d evictions, %d expiries", refusals, evictions, expiries)
}

// A known (client, seq) with other entries is a client that reused its seq,
// not a retry: refused, nothing applied. A true retry is a duplicate.
func TestSeqReused(t *testing.T) {
	l := learner.New(core.ApplyState{LogTime: t0}, nil, 100)
	applyOne(t, l, value(user(5, 10, 1, "a", "b")))
	applyOne(t, l, value(user(5, 12, 2, "c")))
	for _, tc := range []struct {
		name string
		cmd  core.Command
		want learner.Result
	}{
		{"other entries", user(5, 10, 3, "a", "x"), learner.Result{Origin: 9, Req: 3, Err: core.ErrSeqReused}},
		{"the same bytes split differently", user(5, 10, 4, "ab"), learner.Result{Origin: 9, Req: 4, Err: core.ErrSeqReused}},
		{"an extra empty entry", user(5, 10, 5, "a", "b", ""), learner.Result{Origin: 9, Req: 5, Err: core.ErrSeqReused}},
		{"the other seq with other entries", user(5, 12, 6, "d"), learner.Result{Origin: 9, Req: 6, Err: core.ErrSeqReused}},
		{"a true retry", user(5, 10, 7, "a", "b"), dup(7, 0, 1)},
		{"a true retry of the other", user(5, 12, 8, "c"), dup(8, 2, 2)},
		{"a new seq in the window", user(5, 11, 9, "e"), res(9, 3, 3)},
	} {
		before := l.State().NextIndex
		a := applyOne(t, l, value(tc.cmd))
		if !reflect.DeepEqual(a.Results, []learner.Result{tc.want}) {
			t.Errorf("%s: %+v, want %+v", tc.name, a.Results, tc.want)
		}
		if tc.want.Err != nil && (a.Entries != nil || a.Dedup != nil || l.State().NextIndex != before) {
			t.Errorf("%s: refused but applied %+v, wrote %+v", tc.name, a.Entries, a.Dedup)
		}
	}
}

// BenchmarkApply measures one instance of one append with 100,000 rows in
// the dedup table: new clients at the cap (each evicts the least recently
// used row), existing clients, and a lease renewal that moves log time and
// expires nothing.
func BenchmarkApply(b *testing.B) {
	const rows = learner.DefaultMaxClients
	// A long TTL, so that nothing expires however long the run, and a short
	// retry window, so that one lease makes every row evictable.
	lim := learner.Limits{ClientTTL: 100 * hour, ClientRetry: 1000, MaxClients: rows, LogTimeStep: 3000}
	table := func() []core.DedupEntry {
		out := make([]core.DedupEntry, rows)
		for i := range out {
			out[i] = row(uint64(i+1), t0-lim.ClientRetry-1-uint64(i%1000), si(1, uint64(i), uint64(i)))
		}
		return out
	}
	for _, bc := range []struct {
		name string
		cmd  func(i int) core.Command
	}{
		{"new-client-at-cap", func(i int) core.Command { return user(uint64(rows+1+i), 1, 1, "x") }},
		{"existing-client", func(i int) core.Command { return user(uint64(1+i%rows), uint64(2+i/rows), 1, "x") }},
		{"lease-expiring-nothing", func(i int) core.Command { return wallLease(uint64(i), t0+1+uint64(i)) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := learner.New(core.ApplyState{LogTime: t0}, table(), 2)
			l.SetClientLimits(lim)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if bc.name == "new-client-at-cap" && i%(rows/2) == rows/2-1 {
					// Make the rows stamped so far evictable: one more lease.
					b.StopTimer()
					st := l.State()
					applyOne(b, l, value(core.Command{Kind: core.CmdLease, Holder: 1, Prev: st.LeaseVersion, Wall: st.LogTime + lim.LogTimeStep}))
					b.StartTimer()
				}
				v := value(bc.cmd(i))
				l.Learn(l.Applied(), v)
				if a := l.ApplyNext(); len(a.Results) > 0 && a.Results[0].Err != nil {
					b.Fatal(a.Results[0].Err)
				}
			}
			b.StopTimer()
			if l.Clients() != rows {
				b.Fatalf("%d rows at the end", l.Clients())
			}
		})
	}
}
