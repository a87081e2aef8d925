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
