package learner_test

import (
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/learner"
)

func user(client, seq, req uint64, data ...string) core.Command {
	c := core.Command{Kind: core.CmdUser, ClientID: client, Seq: seq, Origin: 9, Req: req}
	for _, d := range data {
		c.Entries = append(c.Entries, []byte(d))
	}
	return c
}

func value(cmds ...core.Command) core.Value { return core.Value{Commands: cmds} }

var (
	noop = core.Command{Kind: core.CmdNoop}
)

func lease(holder, prev uint64) core.Command {
	return core.Command{Kind: core.CmdLease, Holder: holder, Prev: prev, Epoch: 7, Start: 11}
}
func trim(before uint64) core.Command {
	return core.Command{Kind: core.CmdTrim, Before: before, Origin: 9, Req: 50}
}

// trimmed is a trim's result: the first index after the trim.
func trimmed(first uint64) []learner.Result {
	return []learner.Result{{Origin: 9, Req: 50, First: first}}
}

func entries(first uint64, data ...string) []core.Entry {
	var out []core.Entry
	for i, d := range data {
		out = append(out, core.Entry{Index: first + uint64(i), Data: []byte(d)})
	}
	return out
}

func res(req, first, last uint64) learner.Result {
	return learner.Result{Origin: 9, Req: req, First: first, Last: last}
}

// si is a remembered seq: where it landed and the checksum of its entries.
func si(seq, first, last uint64, data ...string) core.SeqIndexes {
	var es [][]byte
	for _, d := range data {
		es = append(es, []byte(d))
	}
	return core.SeqIndexes{Seq: seq, First: first, Last: last, Sum: core.EntriesSum(es)}
}

func row(client, lastUsed uint64, recent ...core.SeqIndexes) core.DedupEntry {
	return core.DedupEntry{ClientID: client, Recent: recent, LastUsed: lastUsed}
}

// wallLease is a lease command carrying the master's wall clock.
func wallLease(prev, wall uint64) core.Command {
	c := lease(1, prev)
	c.Wall = wall
	return c
}

func dup(req, first, last uint64) learner.Result {
	r := res(req, first, last)
	r.Duplicate = true
	return r
}

func TestApplyNext(t *testing.T) {
	type step struct {
		v    core.Value
		want learner.Applied // Instance and Value are filled in by the test
	}
	for _, tc := range []struct {
		name      string
		state     core.ApplyState
		dedup     []core.DedupEntry
		skipDedup bool
		limits    *learner.Limits // nil: defaults
		steps     []step
		wantState core.ApplyState
	}{
		{
			name: "dense indexes across commands and instances",
			steps: []step{
				{value(user(0, 0, 1, "a", "b"), user(0, 0, 2, "c")), learner.Applied{
					Entries: entries(0, "a", "b", "c"), Results: []learner.Result{res(1, 0, 1), res(2, 2, 2)}}},
				{value(user(0, 0, 3, "d")), learner.Applied{Entries: entries(3, "d"), Results: []learner.Result{res(3, 3, 3)}}},
			},
			wantState: core.ApplyState{Applied: 2, NextIndex: 4},
		},
		{
			name: "noop, lease and trim take no index",
			steps: []step{
				{value(noop), learner.Applied{}},
				{value(user(0, 0, 1, "a"), noop, lease(3, 0), user(0, 0, 2, "b")), learner.Applied{
					Entries: entries(0, "a", "b"), Results: []learner.Result{res(1, 0, 0), res(2, 1, 1)},
					Leases: []learner.LeaseChange{{Holder: 3, Epoch: 7, Start: 11, OK: true}}}},
				{value(trim(1), user(0, 0, 3, "c")), learner.Applied{
					Entries: entries(2, "c"), Results: append(trimmed(1), res(3, 2, 2)), Trimmed: true}},
			},
			wantState: core.ApplyState{Applied: 3, NextIndex: 3, FirstIndex: 1, LeaseHolder: 3, LeaseVersion: 1},
		},
		{
			name:  "lease compare-and-set",
			state: core.ApplyState{LeaseHolder: 1, LeaseVersion: 4},
			steps: []step{
				{value(lease(2, 3)), learner.Applied{Leases: []learner.LeaseChange{{Holder: 2, Epoch: 7, Start: 11}}}}, // stale Prev
				{value(lease(2, 5)), learner.Applied{Leases: []learner.LeaseChange{{Holder: 2, Epoch: 7, Start: 11}}}}, // future Prev
				{value(lease(2, 4), lease(3, 4)), learner.Applied{Leases: []learner.LeaseChange{ // second loses the race
					{Holder: 2, Epoch: 7, Start: 11, OK: true}, {Holder: 3, Epoch: 7, Start: 11}}}},
				{value(lease(2, 5)), learner.Applied{Leases: []learner.LeaseChange{{Holder: 2, Epoch: 7, Start: 11, OK: true}}}}, // renewal
			},
			wantState: core.ApplyState{Applied: 4, LeaseHolder: 2, LeaseVersion: 6},
		},
		{
			name:  "trim clamps to NextIndex and never moves back",
			state: core.ApplyState{NextIndex: 10, FirstIndex: 2},
			steps: []step{
				{value(trim(1)), learner.Applied{Results: trimmed(2)}},
				{value(trim(2)), learner.Applied{Results: trimmed(2)}},
				{value(trim(5)), learner.Applied{Results: trimmed(5), Trimmed: true}},
				{value(trim(50)), learner.Applied{Results: trimmed(10), Trimmed: true}}, // clamped
				{value(trim(50)), learner.Applied{Results: trimmed(10)}},
				{value(trim(3)), learner.Applied{Results: trimmed(10)}},
			},
			wantState: core.ApplyState{Applied: 6, NextIndex: 10, FirstIndex: 10},
		},
		{
			name: "dedup: duplicate, stale, in-window out of order, independent clients, client 0",
			steps: []step{
				{value(user(5, 40, 1, "a", "b")), learner.Applied{Entries: entries(0, "a", "b"), Results: []learner.Result{res(1, 0, 1)},
					Dedup: []core.DedupEntry{row(5, 0, si(40, 0, 1, "a", "b"))}}},
				{value(user(5, 40, 2, "a", "b"), user(6, 1, 3, "c")), learner.Applied{Entries: entries(2, "c"),
					Results: []learner.Result{dup(2, 0, 1), res(3, 2, 2)}, Dedup: []core.DedupEntry{row(6, 0, si(1, 2, 2, "c"))}}},
				// 8 is DedupWindow below 40: it may have been applied and forgotten.
				{value(user(5, 8, 4, "z"), user(0, 0, 5, "d"), user(0, 0, 6, "d")), learner.Applied{Entries: entries(3, "d", "d"),
					Results: []learner.Result{{Origin: 9, Req: 4, Err: core.ErrStaleSeq}, res(5, 3, 3), res(6, 4, 4)}}},
				// 39 is inside the window and was never applied: it applies, out of order.
				{value(user(5, 39, 7, "e")), learner.Applied{Entries: entries(5, "e"), Results: []learner.Result{res(7, 5, 5)},
					Dedup: []core.DedupEntry{row(5, 0, si(39, 5, 5, "e"), si(40, 0, 1, "a", "b"))}}},
				{value(user(5, 39, 8, "e")), learner.Applied{Results: []learner.Result{dup(8, 5, 5)}}},
				// 72 slides the window past 39 and 40.
				{value(user(5, 72, 9, "f")), learner.Applied{Entries: entries(6, "f"), Results: []learner.Result{res(9, 6, 6)},
					Dedup: []core.DedupEntry{row(5, 0, si(72, 6, 6, "f"))}}},
				{value(user(5, 40, 10, "a")), learner.Applied{Results: []learner.Result{{Origin: 9, Req: 10, Err: core.ErrStaleSeq}}}},
			},
			wantState: core.ApplyState{Applied: 7, NextIndex: 7},
		},
		{
			name:   "idle clients expire by log time; beyond the cap the least recently used goes once idle past the retry window",
			limits: &learner.Limits{ClientTTL: 1000, ClientRetry: 400, MaxClients: 2, LogTimeStep: 3000},
			steps: []step{
				{value(user(5, 1, 1, "a")), learner.Applied{Entries: entries(0, "a"), Results: []learner.Result{res(1, 0, 0)},
					Dedup: []core.DedupEntry{row(5, 0, si(1, 0, 0, "a"))}}},
				{value(wallLease(0, 600)), learner.Applied{Leases: []learner.LeaseChange{{Holder: 1, Epoch: 7, Start: 11, OK: true}}}},
				{value(user(6, 1, 2, "b")), learner.Applied{Entries: entries(1, "b"), Results: []learner.Result{res(2, 1, 1)},
					Dedup: []core.DedupEntry{row(6, 600, si(1, 1, 1, "b"))}}},
				// Log time 1001: client 5 (last used at 0) is idle for more than 1000 ms.
				{value(wallLease(1, 1001)), learner.Applied{Leases: []learner.LeaseChange{{Holder: 1, Epoch: 7, Start: 11, OK: true}},
					Dedup: []core.DedupEntry{{ClientID: 5, Deleted: true}}}},
				{value(user(7, 1, 3, "c")), learner.Applied{Entries: entries(2, "c"), Results: []learner.Result{res(3, 2, 2)},
					Dedup: []core.DedupEntry{row(7, 1001, si(1, 2, 2, "c"))}}},
				// A third client: over the cap of 2, client 6 (least recently
				// used, idle 401 ms > 400) goes.
				{value(user(8, 1, 4, "d")), learner.Applied{Entries: entries(3, "d"), Results: []learner.Result{res(4, 3, 3)},
					Dedup: []core.DedupEntry{{ClientID: 6, Deleted: true}, row(8, 1001, si(1, 3, 3, "d"))}}},
			},
			wantState: core.ApplyState{Applied: 6, NextIndex: 4, LeaseHolder: 1, LeaseVersion: 2, LogTime: 1001},
		},
		{
			name:  "dedup table restored from durable state",
			state: core.ApplyState{Applied: 10, NextIndex: 20},
			dedup: []core.DedupEntry{row(5, 0, si(2, 12, 13, "a", "b"))},
			steps: []step{
				{value(user(5, 2, 1, "a", "b")), learner.Applied{Results: []learner.Result{dup(1, 12, 13)}}},
			},
			wantState: core.ApplyState{Applied: 11, NextIndex: 20},
		},
		{
			name:      "PlantSkipDedup applies duplicates",
			skipDedup: true,
			steps: []step{
				{value(user(5, 2, 1, "a")), learner.Applied{Entries: entries(0, "a"), Results: []learner.Result{res(1, 0, 0)},
					Dedup: []core.DedupEntry{row(5, 0, si(2, 0, 0, "a"))}}},
				{value(user(5, 2, 2, "a")), learner.Applied{Entries: entries(1, "a"), Results: []learner.Result{res(2, 1, 1)},
					Dedup: []core.DedupEntry{row(5, 0, si(2, 1, 1, "a"))}}}, // the row keeps distinct seqs
			},
			wantState: core.ApplyState{Applied: 2, NextIndex: 2},
		},
	} {
		l := learner.New(tc.state, tc.dedup, 100)
		if tc.limits != nil {
			l.SetClientLimits(*tc.limits)
		}
		if tc.skipDedup {
			l.PlantSkipDedup()
		}
		for k, s := range tc.steps {
			i := tc.state.Applied + uint64(k)
			if !l.Learn(i, s.v) || !l.Ready() {
				t.Fatalf("%s: step %d: instance %d not learnable/ready", tc.name, k, i)
			}
			got := l.ApplyNext()
			want := s.want
			want.Instance, want.Value = i, s.v
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: step %d:\n got %+v\nwant %+v", tc.name, k, got, want)
			}
		}
		if !reflect.DeepEqual(l.State(), tc.wantState) || l.Pending() != 0 || l.Ready() {
			t.Errorf("%s: state %+v pending %d, want %+v", tc.name, l.State(), l.Pending(), tc.wantState)
		}
	}
}

func TestApplyInOrderOnly(t *testing.T) {
	l := learner.New(core.ApplyState{}, nil, 100)
	l.Learn(2, value(user(0, 0, 3, "c")))
	l.Learn(1, value(user(0, 0, 2, "b")))
	if l.Ready() {
		t.Fatal("Ready with a hole at instance 0")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("ApplyNext with a hole did not panic")
			}
		}()
		l.ApplyNext()
	}()
	if l.Applied() != 0 || l.Pending() != 2 {
		t.Fatalf("applied %d pending %d after the refused apply", l.Applied(), l.Pending())
	}
	l.Learn(0, value(user(0, 0, 1, "a")))
	var got []core.Entry
	for l.Ready() {
		got = append(got, l.ApplyNext().Entries...)
	}
	if want := entries(0, "a", "b", "c"); !reflect.DeepEqual(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
	if l.Applied() != 3 {
		t.Errorf("applied %d, want 3", l.Applied())
	}
}

func TestLearn(t *testing.T) {
	const applied, maxAhead = 5, 10
	a, b := value(user(0, 0, 1, "a")), value(user(0, 0, 2, "b"))
	l := learner.New(core.ApplyState{Applied: applied, NextIndex: 3}, nil, maxAhead)
	for _, tc := range []struct {
		i    uint64
		v    core.Value
		want bool
	}{
		{0, a, false},                       // long applied
		{applied - 1, a, false},             // just applied
		{applied, a, true},                  // next
		{applied, b, false},                 // repeat does not overwrite
		{applied + maxAhead - 1, a, true},   // last bufferable
		{applied + maxAhead, a, false},      // beyond maxAhead
		{applied + maxAhead + 50, a, false}, // far beyond
		{applied + maxAhead - 1, b, false},  // repeat
	} {
		if got := l.Learn(tc.i, tc.v); got != tc.want {
			t.Errorf("Learn(%d) = %v, want %v", tc.i, got, tc.want)
		}
	}
	if l.Pending() != 2 {
		t.Errorf("pending %d, want 2", l.Pending())
	}
	if v, ok := l.Chosen(applied); !ok || !reflect.DeepEqual(v, a) {
		t.Errorf("Chosen(%d) = %v %v, want the first value", applied, v, ok)
	}
	if _, ok := l.Chosen(applied + maxAhead); ok {
		t.Error("value beyond maxAhead was buffered")
	}
}

// A base taken on one learner and installed on another that is behind makes
// the second apply what follows exactly as the first: same indexes, same
// duplicates found.
func TestSnapshotInstall(t *testing.T) {
	a := learner.New(core.ApplyState{}, nil, 100)
	for i, v := range []core.Value{value(user(7, 1, 1, "x")), value(user(8, 1, 2, "y", "z")), value(trim(2)), value(user(7, 2, 3, "w"))} {
		a.Learn(uint64(i), v)
	}
	for range 3 {
		a.ApplyNext()
	}
	base := a.Snapshot()
	want := core.Snapshot{State: core.ApplyState{Applied: 3, NextIndex: 3, FirstIndex: 2},
		Dedup: []core.DedupEntry{row(7, 0, si(1, 0, 0, "x")), row(8, 0, si(1, 1, 2, "y", "z"))}}
	if !reflect.DeepEqual(base, want) {
		t.Fatalf("Snapshot() = %+v, want %+v", base, want)
	}
	b := learner.New(core.ApplyState{Applied: 1, NextIndex: 1}, []core.DedupEntry{row(5, 0, si(1, 0, 0))}, 100)
	b.Learn(2, value(noop)) // below the base: dropped by the install
	b.Learn(3, value(user(7, 2, 3, "w")))
	b.Install(base)
	if !reflect.DeepEqual(b.State(), base.State) || b.Clients() != 2 || b.Pending() != 1 {
		t.Fatalf("after Install: state %+v, %d clients, %d pending", b.State(), b.Clients(), b.Pending())
	}
	if _, ok := b.Dedup(5); ok {
		t.Fatal("the old dedup row survived the install")
	}
	next := value(user(8, 1, 9, "y", "z")) // a retry of client 8's append
	for _, l := range []*learner.Learner{a, b} {
		l.Learn(3, value(user(7, 2, 3, "w")))
		l.ApplyNext()
		l.Learn(4, next)
		if got := l.ApplyNext(); !reflect.DeepEqual(got.Results, []learner.Result{dup(9, 1, 2)}) {
			t.Fatalf("retry after the base: %+v, want a duplicate at [1,2]", got.Results)
		}
	}
	if !reflect.DeepEqual(a.State(), b.State()) {
		t.Fatalf("states differ: %+v and %+v", a.State(), b.State())
	}
}
