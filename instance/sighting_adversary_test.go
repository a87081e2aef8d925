package instance_test

import (
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// A sighting counts only for the lease command that was seen: not for
// another value applied in the same instance.
//
// Node 2 (master) sends its renewal, lease(2) in instance 0 at ballot b1,
// and crashes before its own accept is durable (Accepts leave before the
// persist). Node 1 accepts it at tick 0 (the sighting). Once its guard has
// run out, node 1 completes phase 1 with node 3, finds (0, b1, lease(2)) in
// its own acceptor and re-proposes it at b_L; its Accepts do not get out
// (or are late). Meanwhile node 3, at a higher ballot, completes phase 1
// with the restarted node 2 (neither holds anything in instance 0) and gets
// its own fresh lease, lease(3), chosen in instance 0. Node 1 learns that
// by catch-up before it learns it was outbid. Matched by instance alone, it
// counted node 3's brand-new lease from tick 0, the sighting of node 2's
// renewal: already over. It named no master and, still leading at b_L,
// proposed a lease of its own one tick after node 3's lease applied (that
// Accept cannot be chosen: node 3's ballot is higher, and node 3's quorum
// guards it; the guards contained it, the view did not).
func TestSightingCountsADifferentValue(t *testing.T) {
	n, err := instance.New(config(1, 1, &store{}, instance.BugNone), instance.Durable{}) // lease 40
	if err != nil {
		t.Fatal(err)
	}
	l := &loneNode{t: t, n: n}
	b1 := idgen.Make(1, 1, idgen.DefaultK) // node 2's ballot
	l.step(core.Message{Type: core.MsgAccept, From: 2, Ballot: b1, Instance: 0, Value: leaseValue(2)})
	p := l.await("a Prepare once the guard ran out", func(m core.Message) bool { return m.Type == core.MsgPrepare && m.To == 3 })
	l.step(core.Message{Type: core.MsgPromise, From: 3, Ballot: p.Ballot, Instance: p.Instance})
	if n.Status().Phase != "leading" {
		t.Fatalf("node 1 not leading: %+v", n.Status())
	}
	l.out = nil
	// Node 3's own lease, chosen in instance 0 at its higher ballot.
	l.step(core.Message{Type: core.MsgLearnResp, From: 3, Instance: 0, End: 1,
		Entries: []core.InstanceValue{{Instance: 0, Value: leaseValue(3)}}})
	if h := n.Applied().LeaseHolder; h != 3 {
		t.Fatalf("lease holder %d after instance 0 applied, want 3", h)
	}
	applied := n.Now()
	n.Tick()
	l.flush()
	ownLease := false
	for _, m := range l.out {
		if h, ok := leaseHolderOf(m); ok && h == 1 && m.Type == core.MsgAccept {
			ownLease = true
		}
	}
	if got := n.Master(); got != 3 || ownLease {
		t.Fatalf("tick %d: node 3's lease applied at tick %d (lease 40 ticks), yet node 1 names master %d and proposes a lease of its own: %v; it counted node 3's lease from its sighting of node 2's renewal (tick 0), another value in the same instance",
			n.Now(), applied, got, ownLease)
	}
}

func leaseHolderOf(m core.Message) (uint64, bool) {
	for _, c := range m.Value.Commands {
		if c.Kind == core.CmdLease {
			return c.Holder, true
		}
	}
	return 0, false
}
