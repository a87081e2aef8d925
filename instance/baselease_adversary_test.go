package instance_test

import (
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
	"github.com/paxosd/paxosd/proposer"
)

// Adversary tests of the lease in an installed base (instance.install,
// lease.Guard.Applied at the base's last instance, Applied - 1).

// installBase makes l, behind, fetch peer's base st whole: peer says it
// applied up to committed, refuses the learn request (its log starts at the
// base) and sends the base in one chunk.
func (l *lone) installBase(peer, committed uint64, st core.ApplyState) {
	l.t.Helper()
	l.n.Tick()
	l.flush()
	l.out = nil
	l.step(core.Message{Type: core.MsgProbeResp, From: peer, Committed: committed})
	req := l.take(peer, core.MsgLearnReq)
	if len(req) != 1 {
		l.t.Fatalf("no learn request to %d: %v", peer, l.out)
	}
	l.step(core.Message{Type: core.MsgLearnResp, From: peer, Committed: committed, Instance: req[0].Instance, End: st.Applied, After: req[0].After, Reject: true})
	snap := l.take(peer, core.MsgSnapReq)
	if len(snap) != 1 {
		l.t.Fatalf("no SnapReq to %d after its refusal: %v", peer, l.out)
	}
	base := core.SnapChunk{State: st, Done: true}
	l.step(core.Message{Type: core.MsgSnapResp, From: peer, Committed: committed, Instance: snap[0].Instance, End: snap[0].End, After: snap[0].After, Snap: &base})
	if got := l.n.Applied().Applied; got != st.Applied {
		l.t.Fatalf("node %d applied %d after the base, want %d", l.n.ID(), got, st.Applied)
	}
}

// Attack (restart right after install): the base's lease guards, in
// memory, as chosen in the base's last instance; a crash once the base is
// durable rebuilds the guard from the applied state alone
// (lease.Guard.Restore), which does not know that instance. It must not
// count the lease as chosen at or above the base's Applied either, or the
// lease chosen in instance Applied, applied after the restart, leaves the
// guard on the base's holder (the bug of 90c2dd4, through a restart).
// Before that lease applies the base's holder is guarded.
func TestRestartAfterBaseGuardsTheNextLease(t *testing.T) {
	d := instance.Durable{State: core.ApplyState{Applied: 50, LeaseHolder: 2, LeaseVersion: 1}, Base: 50}
	l := newLone(t, config(1, 1, &store{}, instance.BugNone), d)
	high := idgen.Make(1000, 2, idgen.DefaultK) // node 3's slot
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 3, To: 1, Ballot: high, Instance: 50}); !p.Reject {
		t.Fatal("restarted on a base naming node 2: node 3's Prepare promised while node 2's lease may run")
	}
	l.learn(3, 50, leaseCmd(3, 1, 9))
	if st := l.n.Applied(); st.LeaseHolder != 3 {
		t.Fatalf("lease holder %d after instance 50, want 3", st.LeaseHolder)
	}
	high = idgen.Make(1001, 1, idgen.DefaultK) // node 2's slot
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 2, To: 1, Ballot: high, Instance: 51}); !p.Reject {
		t.Error("restarted on a base naming node 2, then applied node 3's lease in instance 50: node 2's Prepare promised while node 3's lease runs")
	}
}

// Attack (a follower promoted later, docs/protocol.md §10: every node
// keeps the guard of the lease in a base it installs, so that a promoted
// follower guards it): follower 4 installs a base whose lease names node 2;
// instance Applied, the first after the base, chose node 3's lease; then
// 4 is promoted. As a voter it must guard node 3 and refuse node 2. With
// the base's lease counted as chosen in instance Applied (before 90c2dd4)
// the follower's guard stayed on node 2.
func TestPromotedFollowerGuardsLeaseAfterBase(t *testing.T) {
	// The base: node 4 added as a follower, node 2's lease, a donor's
	// applied state.
	donor := newLone(t, config(3, 1, &store{}, instance.BugNone), instance.Durable{})
	vals := []core.Value{
		changeValue(members.Change{Kind: members.AddFollower, ID: 4, Addr: "n4", Incarnation: 44}),
		leaseCmd(2, 0, 7),
	}
	vals = append(vals, noops(instance.ChangeDelay)...)
	donor.learn(2, 0, vals...)
	st := donor.n.Applied()
	if st.LeaseHolder != 2 {
		t.Fatalf("setup: the donor's lease holder is %d, want 2", st.LeaseHolder)
	}

	cfg := config(4, 1, &store{}, instance.BugNone)
	cfg.Joined, cfg.Incarnation = true, 44
	l := newLone(t, cfg, instance.Durable{})
	l.installBase(3, st.Applied+10, st)
	if r := l.n.Status().Role; r != "follower" {
		t.Fatalf("setup: node 4 is %s after the base, want follower", r)
	}
	a := st.Applied
	l.learn(3, a, leaseCmd(3, 1, 9), changeValue(members.Change{Kind: members.Promote, ID: 4}))
	if s := l.n.Applied(); s.LeaseHolder != 3 || l.n.Status().Role != "acceptor" {
		t.Fatalf("setup: lease holder %d, role %s; want node 3's lease and node 4 voting", s.LeaseHolder, l.n.Status().Role)
	}
	high := idgen.Make(1000, 1, idgen.DefaultK) // node 2's slot
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 2, To: 4, Ballot: high, Instance: a + 2}); !p.Reject {
		t.Error("promoted follower 4 promised node 2 while node 3's lease, chosen in the base's first instance, runs: its guard kept the base's holder")
	}
}

// fiveVoter returns node id of a cluster created with voters 1 to 5.
func fiveVoter(t *testing.T, id uint64) *lone {
	cfg := config(id, 1, &store{}, instance.BugNone)
	cfg.Members = nil
	for v := uint64(1); v <= 5; v++ {
		cfg.Members = append(cfg.Members, instance.Member{ID: v, Slot: v - 1})
	}
	return newLone(t, cfg, instance.Durable{})
}

// removeOneAndTwo makes l learn, from instance from on, the removal of
// node 1, then (once it took effect) of node 2, and the no-ops until the
// second took effect: node 3's master proposes them quickly, inside its
// lease (fillToChange). Voters 3, 4 and 5 are left.
func (l *lone) removeOneAndTwo(from uint64) {
	l.t.Helper()
	vals := []core.Value{changeValue(members.Change{Kind: members.Remove, ID: 1})}
	vals = append(vals, noops(instance.ChangeDelay-1)...)
	vals = append(vals, changeValue(members.Change{Kind: members.Remove, ID: 2}))
	vals = append(vals, noops(instance.ChangeDelay)...)
	l.learn(3, from, vals...)
	if v := l.n.Status().Members.Cur.Voters(); len(v) != 3 || v[0] != 3 {
		l.t.Fatalf("setup: voters %v after removing 1 and 2, want [3 4 5]", v)
	}
}

// Attack (docs/protocol.md §10: a quorum two changes after the one that
// accepted a lease still guards it, because every node guards the lease
// it applies): lease.Guard.Applied leaves alone a guard of a lease
// accepted in the applied lease's instance or above ("it may be newer").
// Once the guarded instance applied with another value, the accepted lease
// was never chosen (in the applied lease's own instance it was accepted at
// a lower ballot than the lease chosen there), so no holder counts it, and
// the applied lease is the one that may run. Node 4, master at ballot b4, had its
// lease accepted in instance k (0 or 1) by itself and node 5 only; node 3
// then ran phase 1 at a higher ballot through {1, 2, 3}, which had not
// seen it: node 3's lease was chosen in instance 0, the removal of node 1
// in instance 1. Nodes 4 and 5 apply both and keep guarding node 4. Node 3
// removes nodes 1 and 2 inside its lease: {4, 5} is a quorum of {3, 4, 5},
// and both promise node 4, whose clock ran ahead, while node 3's lease
// runs (TestTwoRemovalsInOneLeaseLeaveNoGuard with a stale accepted lease
// in place of none). The control: node 5 without the stale lease guards
// node 3 and refuses.
func TestAppliedLeaseMovesGuardOfUnchosenLease(t *testing.T) {
	b4 := idgen.Make(1, 3, idgen.DefaultK)     // node 4's ballot, below node 3's
	high := idgen.Make(900, 3, idgen.DefaultK) // node 4's next ballot
	for _, tc := range []struct {
		name  string
		stale bool
		at    uint64
	}{{"none (control)", false, 0}, {"in the applied lease's instance", true, 0}, {"above it", true, 1}} {
		l := fiveVoter(t, 5)
		if tc.stale {
			l.step(core.Message{Type: core.MsgAccept, From: 4, Ballot: b4, Instance: tc.at, Value: leaseCmd(4, 0, 1)})
		}
		l.learn(3, 0, leaseCmd(3, 0, 7)) // chosen at node 3's ballot, above b4
		l.removeOneAndTwo(1)
		if st := l.n.Applied(); st.LeaseHolder != 3 || l.n.Master() != 3 {
			t.Fatalf("setup: lease holder %d, master %d; want node 3's lease counted", st.LeaseHolder, l.n.Master())
		}
		if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 4, To: 5, Ballot: high, Instance: l.n.Applied().Applied}); !p.Reject {
			t.Errorf("stale lease of node 4 accepted %s: node 5 promised node 4 while node 3's lease, which it applied, runs; with node 4's own acceptor in the same state, {4, 5} is a quorum of {3, 4, 5} with no guard of node 3", tc.name)
		}
	}
}

// The same gap through a base, opened by 90c2dd4: node 5, behind, accepted
// node 4's lease (ballot b4) in instance 9, and installs a base of 10
// instances whose lease is node 3's. Instance 9 chose another value, at
// node 3's higher ballot (node 3's lease itself, if the base was taken
// right after it, as a restored member's base can be; or the trim that
// made the base), so node 4's lease there was never chosen. The base's
// lease now counts as chosen in instance 9 (Applied - 1), the guarded
// instance, and moves nothing; counted at 10 (before 90c2dd4) it moved the
// guard to node 3. Then nodes 1 and 2 are removed inside node 3's lease,
// and node 5 promises node 4 as in TestAppliedLeaseMovesGuardOfUnchosenLease.
func TestBaseLeaseMovesGuardOfItsLastInstance(t *testing.T) {
	b4 := idgen.Make(1, 3, idgen.DefaultK)
	high := idgen.Make(900, 3, idgen.DefaultK)
	l := fiveVoter(t, 5)
	l.step(core.Message{Type: core.MsgAccept, From: 4, Ballot: b4, Instance: 9, Value: leaseCmd(4, 0, 1)})
	l.installBase(3, 20, core.ApplyState{Applied: 10, LeaseHolder: 3, LeaseVersion: 1})
	l.removeOneAndTwo(10)
	if st := l.n.Applied(); st.LeaseHolder != 3 || l.n.Master() != 3 {
		t.Fatalf("setup: lease holder %d, master %d; want node 3's lease counted", st.LeaseHolder, l.n.Master())
	}
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 4, To: 5, Ballot: high, Instance: l.n.Applied().Applied}); !p.Reject {
		t.Error("node 5 promised node 4 while node 3's lease, from the base it installed, runs: its guard stayed on node 4's lease accepted in the base's last instance")
	}
}

// TestAppliedLeaseMovesGuardOfUnchosenLease end to end, in the core: nodes
// 4 and 5 in the state it builds (node 4's stale lease accepted in
// instance 0 by both, node 3's lease chosen there, nodes 1 and 2 removed),
// node 3 cut off, node 4's clock ahead of node 5's. Node 4 completes phase
// 1 through {4, 5} while node 5, by its own clock, counts node 3's lease:
// a ballot above node 3's could now be chosen under its lease. The
// control, without the stale lease: node 5 guards node 3 and refuses.
func TestStaleAcceptedLeaseLetsPhase1Through(t *testing.T) {
	b4 := idgen.Make(1, 3, idgen.DefaultK)
	for _, stale := range []bool{false, true} {
		n4, n5 := fiveVoter(t, 4), fiveVoter(t, 5)
		for _, l := range []*lone{n4, n5} {
			if stale {
				l.step(core.Message{Type: core.MsgAccept, From: 4, Ballot: b4, Instance: 0, Value: leaseCmd(4, 0, 1)})
			}
			l.learn(3, 0, leaseCmd(3, 0, 7))
			l.removeOneAndTwo(1)
			l.out = nil
		}
		// Node 4's clock runs ahead until it runs phase 1.
		var prep []core.Message
		for k := 0; k < 500 && len(prep) == 0; k++ {
			n4.n.Tick()
			n4.flush()
			prep = n4.take(5, core.MsgPrepare)
		}
		if len(prep) != 1 {
			t.Fatalf("stale %v: node 4 sent no Prepare to node 5 in 500 ticks", stale)
		}
		if n5.n.Master() != 3 {
			t.Fatalf("stale %v: setup: node 5 does not count node 3's lease (master %d)", stale, n5.n.Master())
		}
		n5.out = nil
		n5.step(prep[0])
		for _, p := range n5.take(4, core.MsgPromise) {
			n4.step(p)
		}
		if phase, _, _ := n4.n.Campaign(); phase == proposer.Leading {
			t.Errorf("stale lease %v: node 4 completed phase 1 through {4, 5}, a quorum of {3, 4, 5}, while node 5 counts node 3's lease: neither guards it", stale)
		}
	}
}
