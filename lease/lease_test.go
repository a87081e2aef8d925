package lease_test

import (
	"fmt"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/lease"
)

func leaseFor(holder uint64) core.Value {
	return core.Value{Commands: []core.Command{{Kind: core.CmdLease, Holder: holder}}}
}

var user = core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{[]byte("x")}}}}

func ballot(round, slot uint64) idgen.Ballot { return idgen.Make(round, slot, idgen.DefaultK) }

// accepted is one value an acceptor accepted.
type accepted struct {
	b idgen.Ballot
	i uint64
	v core.Value
}

// The guard follows the lease accepted at the highest (ballot, instance),
// whatever order the Accepts arrive in; other values never move it.
func TestGuardOrder(t *testing.T) {
	for _, tc := range []struct {
		name    string
		seq     []accepted
		holder  uint64 // the holder guarded after seq
		anyLast uint64 // the holder guarded with the planted bug (the last lease accepted)
	}{
		{"one lease", []accepted{{ballot(1, 0), 3, leaseFor(1)}}, 1, 1},
		{"a later instance at the same ballot moves it",
			[]accepted{{ballot(1, 0), 3, leaseFor(1)}, {ballot(1, 0), 4, leaseFor(2)}}, 2, 2},
		{"a stale lease re-proposed below, arriving late, does not",
			[]accepted{{ballot(1, 0), 3, leaseFor(1)}, {ballot(1, 0), 2, leaseFor(2)}}, 1, 2},
		{"a higher ballot in a lower instance moves it",
			[]accepted{{ballot(1, 0), 5, leaseFor(1)}, {ballot(2, 1), 4, leaseFor(2)}}, 2, 2},
		{"an older ballot in a higher instance, arriving late, does not",
			[]accepted{{ballot(2, 1), 4, leaseFor(2)}, {ballot(1, 0), 5, leaseFor(1)}}, 2, 1},
		{"a value without a lease never moves it",
			[]accepted{{ballot(1, 0), 3, leaseFor(1)}, {ballot(2, 1), 9, user}}, 1, 1},
		{"the same lease again keeps it",
			[]accepted{{ballot(1, 0), 3, leaseFor(1)}, {ballot(1, 0), 3, leaseFor(1)}}, 1, 1},
	} {
		for _, planted := range []bool{false, true} {
			var g lease.Guard
			if planted {
				g.PlantAnyOrder()
			}
			for k, a := range tc.seq {
				g.Accepted(uint64(k), 100, a.b, a.i, a.v)
			}
			want := tc.holder
			if planted {
				want = tc.anyLast
			}
			// The guarded holder is the only one not refused.
			for _, from := range []uint64{1, 2, 3} {
				if got := g.Refuses(10, from); got != (from != want) {
					t.Errorf("%s (planted %v): Refuses(%d) = %v, want the guard on %d", tc.name, planted, from, got, want)
				}
			}
		}
	}
}

// A guard lasts a full lease from the accept that set it, and a renewal
// (a later instance) extends it; the same lease accepted again (a resent
// Accept) does not, or a master that no longer hears the replies and
// resends for ever would be guarded for ever.
func TestGuardTiming(t *testing.T) {
	var g lease.Guard
	if g.Refuses(0, 1) {
		t.Fatal("an empty guard refuses")
	}
	g.Accepted(10, 100, ballot(1, 0), 3, leaseFor(1))
	if !g.Refuses(109, 2) || g.Refuses(110, 2) {
		t.Fatalf("accepted at 10 for 100 ticks: Refuses(109)=%v Refuses(110)=%v, want true false", g.Refuses(109, 2), g.Refuses(110, 2))
	}
	g.Accepted(60, 100, ballot(1, 0), 3, leaseFor(1)) // resent
	if g.Refuses(110, 2) {
		t.Fatal("a resent Accept of the guarded lease started the guard over")
	}
	g.Accepted(160, 100, ballot(1, 0), 4, leaseFor(1))
	if !g.Refuses(259, 2) || g.Refuses(260, 2) {
		t.Fatal("a renewal accepted at 160 does not guard until 260")
	}
}

// At a restart the guard lasts a full lease from then, for the latest
// accepted lease when it names the applied lease's holder (or nothing is
// applied), for the applied one when nothing is accepted, and for nobody
// (it refuses everyone) when they differ: an older ballot's lease may sit
// in a higher instance than the lease applied since, whose ballot the
// applied state does not keep.
func TestGuardRestore(t *testing.T) {
	acc := func(b idgen.Ballot, i, holder uint64) core.InstanceValue {
		return core.InstanceValue{Instance: i, Ballot: b, Value: leaseFor(holder)}
	}
	for _, tc := range []struct {
		name     string
		applied  uint64
		accepted []core.InstanceValue
		allowed  uint64 // the one node not refused (0: everyone refused, lease.Everyone: nobody)
	}{
		{"nothing", 0, nil, lease.Everyone},
		{"applied only", 2, nil, 2},
		{"accepted only", 0, []core.InstanceValue{acc(ballot(1, 0), 4, 1)}, 1},
		{"the same holder", 1, []core.InstanceValue{acc(ballot(1, 0), 4, 1)}, 1},
		{"latest accepted in any order", 0, []core.InstanceValue{acc(ballot(2, 1), 3, 2), acc(ballot(1, 0), 4, 1)}, 2},
		{"applied and accepted differ", 2, []core.InstanceValue{acc(ballot(1, 0), 5, 1)}, 0},
	} {
		var g lease.Guard
		g.Restore(10, 100, tc.applied, tc.accepted)
		for _, from := range []uint64{1, 2, 3} {
			want := tc.allowed != lease.Everyone && from != tc.allowed
			if got := g.Refuses(109, from); got != want {
				t.Errorf("%s: Refuses(109, %d) = %v, want %v", tc.name, from, got, want)
			}
			if g.Refuses(110, from) {
				t.Errorf("%s: refuses %d a full lease after the restart", tc.name, from)
			}
		}
		// A lease accepted later takes over.
		g.Accepted(20, 100, ballot(9, 2), 9, leaseFor(3))
		if !g.Refuses(50, 1) || g.Refuses(50, 3) {
			t.Errorf("%s: a newer accepted lease does not take over", tc.name)
		}
	}
}

func newView() *lease.View {
	return lease.NewView(lease.Config{Ticks: 100, Margin: 20}, 1, 7)
}

// The holder counts its lease from when it proposed it, less the margin;
// the others from when they applied it; a lease whose compare-and-set
// failed changes nothing but ends our proposal in flight.
func TestViewApplied(t *testing.T) {
	v := newView()
	if !v.Due(0, 0, false) {
		t.Fatal("no lease: not due")
	}
	start, epoch := v.Proposing(5)
	if start != 5 || epoch != 7 || v.Due(6, 0, true) {
		t.Fatalf("Proposing(5) = %d, %d; due again while in flight: %v", start, epoch, v.Due(6, 0, true))
	}
	v.Applied(30, 0, 1, 7, 5, true)
	if !v.Held(84) || v.Held(85) {
		t.Fatalf("own lease proposed at 5: Held(84)=%v Held(85)=%v, want true false (5+100-20)", v.Held(84), v.Held(85))
	}
	if v.Due(34, 0, true) || !v.Due(35, 0, true) {
		t.Fatal("renewal not due exactly when half the lease is left (85-35 = 50)")
	}
	// Another incarnation's lease of ours does not count.
	v.Applied(40, 1, 1, 6, 5, true)
	if v.Held(41) {
		t.Fatal("a lease of an earlier incarnation counts")
	}
	// Another node's lease counts a full lease from its apply, for others.
	v.Applied(50, 2, 2, 9, 44, true)
	if !v.OtherValid(149) || v.OtherValid(150) || v.Held(51) {
		t.Fatal("node 2's lease applied at 50 does not count until 150")
	}
	// A failed compare-and-set changes nothing, but our proposal is done.
	w := newView()
	w.Proposing(5)
	w.Applied(10, 0, 1, 7, 5, false)
	if w.Held(11) || w.OtherValid(11) || !w.Due(11, 0, true) {
		t.Fatal("a failed lease counted, or left our proposal in flight")
	}
	// Restore: everyone counts a full lease from now, the holder nothing.
	v.Proposing(200)
	v.Restore(300)
	if v.Held(301) || !v.OtherValid(399) || v.OtherValid(400) || !v.Due(301, 0, true) {
		t.Fatal("Restore(300)")
	}
	v.StepDown()
	if !v.Due(301, 0, true) {
		t.Fatal("StepDown left a proposal in flight")
	}
}

// A holder whose phase 1 re-proposes another node's lease stops counting its
// own at once, and counts again only from a lease of its own applied above
// the foreign one; with the planted bug it keeps counting.
func TestViewReproposedForeign(t *testing.T) {
	for _, planted := range []bool{false, true} {
		v := newView()
		if planted {
			v.PlantKeepOwn()
		}
		v.Proposing(0)
		v.Applied(1, 0, 1, 7, 0, true)
		accepts := []core.Message{
			{Type: core.MsgAccept, To: 1, Instance: 1, Value: leaseFor(1)}, // our own, below
			{Type: core.MsgAccept, To: 2, Instance: 2, Value: leaseFor(3)}, // to another voter: counted once, from ours
			{Type: core.MsgAccept, To: 1, Instance: 2, Value: leaseFor(3)},
			{Type: core.MsgAccept, To: 1, Instance: 3, Value: user},
		}
		v.Reproposed(accepts)
		v.Reproposed(nil) // a later phase 1 that re-proposes nothing changes nothing
		if v.Held(2) != planted {
			t.Fatalf("planted %v: Held after re-proposing node 3's lease = %v", planted, v.Held(2))
		}
		if planted {
			continue
		}
		v.Applied(3, 1, 1, 7, 0, true) // our lease re-proposed in instance 1, below
		if v.Held(4) {
			t.Fatal("our lease below the foreign one counts")
		}
		v.Applied(4, 2, 3, 0, 0, false) // the foreign one fails its compare-and-set
		v.Applied(4, 3, 1, 7, 0, true)  // our lease re-proposed with it, above it
		if v.Held(4) {
			t.Fatal("our lease re-proposed in the same phase 1 counts")
		}
		start, _ := v.Proposing(5)
		v.Applied(6, 4, 1, 7, start, true) // our new lease, after them
		if !v.Held(6) {
			t.Fatal("our lease proposed after the re-proposals does not count")
		}
		// A second phase 1 re-proposes the foreign lease again, in an
		// instance below our lease: its higher ballot outranks our lease.
		v.Reproposed([]core.Message{{Type: core.MsgAccept, To: 1, Instance: 2, Value: leaseFor(3)}})
		if v.Held(7) {
			t.Fatal("the foreign lease re-proposed again, below our lease, left it counting")
		}
	}
}

// A lease chosen in a higher instance than the guarded one, once applied,
// moves the guard to its holder for a full lease from the apply, and so
// does one chosen in the guarded instance itself (the guarded lease was
// not chosen there). One in a lower instance, for another holder, leaves
// the guard refusing everyone until the later of the two ends: either
// lease may be the one on until the guarded instance is decided. With the
// guard-old-lease bug planted, applied leases move nothing.
func TestGuardApplied(t *testing.T) {
	for _, tc := range []struct {
		name    string
		guarded uint64 // instance of the guarded lease (node 1's)
		applied uint64 // instance of node 2's lease, applied
		want    uint64 // the holder guarded after (lease.Everyone: nobody is promised)
		until   uint64 // refuses others until then
	}{
		{"a later instance moves it", 3, 5, 2, 150},
		{"a lower instance refuses everyone", 5, 3, lease.Everyone, 150},
		{"the same instance moves it", 5, 5, 2, 150},
	} {
		for _, planted := range []bool{false, true} {
			var g lease.Guard
			if planted {
				g.PlantAnyOrder()
			}
			g.Accepted(10, 100, ballot(1, 0), tc.guarded, leaseFor(1))
			g.Applied(50, 100, tc.applied, 2)
			want, until := tc.want, tc.until
			if planted {
				want, until = 1, 110
			}
			checkGuard(t, fmt.Sprintf("%s (planted %v)", tc.name, planted), &g, want, until)
		}
	}
	var g lease.Guard
	g.Applied(50, 100, 5, 2)
	if !g.Refuses(60, 3) || g.Refuses(60, 2) || g.Refuses(150, 3) {
		t.Error("an applied lease did not start a guard where none was, for a full lease")
	}
	g.Applied(120, 100, 9, 2) // its renewal, applied
	if !g.Refuses(200, 3) || g.Refuses(220, 3) {
		t.Error("an applied renewal did not renew the guard")
	}
	// The same holder's lease applied at or below the guarded instance
	// leaves the guard as it was.
	g = lease.Guard{}
	g.Accepted(10, 100, ballot(1, 0), 5, leaseFor(2))
	g.Applied(50, 100, 5, 2)
	g.Applied(60, 100, 4, 2)
	if g.Refuses(70, 2) || !g.Refuses(109, 3) || g.Refuses(110, 3) {
		t.Error("the guarded holder's own lease, applied at or below the guarded instance, changed the guard")
	}
	g = lease.Guard{}
	// A restart that could not tell two leases apart refuses everyone, until
	// a lease chosen above both applies.
	g.Restore(0, 100, 1, []core.InstanceValue{{Instance: 4, Ballot: ballot(1, 0), Value: leaseFor(3)}})
	if !g.Refuses(10, 1) || !g.Refuses(10, 3) {
		t.Fatal("the restored guard does not refuse everyone")
	}
	g.Applied(20, 100, 6, 2)
	if g.Refuses(30, 2) || !g.Refuses(30, 3) || g.Refuses(120, 3) {
		t.Error("a lease chosen above the restored ones did not move the guard to its holder for a lease")
	}
}

// checkGuard checks that at tick 60 g promises only want (of nodes 1-3;
// lease.Everyone: none) and that it refuses others until until.
func checkGuard(t *testing.T, name string, g *lease.Guard, want, until uint64) {
	t.Helper()
	for _, from := range []uint64{1, 2, 3} {
		if got := g.Refuses(60, from); got != (from != want) {
			t.Errorf("%s: Refuses(%d) = %v, want the guard on %d", name, from, got, want)
		}
	}
	if !g.Refuses(until-1, 3) || g.Refuses(until, 3) {
		t.Errorf("%s: the guard does not end at %d", name, until)
	}
}

// Once the guarded lease's instance is applied and the applied state names
// another holder, the guarded lease was never chosen (or a later one ended
// it): Decided moves the guard to the applied holder for a full lease. A
// guard of a lease in an instance not yet applied is left alone, as is one
// of the applied holder, and the planted guard-old-lease bug moves nothing.
func TestGuardDecided(t *testing.T) {
	for _, tc := range []struct {
		name    string
		applied uint64 // instances below it are applied
		holder  uint64 // the applied state's lease holder
		want    uint64 // the holder guarded after
		until   uint64
	}{
		{"the guarded instance applied, another holder", 6, 2, 2, 150},
		{"the guarded instance not yet applied", 5, 2, 1, 110},
		{"the guarded holder applied", 6, 1, 1, 110},
		{"no lease applied", 6, 0, 1, 110},
	} {
		for _, planted := range []bool{false, true} {
			var g lease.Guard
			if planted {
				g.PlantAnyOrder()
			}
			g.Accepted(10, 100, ballot(1, 0), 5, leaseFor(1))
			g.Decided(50, 100, tc.applied, tc.holder)
			want, until := tc.want, tc.until
			if planted {
				want, until = 1, 110
			}
			checkGuard(t, fmt.Sprintf("%s (planted %v)", tc.name, planted), &g, want, until)
		}
	}
	// A guard refusing everyone (two leases that could not be told apart)
	// follows the applied holder once the later instance is decided.
	var g lease.Guard
	g.Accepted(10, 100, ballot(1, 0), 5, leaseFor(1))
	g.Applied(20, 100, 3, 2)
	if !g.Refuses(30, 1) || !g.Refuses(30, 2) {
		t.Fatal("a lease applied below the guarded one, for another holder, did not make the guard refuse everyone")
	}
	g.Decided(40, 100, 6, 2)
	if g.Refuses(50, 2) || !g.Refuses(50, 1) || !g.Refuses(139, 3) || g.Refuses(140, 3) {
		t.Error("once the guarded instance applied without its lease, the guard did not follow the applied holder for a lease")
	}
}

// A leading node proposes no lease of its own while a foreign lease it
// re-proposed (or handed over) is still to apply: ours would carry the
// lease version from before, fail, and still be guarded by its acceptors.
func TestViewDueAfterForeign(t *testing.T) {
	v := newView()
	v.Reproposed([]core.Message{{Type: core.MsgAccept, To: 1, Instance: 4, Value: leaseFor(3)}})
	if v.Due(10, 4, false) {
		t.Fatal("due with node 3's lease in instance 4 still to apply")
	}
	if !v.Due(10, 5, false) {
		t.Fatal("not due once it applied")
	}
	w := newView()
	w.HandedOver(7)
	if w.Due(10, 7, true) || !w.Due(10, 8, true) {
		t.Fatal("a handover still to apply: due, or not due after it applied")
	}
}

func TestViewWaitOut(t *testing.T) {
	v := newView() // node 1
	v.Reproposed([]core.Message{{Type: core.MsgAccept, To: 1, Instance: 4, Value: leaseFor(3)}})
	v.Applied(10, 4, 3, 1, 0, true) // node 3's lease, re-proposed by us
	if !v.WaitOut(10) || !v.WaitOut(109) {
		t.Fatal("a leader does not wait out the lease it re-proposed")
	}
	if v.WaitOut(110) {
		t.Fatal("waits out a lease that ran out")
	}
	v.Applied(20, 5, 2, 1, 0, true) // a lease above what we re-proposed
	if v.WaitOut(21) {
		t.Fatal("waits out a lease it did not re-propose")
	}
	v.Reproposed([]core.Message{{Type: core.MsgAccept, To: 1, Instance: 8, Value: leaseFor(3)}})
	v.StepDown()
	v.Applied(30, 7, 3, 1, 0, true)
	if v.WaitOut(31) {
		t.Fatal("waits out, in a new term, a lease the last term re-proposed")
	}
	w := newView()
	w.HandedOver(7)
	w.Applied(10, 7, 3, 1, 0, true)
	if w.WaitOut(11) {
		t.Fatal("waits out the lease it handed over: it must step down for its successor")
	}
}

func TestViewCountsReproposedLeaseFromSighting(t *testing.T) {
	iv := func(i uint64, b idgen.Ballot, holder uint64) core.InstanceValue {
		return core.InstanceValue{Instance: i, Ballot: b, Value: leaseFor(holder)}
	}
	v := newView() // node 1, lease 100
	v.Accepted(10, 4, 65, leaseFor(3))
	v.Accepted(30, 4, 65, leaseFor(3)) // resent: the first sighting stands
	v.Refound(90, []core.InstanceValue{iv(4, 65, 3)})
	v.Reproposed([]core.Message{{Type: core.MsgAccept, To: 1, Instance: 4, Value: leaseFor(3)}})
	v.Applied(95, 4, 3, 0, 0, true)
	if !v.OtherValid(109) || v.OtherValid(110) {
		t.Fatal("a re-proposed lease this node accepted at tick 10 does not count until 110")
	}

	// Found at another ballot than the one accepted here: another value,
	// maybe proposed after tick 10. It counts from the phase 1 that found it.
	w := newView()
	w.Accepted(10, 4, 65, leaseFor(3))
	w.Refound(90, []core.InstanceValue{iv(4, 129, 3)})
	w.Reproposed([]core.Message{{Type: core.MsgAccept, To: 1, Instance: 4, Value: leaseFor(3)}})
	w.Applied(95, 4, 3, 0, 0, true)
	if !w.OtherValid(189) || w.OtherValid(190) {
		t.Fatal("a lease found at another ballot than this node accepted does not count from the phase 1 (90) that found it")
	}

	// Not re-proposed by this term: counted from its apply.
	x := newView()
	x.Accepted(10, 4, 65, leaseFor(3))
	x.Refound(90, []core.InstanceValue{iv(4, 65, 3)})
	x.StepDown()
	x.Applied(95, 4, 3, 0, 0, true)
	if !x.OtherValid(194) {
		t.Fatal("a lease applied after the term that re-proposed it ended does not count from its apply")
	}
}

// Node 1 saw node 3's lease in instance 4 at tick 10 and re-proposed it.
// It is outbid before the re-proposal is chosen; the higher ballot finds
// nothing in instance 4 and gets node 2's fresh lease (proposed at tick 94)
// chosen there. Node 1 applies it (tick 95) before it notices it was
// outbid. The sighting is of another lease command: node 2's counts from
// its apply. Matched by instance alone it counted from tick 10, over at
// 110, while node 2 counts its own until 94+100-20 = 174 (found by the
// adversary review of the sighting rule).
func TestViewSightingOfAnotherValue(t *testing.T) {
	v := newView() // node 1, lease 100, margin 20
	v.Accepted(10, 4, ballot(1, 2), leaseFor(3))
	v.Refound(90, []core.InstanceValue{{Instance: 4, Ballot: ballot(1, 2), Value: leaseFor(3)}})
	v.Reproposed([]core.Message{{Type: core.MsgAccept, To: 1, Instance: 4, Value: leaseFor(3)}})
	v.Applied(95, 4, 2, 9, 94, true) // node 2's own lease (its epoch 9, start 94), another value
	if !v.OtherValid(173) {
		t.Fatalf("node 2's lease, proposed at 94 and applied at 95, no longer counts at 173 (node 2 counts it to 174): counted from the sighting of node 3's lease at tick 10")
	}
}
