package instance_test

import (
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// Adversary tests of lease.Guard.Decided where instance/ calls it: after
// each applied instance and after each Accept the acceptor takes.

// Attack (the call sites' frontier, safety): Decided may move a guard only
// once the guarded lease's instance is applied. Node 3 applied node 1's
// lease in instance 0; node 2, after a phase 1 at a higher ballot, had its
// own lease accepted by node 3 in instance 2, which node 2 counts once it
// is chosen. Node 3 then applies instance 1 and accepts node 2's next value
// in instance 3: both call Decided with node 1 in the applied state and
// instance 2 still open. The guard must stay on node 2 and refuse node 1.
// Planted: the apply site passing a.Instance+2, or the Accept site
// passing n.learn.Applied()+1, moved the guard to node 1 and node 3
// promised it while node 2's lease may run.
func TestDecidedWaitsForTheGuardedInstance(t *testing.T) {
	b2 := idgen.Make(5, 1, idgen.DefaultK)   // node 2's ballot
	b1 := idgen.Make(900, 0, idgen.DefaultK) // node 1's next, higher
	for _, via := range []string{"apply", "accept"} {
		l := newLone(t, config(3, 1, &store{}, instance.BugNone), instance.Durable{})
		l.learn(1, 0, leaseCmd(1, 0, 7))
		l.step(core.Message{Type: core.MsgAccept, From: 2, Ballot: b2, Instance: 2, Value: leaseCmd(2, 1, 9)})
		l.learn(1, 1, noopValue())
		if via == "accept" {
			l.step(core.Message{Type: core.MsgAccept, From: 2, Ballot: b2, Instance: 3, Value: noopValue()})
		}
		if st := l.n.Applied(); st.Applied != 2 || st.LeaseHolder != 1 {
			t.Fatalf("%s: setup: applied %d, holder %d; want 2 and node 1", via, st.Applied, st.LeaseHolder)
		}
		if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 1, To: 3, Ballot: b1, Instance: 2}); !p.Reject {
			t.Errorf("%s: node 3 promised node 1 while node 2's lease, accepted in instance 2 (not yet applied), may be chosen and run", via)
		}
	}
}

// Attack (liveness, the apply site): a lease chosen below the guarded
// instance, for another holder, leaves the guard refusing everyone until
// the guarded instance is decided; Decided then hands it to the applied
// holder. Without it the master the log names is refused for a lease just
// when it needs a phase 1: node 5 accepted node 4's stale lease (ballot
// b4) in instance 1, then applied node 3's lease in instance 0 and the
// removals of nodes 1 and 2 from instance 1 on (TestAppliedLeaseMovesGuardOfUnchosenLease,
// "above it"). Node 3, the master, runs phase 1 again for {3, 4, 5}: node
// 5 must promise it, and still refuse node 4. Planted: the apply site's
// Decided call removed, node 5 refused node 3 (no instance test caught
// that before).
func TestDecidedGuardPromisesTheAppliedHolder(t *testing.T) {
	b4 := idgen.Make(1, 3, idgen.DefaultK)
	b3 := idgen.Make(900, 2, idgen.DefaultK) // node 3's new phase 1
	high := idgen.Make(901, 3, idgen.DefaultK)
	l := fiveVoter(t, 5)
	l.step(core.Message{Type: core.MsgAccept, From: 4, Ballot: b4, Instance: 1, Value: leaseCmd(4, 0, 1)})
	l.learn(3, 0, leaseCmd(3, 0, 7))
	l.removeOneAndTwo(1)
	a := l.n.Applied().Applied
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 4, To: 5, Ballot: high, Instance: a}); !p.Reject {
		t.Fatal("node 5 promised node 4 while node 3's lease, which it applied, runs")
	}
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 3, To: 5, Ballot: b3, Instance: a}); p.Reject {
		t.Error("node 5 refused node 3, the holder of the lease it applied, once instance 1 (node 4's stale lease) was decided: the guard still refuses everyone")
	}
}

// Attack (a holder never counts a lease whose compare-and-set failed, so
// its acceptors need not guard it): node 3 applied node 1's lease in
// instance 0 and accepted node 2's lease in instance 1 carrying the lease
// version from before it (Prev 0); that value is chosen in instance 1 and
// fails its compare-and-set, so the applied state still names node 1 and
// node 2 counts nothing. Decided moves the guard to node 1: node 1 is
// promised, node 2 refused. Planted: the apply site's Decided call removed,
// the guard stayed on node 2's failed lease: node 3 promised node 2 while
// node 1's lease runs, and refused node 1.
func TestFailedLeaseHandsGuardToAppliedHolder(t *testing.T) {
	b2 := idgen.Make(5, 1, idgen.DefaultK)
	l := newLone(t, config(3, 1, &store{}, instance.BugNone), instance.Durable{})
	l.learn(1, 0, leaseCmd(1, 0, 7))
	stale := leaseCmd(2, 0, 9)
	l.step(core.Message{Type: core.MsgAccept, From: 2, Ballot: b2, Instance: 1, Value: stale})
	l.learn(2, 1, stale)
	if st := l.n.Applied(); st.LeaseHolder != 1 || st.LeaseVersion != 1 {
		t.Fatalf("setup: holder %d version %d after the failed lease, want node 1 at version 1", st.LeaseHolder, st.LeaseVersion)
	}
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 2, To: 3, Ballot: idgen.Make(900, 1, idgen.DefaultK), Instance: 2}); !p.Reject {
		t.Error("node 3 promised node 2 while node 1's lease, which it applied, runs")
	}
	if p := promiseTo(t, l.n, core.Message{Type: core.MsgPrepare, From: 1, To: 3, Ballot: idgen.Make(901, 0, idgen.DefaultK), Instance: 2}); p.Reject {
		t.Error("node 3 refused node 1, the applied holder, for node 2's lease whose compare-and-set failed")
	}
}
