package instance_test

import (
	"fmt"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// isLeaseAccept matches an Accept to node to whose value holds a lease
// command.
func isLeaseAccept(to uint64) func(core.Message) bool {
	return func(m core.Message) bool {
		if m.Type != core.MsgAccept || m.To != to {
			return false
		}
		for _, c := range m.Value.Commands {
			if c.Kind == core.CmdLease {
				return true
			}
		}
		return false
	}
}

// Node 1 is master (lease in instance 0), proposes a renewal in instance 1
// and is outbid there; its lease still runs, so after its next phase 1 it
// is master again at once, and that phase 1 re-proposes its own renewal (a
// lease of its own, not foreign, which the view no longer calls in flight:
// StepDown forgot it). A TransferMaster then must not propose the handover
// with the lease version from before that renewal applies, or the
// handover's compare-and-set fails behind it and the handover silently
// never happens (TransferMaster said yes). Today it cannot: the renewal is
// always due again after such a phase 1 (it was proposed when due, and
// only a lease of ours applied since could push the lease's end out), so
// a fresh renewal is in flight and the handover waits for it. A regression
// test for that chain of reasoning.
func TestHandoverBehindReproposedOwnLease(t *testing.T) {
	n, err := instance.New(config(1, 1, &store{}, instance.BugNone), instance.Durable{})
	if err != nil {
		t.Fatal(err)
	}
	l := &loneNode{t: t, n: n}
	isTo2 := func(typ core.MsgType) func(core.Message) bool {
		return func(m core.Message) bool { return m.Type == typ && m.To == 2 }
	}
	p := l.await("a Prepare", isTo2(core.MsgPrepare))
	l.step(core.Message{Type: core.MsgPromise, From: 2, Ballot: p.Ballot, Instance: p.Instance})
	a := l.await("its lease", isTo2(core.MsgAccept))
	l.step(core.Message{Type: core.MsgAccepted, From: 2, Ballot: a.Ballot, Instance: a.Instance})
	if !n.IsMaster() {
		t.Fatal("node 1 is not master after its lease applied")
	}
	renewal := l.await("a renewal", isLeaseAccept(2))
	high := idgen.Make(renewal.Ballot.Round(idgen.DefaultK)+1, 1, idgen.DefaultK)
	l.step(core.Message{Type: core.MsgAccepted, From: 2, Ballot: renewal.Ballot, Instance: renewal.Instance, Reject: true, Promised: high})
	p = l.await("a second Prepare", isTo2(core.MsgPrepare))
	// Node 2 accepted the renewal before it promised the higher ballot.
	l.step(core.Message{Type: core.MsgPromise, From: 2, Ballot: p.Ballot, Instance: p.Instance,
		Entries: []core.InstanceValue{{Instance: renewal.Instance, Ballot: renewal.Ballot, Value: renewal.Value}}})
	if !n.IsMaster() {
		t.Fatalf("node 1 is not master again right after its second phase 1 (tick %d): the scenario needs its first lease still running", n.Now())
	}
	to, err := n.TransferMaster(2)
	if err != nil || to != 2 {
		t.Fatalf("TransferMaster(2) = %d, %v", to, err)
	}
	l.flush()
	// Accept everything node 1 sends, in order, until the handover applies
	// or node 1 renews its own lease above a failed handover.
	for k := 0; ; k++ {
		if k > 20 {
			t.Fatalf("no handover after 20 Accepts; applied %+v", n.Applied())
		}
		a := l.await("an Accept", isTo2(core.MsgAccept))
		l.step(core.Message{Type: core.MsgAccepted, From: 2, Ballot: a.Ballot, Instance: a.Instance})
		if st := n.Applied(); st.LeaseHolder == 2 {
			break
		}
		if h, ok := lease1(a.Value); ok && h == 2 {
			t.Fatalf("the handover in instance %d applied with a failed compare-and-set: the lease names node %d (version %d)", a.Instance, n.Applied().LeaseHolder, n.Applied().LeaseVersion)
		}
	}
	if n.IsMaster() {
		t.Fatal("node 1 is master after its handover applied")
	}
}

// lease1 returns the holder of the lease command in v.
func lease1(v core.Value) (uint64, bool) {
	for _, c := range v.Commands {
		if c.Kind == core.CmdLease {
			return c.Holder, true
		}
	}
	return 0, false
}

// holdRenewal ticks until master m sends a lease renewal, with every
// Accepted reply to m dropped from then on (c.drop is left so): the renewal
// stays in flight. c.watch keeps watching as before.
func holdRenewal(t *testing.T, c *cluster, m uint64) {
	t.Helper()
	renewing, prev := false, c.watch
	c.watch = func(msg core.Message) {
		if prev != nil {
			prev(msg)
		}
		if msg.From == m && isLeaseAccept(msg.To)(msg) {
			renewing = true
		}
	}
	c.drop = func(msg core.Message) bool { return msg.Type == core.MsgAccepted && msg.To == m }
	for k := 0; !renewing; k++ {
		if k > 100 {
			t.Fatal("no renewal in 100 ticks")
		}
		c.tick()
	}
	c.watch = prev
}

// TransferMaster while the master's renewal is in flight (its Accepted
// replies lost): the handover waits for the renewal. The master once went
// on serving meanwhile, although TransferMaster says it stops at once: the
// caller was told the master stopped while it still took appends and
// served reads, for as long as the renewal stayed in flight. A master with
// a handover pending is no longer master (Node.IsMaster). Once the replies
// get through, the handover must still complete.
func TestTransferWhileRenewalInFlight(t *testing.T) {
	c := newCluster(t, 6, instance.BugNone)
	m := c.elect()
	var to uint64
	for _, id := range c.ids {
		if id != m {
			to = id
			break
		}
	}
	holdRenewal(t, c, m)
	if !c.nodes[m].IsMaster() {
		t.Fatal("scenario: the master's lease ran out before its renewal left")
	}
	if _, err := c.nodes[m].TransferMaster(to); err != nil {
		t.Fatal(err)
	}
	stillMaster := c.nodes[m].IsMaster()
	_, readErr := c.nodes[m].ReadIndex()
	appendErr := c.nodes[m].Propose(instance.Proposal{Req: 77, Entries: data("after-transfer")})
	c.drop = nil
	for k := 0; !c.nodes[to].IsMaster(); k++ {
		if k > 60 {
			t.Fatalf("node %d not master 60 ticks after the replies got through: %+v / %+v", to, c.nodes[to].Status(), c.nodes[m].Status())
		}
		c.tick()
	}
	if stillMaster {
		t.Errorf("TransferMaster(%d) returned, yet node %d is still master (ReadIndex err %v, Propose err %v): the handover waits for the renewal in flight and the lease still counts",
			to, m, readErr, appendErr)
	}
}

// The old master is cut off right after its handover's Accepts leave: the
// other two accept the handover (their guards move to the successor) but
// nobody learns it was chosen, and no Commit comes. The successor does
// not know it holds the lease; it waits for the old lease to run out in
// its view, then runs phase 1 through the third node, which guards it,
// re-proposes the handover and its own lease. At no tick two masters
// (cluster.tick), the old master never serves again while cut off, and a
// master is back within a few leases. After the cut heals the old master
// learns everything and all logs agree.
// With handover-keeps-lease planted the old master is caught counting its
// lease while cut off.
func TestHandoverOldMasterCutOff(t *testing.T) {
	if err := handoverOldMasterCutOff(t, instance.BugNone); err != nil {
		t.Fatal(err)
	}
	if err := handoverOldMasterCutOff(t, instance.BugHandoverKeepsLease); err == nil {
		t.Fatalf("with %s planted the scenario does not reach the fault", instance.BugHandoverKeepsLease)
	}
}

func handoverOldMasterCutOff(t *testing.T, bug instance.Bug) error {
	for seed := uint64(1); seed <= 5; seed++ {
		c := newCluster(t, seed, bug)
		a := c.elect()
		for range 25 {
			c.tick()
		}
		if err := c.nodes[a].Propose(instance.Proposal{Req: 1, Entries: data("x")}); err != nil {
			t.Fatal(err)
		}
		c.await(a, 1)
		to, err := c.nodes[a].TransferMaster(0)
		if err != nil {
			t.Fatal(err)
		}
		// Only the handover's Accepts get out of the old master.
		c.drop = func(m core.Message) bool {
			return (m.From == a || m.To == a) && !(m.From == a && m.Type == core.MsgAccept)
		}
		c.drain()
		c.drop = func(m core.Message) bool { return m.From == a || m.To == a }
		var took int
		for k := 0; ; k++ {
			if k > 3*40 {
				t.Fatalf("seed %d: no master among the others %d ticks after the handover to %d (old master %d cut off): %+v %+v",
					seed, k, to, a, c.nodes[to].Status(), c.nodes[6-a-to].Status())
			}
			if c.nodes[a].IsMaster() {
				return fmt.Errorf("seed %d: the old master %d counts itself master %d ticks after handing over", seed, a, k)
			}
			if ms := c.masters(); len(ms) == 1 {
				if ms[0] != to {
					t.Logf("seed %d: node %d, not the successor %d, took over", seed, ms[0], to)
				}
				took = k
				break
			}
			c.tick()
		}
		if took > 60 {
			t.Errorf("seed %d: master back only %d ticks after the cut (lease 40)", seed, took)
		}
		c.drop = nil
		for range 100 {
			c.tick()
		}
		for _, id := range c.ids {
			if got, want := c.nodes[id].Applied(), c.nodes[to].Applied(); got.LeaseHolder != want.LeaseHolder || got.NextIndex != want.NextIndex {
				t.Errorf("seed %d: node %d applied %+v, node %d %+v", seed, id, got, to, want)
			}
		}
	}
	return nil
}

// leaseCmd is a lease command for holder with the given compare-and-set
// version and incarnation.
func leaseCmd(holder, prev, epoch uint64) core.Value {
	return core.Value{Commands: []core.Command{{Kind: core.CmdLease, Holder: holder, Prev: prev, Epoch: epoch, Start: 5}}}
}

// Restarts around a handover, with unsynced writes lost. Node 1 was master
// at ballot b (its lease chosen in instance 0) and proposed the handover
// to node 2 in instance 1; then every node crashed at some point and
// restarts from what its disk kept:
//
//   - own-accept-lost: node 1 crashed after its Accepts left but before its
//     own accept of the handover was written; nodes 2 and 3 accepted it (it
//     is chosen). Node 1 comes back as the holder in its applied state and
//     runs phase 1 at once.
//   - apply-lost: node 1 applied the handover; node 2 applied it too but that
//     write was unsynced and lost: it comes back with the handover accepted
//     and node 1 as holder in its applied state (a guard for everyone).
//   - nobody-applied: the handover was accepted by all three and applied by
//     none before they crashed.
//   - two-accepted: only nodes 1 and 2 accepted the handover (chosen); node 3
//     did not, and guards nothing after its restart but node 1's applied lease.
//
// Each must elect one master, never two at once, keep the handover chosen in
// instance 1 on every node (it was chosen: a quorum accepted it), and end
// with every node agreeing on the holder.
func TestHandoverRestarts(t *testing.T) {
	b := idgen.Make(1, 0, idgen.DefaultK) // node 1's ballot
	const oldEpoch = 12345
	mine, handover := leaseCmd(1, 0, oldEpoch), leaseCmd(2, 1, oldEpoch)
	h := core.InstanceValue{Instance: 1, Ballot: b, Value: handover}
	before := core.ApplyState{Applied: 1, LeaseHolder: 1, LeaseVersion: 1}
	after := core.ApplyState{Applied: 2, LeaseHolder: 2, LeaseVersion: 2}
	chosen0 := map[uint64]core.Value{0: mine}
	chosen1 := map[uint64]core.Value{0: mine, 1: handover}
	for _, tc := range []struct {
		name    string
		durable map[uint64]instance.Durable
		chosen  map[uint64]map[uint64]core.Value
	}{
		{"own-accept-lost", map[uint64]instance.Durable{
			1: {Promised: b, State: before},
			2: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			3: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
		}, map[uint64]map[uint64]core.Value{1: chosen0, 2: chosen0, 3: chosen0}},
		{"apply-lost", map[uint64]instance.Durable{
			1: {Promised: b, State: after},
			2: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			3: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
		}, map[uint64]map[uint64]core.Value{1: chosen1, 2: chosen0, 3: chosen0}},
		{"nobody-applied", map[uint64]instance.Durable{
			1: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			2: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			3: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
		}, map[uint64]map[uint64]core.Value{1: chosen0, 2: chosen0, 3: chosen0}},
		{"two-accepted", map[uint64]instance.Durable{
			1: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			2: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			3: {Promised: b, State: before},
		}, map[uint64]map[uint64]core.Value{1: chosen0, 2: chosen0, 3: chosen0}},
	} {
		for seed := uint64(1); seed <= 5; seed++ {
			c := restoredCluster(t, seed, instance.BugNone, tc.durable, tc.chosen)
			m := c.elect() // cluster.tick fails on two masters at once
			for range 100 {
				c.tick()
			}
			for _, id := range c.ids {
				v, ok := c.stores[id].chosen[1]
				if hv, _ := lease1(v); !ok || hv != 2 {
					t.Errorf("%s seed %d: node %d has %v in instance 1, want the chosen handover to node 2", tc.name, seed, id, v)
				}
				if got := c.nodes[id].Applied().LeaseHolder; got != m {
					t.Errorf("%s seed %d: node %d applied holder %d, master is %d", tc.name, seed, id, got, m)
				}
			}
			t.Logf("%s seed %d: master %d at tick %d", tc.name, seed, m, c.nodes[1].Now()-100)
		}
	}
}

// A crash that leaves the handover accepted by all and applied by none
// ("nobody-applied" above) should cost what the doc promises, the lease
// the successor was handed: the restarted acceptors guard everyone for one
// lease, then the successor takes over. The old master, still the holder
// in its applied state, runs phase 1 at once, wins it and re-proposes the
// handover. It once proposed, in the same breath, a lease of its own with
// the lease version from before the handover applies: that lease failed
// its compare-and-set, yet every acceptor that accepted it guarded the old
// master for another lease, so the successor was refused until then, two
// leases without a master instead of one. A master now waits for the
// foreign leases it re-proposed to apply (lease.View.Due).
func TestHandoverCrashCostsOneLease(t *testing.T) {
	b := idgen.Make(1, 0, idgen.DefaultK)
	mine, handover := leaseCmd(1, 0, 12345), leaseCmd(2, 1, 12345)
	h := core.InstanceValue{Instance: 1, Ballot: b, Value: handover}
	before := core.ApplyState{Applied: 1, LeaseHolder: 1, LeaseVersion: 1}
	chosen0 := map[uint64]core.Value{0: mine}
	const lease, bound = 40, 40 + 10 + 5 // the restarted guards, jitter, a phase
	for seed := uint64(1); seed <= 5; seed++ {
		c := restoredCluster(t, seed, instance.BugNone, map[uint64]instance.Durable{
			1: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			2: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
			3: {Promised: b, State: before, Accepted: []core.InstanceValue{h}},
		}, map[uint64]map[uint64]core.Value{1: chosen0, 2: chosen0, 3: chosen0})
		var failed []string
		c.watch = func(m core.Message) {
			if hv, ok := lease1(m.Value); ok && m.Type == core.MsgAccept && m.To == 3 && hv == m.From && m.Instance > 1 && len(failed) == 0 {
				failed = append(failed, fmt.Sprintf("node %d proposed its own lease in instance %d at tick %d, above the re-proposed handover, with Prev %d", m.From, m.Instance, c.nodes[1].Now(), m.Value.Commands[0].Prev))
			}
		}
		m := c.elect()
		if now := c.nodes[1].Now(); now > bound {
			t.Errorf("seed %d: master %d only at tick %d after the restart (lease %d, bound %d); %v", seed, m, now, lease, bound, failed)
		}
	}
}

// Commits now go out after a step-down, carrying the ballot each instance
// was chosen at, so an acceptor may get a Commit of an old ballot after it
// accepted something else in that instance at a newer one (a value the
// old ballot never chose: the Commit is for a value chosen elsewhere, or
// the acceptor is told of a neighbouring instance in the same range). It
// may learn only the value it accepted at exactly that ballot: here node 3
// holds instance 0 at ballot b2 (a lease for node 2) and instance 1 at b1
// (node 1's append); a Commit(b1, [0, 2)) must not make it learn its b2
// value in instance 0 (nor, with instance 0 unknown, apply instance 1).
// Then a Commit(b2, [0, 1)) teaches it instance 0, and instance 1 (held at
// b1, chosen at b1) applies after it from the earlier Commit.
func TestStaleBallotCommit(t *testing.T) {
	b1 := idgen.Make(1, 0, idgen.DefaultK)
	b2 := idgen.Make(2, 1, idgen.DefaultK)
	app := core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: data("x"), Origin: 1, Req: 1}}}
	// Node 3 accepted node 1's append in instance 1 at b1, then node 2's
	// lease in instance 0 at b2 (node 2's phase 1 did not hear from it).
	n, err := instance.New(config(3, 1, &store{}, instance.BugNone), instance.Durable{Promised: b2, Accepted: []core.InstanceValue{
		{Instance: 0, Ballot: b2, Value: leaseValue(2)}, {Instance: 1, Ballot: b1, Value: app},
	}})
	if err != nil {
		t.Fatal(err)
	}
	step := func(m core.Message) {
		t.Helper()
		if err := n.Step(m); err != nil {
			t.Fatal(err)
		}
		for n.HasReady() {
			n.Ready()
			n.Advance()
		}
	}
	step(core.Message{Type: core.MsgCommit, From: 1, To: 3, Ballot: b1, Instance: 0, End: 2})
	if got := n.Applied(); got.Applied != 0 {
		t.Fatalf("after Commit(b1, [0,2)) node 3 applied %+v; it holds instance 0 only at b2", got)
	}
	step(core.Message{Type: core.MsgCommit, From: 2, To: 3, Ballot: b2, Instance: 0, End: 1})
	if got := n.Applied(); got.Applied != 2 || got.LeaseHolder != 2 || got.NextIndex != 1 {
		t.Fatalf("after Commit(b2, [0,1)) node 3 applied %+v, want instances 0 (node 2's lease) and 1 (one entry)", got)
	}
}

// restart replaces node id with a new incarnation restored from its store.
func (c *cluster) restart(id, seed uint64) {
	c.t.Helper()
	s := c.stores[id]
	d := instance.Durable{Promised: s.promised, State: s.state}
	for i, a := range s.accepted {
		if i >= s.state.Applied {
			d.Accepted = append(d.Accepted, a)
		}
	}
	n, err := instance.New(config(id, seed+100, s, instance.BugNone), d)
	if err != nil {
		c.t.Fatal(err)
	}
	c.nodes[id] = n
}

// A handover to a voter that crashed while more than MaxAhead instances
// were chosen and has just restarted. TransferMaster takes any voter named
// explicitly, caught up or not. The successor refuses the handover's
// Accept (beyond its window), the other two choose it, the successor
// catches up and applies it. Its restarted acceptor guarded the old master
// (the holder in its applied state, a full lease from the restart: it
// accepted the handover nowhere), so it could not run phase 1 until that
// guard ran out: about a lease without a master, the outage the handover
// exists to avoid. A lease chosen above the guarded one now moves the
// guard when it applies (lease.Guard.Applied): the successor must be
// master within half a lease.
func TestTransferToVoterFarBehind(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		c := newCluster(t, seed, instance.BugNone)
		m := c.elect()
		var behind uint64
		for _, id := range c.ids {
			if id != m {
				behind = id
			}
		}
		c.down[behind] = true
		for k := range 80 {
			if err := c.nodes[m].Propose(instance.Proposal{Req: uint64(k + 1), Entries: data(fmt.Sprint(k))}); err != nil {
				t.Fatal(err)
			}
			c.await(m, k+1)
		}
		c.restart(behind, seed)
		c.down[behind] = false
		if got, err := c.nodes[m].TransferMaster(behind); err != nil || got != behind {
			t.Fatalf("TransferMaster(%d) = %d, %v", behind, got, err)
		}
		k := 0
		for ; len(c.masters()) == 0; k++ {
			if k > 3*40 {
				t.Fatalf("seed %d: no master %d ticks after handing over to node %d, behind: %+v", seed, k, behind, c.nodes[behind].Status())
			}
			c.tick()
		}
		if k > 20 {
			t.Errorf("seed %d: no master for %d ticks after handing over to node %d, restarted and behind (lease 40); master then %v", seed, k, behind, c.masters())
		}
	}
}

// Rolling restart: a voter restarts (caught up), then the master hands
// over to the best live voter, which may be the one just restarted. Its
// restored guard names the old master for a full lease from the restart,
// but it accepts the handover (a higher ballot than the restored guard's),
// which moves the guard to itself: it takes over in a few ticks.
func TestTransferToJustRestartedVoter(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		c := newCluster(t, seed, instance.BugNone)
		m := c.elect()
		var to uint64
		for _, id := range c.ids {
			if id != m {
				to = id
			}
		}
		for range 20 {
			c.tick()
		}
		c.restart(to, seed)
		for range 3 {
			c.tick()
		}
		if got, err := c.nodes[m].TransferMaster(to); err != nil || got != to {
			t.Fatalf("TransferMaster(%d) = %d, %v", to, got, err)
		}
		k := 0
		for ; !c.nodes[to].IsMaster(); k++ {
			if k > 20 {
				t.Fatalf("seed %d: node %d, restarted 3 ticks before the handover, not master %d ticks after it: %+v", seed, to, k, c.nodes[to].Status())
			}
			c.tick()
		}
	}
}

// TransferMaster called twice: right away, and while a renewal holds the
// handover back. Either way the master stopped serving at the first call,
// so the second is refused; exactly one handover is proposed, to the
// first target, and the cluster ends with that node as master.
func TestTransferMasterTwice(t *testing.T) {
	for _, deferred := range []bool{false, true} {
		c := newCluster(t, 8, instance.BugNone)
		m := c.elect()
		var others []uint64
		for _, id := range c.ids {
			if id != m {
				others = append(others, id)
			}
		}
		handovers := map[uint64]int{}
		c.watch = func(msg core.Message) {
			if h, ok := lease1(msg.Value); ok && msg.Type == core.MsgAccept && msg.From == m && msg.To == others[0] && h != m {
				handovers[h]++
			}
		}
		want := others[0]
		if deferred {
			holdRenewal(t, c, m)
		}
		if _, err := c.nodes[m].TransferMaster(others[0]); err != nil {
			t.Fatal(err)
		}
		_, err := c.nodes[m].TransferMaster(others[1])
		if err == nil {
			t.Errorf("deferred=%v: second TransferMaster: %v", deferred, err)
		}
		c.drop = nil
		for k := 0; !c.nodes[want].IsMaster(); k++ {
			if k > 60 {
				t.Fatalf("deferred=%v: node %d not master 60 ticks after the transfers: %+v", deferred, want, c.nodes[want].Status())
			}
			c.tick()
		}
		for range 60 {
			c.tick()
		}
		if len(handovers) != 1 || handovers[want] != 1 {
			t.Errorf("deferred=%v: handovers proposed %v (holder: Accepts to node %d), want exactly one to node %d", deferred, handovers, others[0], want)
		}
	}
}
