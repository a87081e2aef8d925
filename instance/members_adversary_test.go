package instance_test

import (
	"strings"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
)

// Adversary tests of membership changes in the core (members.History in
// the applied state, CmdMember commands, instance.reconfigure).

// changeValue is a value holding one membership change.
func changeValue(ch members.Change) core.Value {
	return core.Value{Commands: []core.Command{{Kind: core.CmdMember, Change: ch}}}
}

func noopValue() core.Value { return core.Value{Commands: []core.Command{{Kind: core.CmdNoop}}} }

// lone is a node driven by hand: the test plays every peer.
type lone struct {
	t   *testing.T
	n   *instance.Node
	out []core.Message
}

func newLone(t *testing.T, cfg instance.Config, d instance.Durable) *lone {
	t.Helper()
	n, err := instance.New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	return &lone{t: t, n: n}
}

func (l *lone) flush() {
	for l.n.HasReady() {
		rd := l.n.Ready()
		l.n.Advance()
		l.out = append(l.out, rd.Messages...)
		l.out = append(l.out, rd.After...)
	}
}

func (l *lone) step(m core.Message) {
	l.t.Helper()
	m.To = l.n.ID()
	if err := l.n.Step(m); err != nil {
		l.t.Fatal(err)
	}
	l.flush()
}

// learn feeds chosen values from instance from on, one per LearnResp from
// peer (as catch-up or a master's push would), and checks they applied.
func (l *lone) learn(peer, from uint64, vals ...core.Value) {
	l.t.Helper()
	for k, v := range vals {
		l.step(core.Message{Type: core.MsgLearnResp, From: peer, Entries: []core.InstanceValue{{Instance: from + uint64(k), Value: v}}})
	}
	if got, want := l.n.Applied().Applied, from+uint64(len(vals)); got != want {
		l.t.Fatalf("node %d applied %d instances, want %d", l.n.ID(), got, want)
	}
}

// take returns and forgets the messages sent to peer of type typ.
func (l *lone) take(peer uint64, typ core.MsgType) []core.Message {
	var got, rest []core.Message
	for _, m := range l.out {
		if m.To == peer && m.Type == typ {
			got = append(got, m)
		} else {
			rest = append(rest, m)
		}
	}
	l.out = rest
	return got
}

func noops(n int) []core.Value {
	out := make([]core.Value, n)
	for i := range out {
		out[i] = noopValue()
	}
	return out
}

// Attack (rule "a change chosen in instance i decides from i + MaxAhead"):
// Delay is each node's own MaxAhead, a local memory knob that nothing
// requires to be equal across nodes (Config says MaxAhead "bounds memory";
// Validate only wants it at least 2*Window). Two replicas that apply the
// same chosen log then disagree on the first instance a change decides:
// the membership, part of the replicated state, diverges, and so do the
// quorums each node counts. A rolling restart that raises MaxAhead on one
// node is enough.
func TestChangeDelayIsTheSameOnEveryReplica(t *testing.T) {
	var hist []members.History
	for _, maxAhead := range []uint64{64, 128} {
		cfg := config(3, 1, &store{}, instance.BugNone)
		cfg.MaxAhead = maxAhead
		l := newLone(t, cfg, instance.Durable{})
		l.learn(2, 0, changeValue(members.Change{Kind: members.AddFollower, ID: 4, Addr: "n4", Incarnation: 44}))
		hist = append(hist, l.n.Applied().Members)
	}
	a, _ := hist[0].Pending()
	b, _ := hist[1].Pending()
	if a != b {
		t.Fatalf("the same log applied with MaxAhead 64 and 128: the change decides from instance %d on one replica and %d on the other", a, b)
	}
}

// Attack (mayVote): a node that joined a running cluster votes only where
// the configuration names its incarnation. Config.Incarnation defaults to
// 0 and Validate accepts Joined with incarnation 0; mayVote then matches
// the 0 that every member the cluster was created with carries, so a
// fresh, empty directory that joined with the ID of an original member
// (a wiped member coming back, as the operator is told to do) votes as
// that member from instance 0 on, with none of its promises or accepts:
// chosen values can be forgotten.
func TestJoinedNodeWithoutIncarnationDoesNotVote(t *testing.T) {
	cfg := config(3, 1, &store{}, instance.BugNone)
	cfg.Joined = true // a fresh directory, added later; Incarnation left 0
	n, err := instance.New(cfg, instance.Durable{})
	if err != nil {
		return // refused at Validate: fine
	}
	l := &lone{t: t, n: n}
	l.step(core.Message{Type: core.MsgPrepare, From: 1, Ballot: idgen.Make(1, 0, cfg.K), Instance: 0})
	if p := l.take(1, core.MsgPromise); len(p) > 0 {
		t.Fatalf("a joined node with incarnation 0 answered a Prepare as original member 3 (reject=%v): its empty acceptor votes", p[0].Reject)
	}
}

// Attack (lease guard across changes): instance.New says "every node
// keeps the guard, voter or not: a follower promoted to voter guards the
// leases it applied". It does not: lease.Guard.Applied only moves a guard
// that already guards someone, and a follower never accepted a lease, so
// its guard is empty. The promoted voter promises any Prepare while the
// lease it applied a tick ago runs. With one change that is harmless (a
// phase 1 quorum of the new voters still meets the quorum that accepted
// the lease); see TestTwoChangesInOneLeaseLeaveNoGuard for two.
func TestPromotedFollowerGuardsAppliedLease(t *testing.T) {
	cfg := config(4, 1, &store{}, instance.BugNone)
	cfg.Joined, cfg.Incarnation = true, 44
	l := newLone(t, cfg, instance.Durable{})
	vals := []core.Value{
		leaseValue(1), // node 1's lease, instance 0
		changeValue(members.Change{Kind: members.AddFollower, ID: 4, Addr: "n4", Incarnation: 44}), // instance 1
	}
	vals = append(vals, noops(instance.ChangeDelay-1)...)                          // to instance ChangeDelay
	vals = append(vals, changeValue(members.Change{Kind: members.Promote, ID: 4})) // the next: 4 votes from now
	l.learn(2, 0, vals...)
	if st := l.n.Applied(); st.LeaseHolder != 1 || l.n.Status().Role != "acceptor" {
		t.Fatalf("setup: lease holder %d, role %s; want node 1's lease and node 4 voting", st.LeaseHolder, l.n.Status().Role)
	}
	if l.n.Master() != 1 {
		t.Fatalf("setup: node 4 does not count node 1's lease (master %d)", l.n.Master())
	}
	l.step(core.Message{Type: core.MsgPrepare, From: 2, Ballot: idgen.Make(5, 1, cfg.K), Instance: l.n.Applied().Applied})
	p := l.take(2, core.MsgPromise)
	if len(p) != 1 {
		t.Fatalf("no Promise to node 2: %v", l.out)
	}
	if !p[0].Reject {
		t.Fatal("promoted voter 4 promised node 2's Prepare while node 1's lease, which it applied this tick, runs: it keeps no guard")
	}
}

// Attack (decode): a state from disk or a peer's base whose membership
// names this node a voter with a slot the stride does not have panics in
// New (idgen.NewGenerator) instead of being refused.
func TestStateWithSlotBeyondStrideIsRefused(t *testing.T) {
	cfg := config(3, 1, &store{}, instance.BugNone)
	c := members.Config{NextSlot: cfg.K + 1, Members: []members.Member{
		{ID: 1, Role: members.Voter, Slot: 0}, {ID: 2, Role: members.Voter, Slot: 1}, {ID: 3, Role: members.Voter, Slot: cfg.K},
	}}
	d := instance.Durable{State: core.ApplyState{Applied: 10, Members: members.NewHistory(c, 0)}}
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("New panicked on a membership with slot %d (K=%d): %v", cfg.K, cfg.K, r)
		}
	}()
	if _, err := instance.New(cfg, d); err == nil || !strings.Contains(err.Error(), "slot") {
		t.Fatalf("New accepted a membership with a slot beyond K: err %v", err)
	}
}

// mcluster is a cluster of any node IDs, each with its own config, on a
// synchronous network the test can cut (drop) and with clocks the test
// can advance one node at a time.
type mcluster struct {
	t       *testing.T
	ids     []uint64
	nodes   map[uint64]*instance.Node
	stores  map[uint64]*store
	queue   []core.Message
	results map[uint64][]instance.Result
	drop    func(core.Message) bool
}

// newMCluster starts a cluster created with voters 1, 2, 3, plus the nodes
// in joined, which join it later (Joined, incarnation 10*id).
func newMCluster(t *testing.T, seed uint64, joined ...uint64) *mcluster {
	return newMClusterOf(t, seed, 3, joined...)
}

// newMClusterOf starts a cluster created with voters 1..voters, plus the
// nodes in joined.
func newMClusterOf(t *testing.T, seed uint64, voters uint64, joined ...uint64) *mcluster {
	t.Helper()
	c := &mcluster{t: t, nodes: map[uint64]*instance.Node{}, stores: map[uint64]*store{}, results: map[uint64][]instance.Result{}}
	var genesis []instance.Member
	var ids []uint64
	for id := uint64(1); id <= voters; id++ {
		genesis = append(genesis, instance.Member{ID: id, Slot: id - 1})
		ids = append(ids, id)
	}
	for _, id := range append(ids, joined...) {
		s := &store{accepted: map[uint64]core.InstanceValue{}, chosen: map[uint64]core.Value{}}
		cfg := config(id, seed, s, instance.BugNone)
		cfg.Members = genesis
		if id > voters {
			cfg.Joined, cfg.Incarnation = true, 10*id
		}
		n, err := instance.New(cfg, instance.Durable{})
		if err != nil {
			t.Fatal(err)
		}
		c.ids = append(c.ids, id)
		c.nodes[id], c.stores[id] = n, s
	}
	return c
}

func (c *mcluster) handle(id uint64, rd instance.Ready) {
	c.queue = append(c.queue, rd.Messages...)
	s := c.stores[id]
	if rd.Promised != 0 {
		s.promised = rd.Promised
	}
	for _, a := range rd.Accepted {
		s.accepted[a.Instance] = a
	}
	for _, ch := range rd.Chosen {
		s.chosen[ch.Instance] = ch.Value
	}
	if rd.State != nil {
		s.state = *rd.State
	}
	c.queue = append(c.queue, rd.After...)
	c.results[id] = append(c.results[id], rd.Results...)
}

func (c *mcluster) drain() {
	for range 100000 {
		busy := false
		for _, id := range c.ids {
			if n := c.nodes[id]; n.HasReady() {
				c.handle(id, n.Ready())
				n.Advance()
				busy = true
			}
		}
		msgs := c.queue
		c.queue = nil
		for _, m := range msgs {
			if c.drop != nil && c.drop(m) {
				continue
			}
			if err := c.nodes[m.To].Step(m); err != nil {
				c.t.Fatalf("Step(%v): %v", m, err)
			}
			busy = true
		}
		if !busy {
			return
		}
	}
	c.t.Fatal("cluster never went quiet")
}

// tick advances the clocks of ids (every node when none is named).
func (c *mcluster) tick(ids ...uint64) {
	if len(ids) == 0 {
		ids = c.ids
	}
	for _, id := range ids {
		c.nodes[id].Tick()
	}
	c.drain()
	for _, id := range c.ids {
		if err := c.nodes[id].Check(); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *mcluster) masters() []uint64 {
	var out []uint64
	for _, id := range c.ids {
		if c.nodes[id].IsMaster() {
			out = append(out, id)
		}
	}
	return out
}

func (c *mcluster) elect() uint64 {
	c.t.Helper()
	for range 500 {
		c.tick()
		if m := c.masters(); len(m) == 1 {
			return m[0]
		}
	}
	c.t.Fatal("no master after 500 ticks")
	return 0
}

// change has master m propose ch and ticks until every node in waitFor
// applied past the first instance it decides.
func (c *mcluster) change(m, req uint64, ch members.Change, waitFor ...uint64) {
	c.t.Helper()
	if !c.tryChange(m, req, ch, waitFor...) {
		c.t.Fatalf("%s: not in effect after 100 ticks", ch)
	}
}

// tryChange is change, reporting false when the change is not in effect
// after 100 ticks (or the master is no longer master to propose it).
func (c *mcluster) tryChange(m, req uint64, ch members.Change, waitFor ...uint64) bool {
	c.t.Helper()
	if !c.nodes[m].IsMaster() {
		return false
	}
	if err := c.nodes[m].ProposeChange(req, ch); err != nil {
		c.t.Fatalf("ProposeChange(%s): %v", ch, err)
	}
	var from uint64
	for k := 0; ; k++ {
		if k > 100 {
			return false
		}
		c.drain()
		for _, r := range c.results[m] {
			if r.Req == req {
				if r.Err != nil {
					c.t.Fatalf("%s: %v", ch, r.Err)
				}
				from = r.First
			}
		}
		if from != 0 {
			break
		}
		c.tick(m)
	}
	for k := 0; ; k++ {
		done := true
		for _, id := range waitFor {
			if c.nodes[id].Applied().Applied < from {
				done = false
			}
		}
		if done {
			return true
		}
		if k > 100 {
			return false
		}
		c.tick(m)
	}
}

// caughtUp reports whether m knows peer's frontier to be its own.
func (c *mcluster) caughtUp(m, peer uint64) bool {
	for _, p := range c.nodes[m].Status().Peers {
		if p.ID == peer {
			return p.Live && p.Applied >= c.nodes[m].Applied().Applied
		}
	}
	return false
}

// Attack (question 2: two voter changes inside one lease). §5's guard
// invariant: the lease was accepted by a quorum Q, every acceptor of Q
// guards the holder, every phase 1 quorum meets Q. With changes, Q is a
// quorum of the configuration deciding the lease's instance, and a
// phase 1 quorum two changes later need not meet it: C0 = {m, 2, r}
// chose m's lease through {m, r} (node 2 missed it); r is removed, 4 added
// and promoted: C2 = {m, 2, 4}, and {2, 4} is a quorum of it. Neither
// guards m: node 2 never accepted a lease, and node 4 never accepted one
// (a follower), and lease.Guard.Applied leaves an empty guard empty,
// although instance.New says a promoted follower guards the leases it
// applied. A candidate that does not count m's lease (here node 4, whose
// clock ran ahead) completes phase 1 through {2, 4} and becomes master
// while m still is, by m's clock. With one configuration the same fast
// clock gets nothing: both acceptors of Q refuse it.
func TestTwoChangesInOneLeaseLeaveNoGuard(t *testing.T) {
	var c *mcluster
	var m, r uint64
	for seed := uint64(1); ; seed++ {
		if seed > 20 {
			t.Fatal("scenario: node 2 was master for 20 seeds")
		}
		c = newMCluster(t, seed, 4)
		// Node 2 never accepts a lease: it missed every one of them.
		c.drop = func(msg core.Message) bool { return isLeaseAccept(2)(msg) }
		if m = c.elect(); m != 2 {
			break
		}
	}
	r = 1
	if m == 1 {
		r = 3
	}
	start := c.nodes[m].Now()
	c.change(m, 1, members.Change{Kind: members.AddFollower, ID: 4, Addr: "n4", Incarnation: 40}, 1, 2, 3, 4)
	if !c.tryChange(m, 2, members.Change{Kind: members.Remove, ID: r}, m, 2, 4) {
		t.Logf("the removal of %d did not take effect with node 2 missing every lease: the attack needs it", r)
		return
	}
	// Node 4 reports its frontier (its Follow, once a learn interval).
	for k := 0; k < 20 && !c.caughtUp(m, 4); k++ {
		c.tick(4)
	}
	if !c.tryChange(m, 3, members.Change{Kind: members.Promote, ID: 4}, m, 2, 4) {
		t.Logf("the promotion of 4 did not take effect with node 2 missing every lease: the attack needs it")
		return
	}
	if v := c.nodes[4].Status().Members.Cur.Voters(); len(v) != 3 || !c.nodes[m].IsMaster() {
		t.Fatalf("scenario: voters %v, node %d master %v, %d ticks after its lease", v, m, c.nodes[m].IsMaster(), c.nodes[m].Now()-start)
	}
	// m is cut off from now on (it would step down on seeing a higher
	// ballot); node 4's clock runs ahead until it runs phase 1.
	c.drop = func(msg core.Message) bool { return msg.To == m || msg.From == m }
	for k := 0; k < 200; k++ {
		c.tick(4)
		if c.nodes[4].IsMaster() {
			break
		}
	}
	if c.nodes[4].IsMaster() && c.nodes[m].IsMaster() {
		t.Fatalf("nodes %d and 4 are both master: node 4 completed phase 1 through node 2 and itself (a quorum of {%d, 2, 4}) while node %d's lease runs by its clock (%d ticks old); neither guards it",
			m, m, m, c.nodes[m].Now()-start)
	}
}

// The control for TestTwoChangesInOneLeaseLeaveNoGuard: without changes,
// the node that missed every lease (2) with its clock running just as far
// ahead gets no quorum while the holder's lease runs: r accepted the lease
// and guards it.
func TestFastClockWithoutChangesGetsNoQuorum(t *testing.T) {
	var c *mcluster
	var m uint64
	for seed := uint64(1); ; seed++ {
		if seed > 20 {
			t.Fatal("scenario: node 2 was master for 20 seeds")
		}
		c = newMCluster(t, seed)
		c.drop = func(msg core.Message) bool { return isLeaseAccept(2)(msg) }
		if m = c.elect(); m != 2 {
			break
		}
	}
	c.drop = func(msg core.Message) bool { return msg.To == m || msg.From == m }
	for k := 0; k < 200; k++ {
		c.tick(2)
		if c.nodes[2].IsMaster() {
			t.Fatalf("node 2 master after %d ticks of its own while node %d still is (%v)", k, m, c.nodes[m].IsMaster())
		}
	}
}

// The same as TestTwoChangesInOneLeaseLeaveNoGuard with two removals and
// no follower at all, so that giving a promoted follower a guard does not
// cover it: C0 = {1..5} chose m's lease through m and two others; those
// two are removed, one change at a time, both inside the lease. The two
// voters left besides m, which missed the lease, are a quorum of the
// three left and guard nothing.
func TestTwoRemovalsInOneLeaseLeaveNoGuard(t *testing.T) {
	var c *mcluster
	var m uint64
	for seed := uint64(1); ; seed++ {
		if seed > 40 {
			t.Fatal("scenario: node 4 or 5 was master for 40 seeds")
		}
		c = newMClusterOf(t, seed, 5)
		c.drop = func(msg core.Message) bool { return isLeaseAccept(4)(msg) || isLeaseAccept(5)(msg) }
		if m = c.elect(); m <= 3 {
			break
		}
	}
	var gone []uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != m {
			gone = append(gone, id)
		}
	}
	for k, x := range gone {
		if !c.tryChange(m, uint64(k+1), members.Change{Kind: members.Remove, ID: x}, m, 4, 5) {
			t.Logf("the removal of %d did not take effect with nodes 4 and 5 missing every lease: the attack needs it", x)
			return
		}
	}
	if v := c.nodes[4].Status().Members.Cur.Voters(); len(v) != 3 || !c.nodes[m].IsMaster() {
		t.Fatalf("scenario: voters %v, node %d master %v", v, m, c.nodes[m].IsMaster())
	}
	c.drop = func(msg core.Message) bool { return msg.To == m || msg.From == m }
	for k := 0; k < 200; k++ {
		c.tick(4)
		if c.nodes[4].IsMaster() {
			break
		}
	}
	if c.nodes[4].IsMaster() && c.nodes[m].IsMaster() {
		t.Fatalf("nodes %d and 4 are both master: node 4 completed phase 1 through {4, 5}, a quorum of {%d, 4, 5}, while node %d's lease runs by its clock; neither guards it",
			m, m, m)
	}
}

// Attack (question 7, the master removing itself): ProposeChange refuses
// to remove the master (ErrRemovingMaster: "hand the lease over first,
// then remove it through the new master"), but TransferMaster hands the
// lease to a voter whose removal is pending, and the new master is then
// removed while it holds the lease: once the removal decides the log, it
// stops voting, and every other voter waits out its lease before it may
// run phase 1: a lease and an election without a master, the outage the
// check exists to prevent. Either TransferMaster must refuse a voter the
// pending configuration drops, or a master must hand over before a
// pending change that drops it takes effect.
func TestTransferToVoterBeingRemoved(t *testing.T) {
	c := newMCluster(t, 1)
	m := c.elect()
	x := uint64(1)
	if m == 1 {
		x = 2
	}
	// Hold the fill: no-ops are not accepted, so the removal stays pending.
	c.drop = func(msg core.Message) bool {
		return msg.Type == core.MsgAccept && len(msg.Value.Commands) == 1 && msg.Value.Commands[0].Kind == core.CmdNoop
	}
	if err := c.nodes[m].ProposeChange(1, members.Change{Kind: members.Remove, ID: x}); err != nil {
		t.Fatal(err)
	}
	c.drain()
	if _, pending := c.nodes[m].Applied().Members.Pending(); !pending {
		t.Fatalf("scenario: the removal of %d is not pending at %d: %+v", x, m, c.nodes[m].Applied().Members)
	}
	if _, err := c.nodes[m].TransferMaster(x); err != nil {
		return // refused: fine
	}
	c.drop = nil
	gap, worst, sawX := 0, 0, false
	for range 200 {
		c.tick()
		sawX = sawX || c.nodes[x].IsMaster()
		if len(c.masters()) == 0 {
			gap++
			worst = max(worst, gap)
		} else {
			gap = 0
		}
	}
	if worst > 40/2 {
		t.Fatalf("no master for %d ticks in a row (lease 40) after handing over to node %d, whose removal was pending (master after the handover: %v)", worst, x, sawX)
	}
}

// Attack (size limits): Propose refuses a command over MaxCommandBytes,
// since a larger value could make messages no peer accepts (an Accept,
// and a Promise piece carries at least one whole value): stuck in flight,
// it stops the applied frontier for good. ProposeChange bounds nothing: a
// change's address is copied into every configuration, every ApplyState
// and base written from then on, and a large one makes an instance that
// never travels.
func TestProposeChangeBoundsItsSize(t *testing.T) {
	c := newMCluster(t, 1)
	m := c.elect()
	addr := strings.Repeat("a", instance.DefaultConfig().MaxCommandBytes+1)
	err := c.nodes[m].ProposeChange(1, members.Change{Kind: members.AddFollower, ID: 9, Addr: addr, Incarnation: 90})
	if err == nil {
		t.Fatalf("ProposeChange took an add-follower with a %d-byte address", len(addr))
	}
}

// Attack (question 7, a change that takes effect with no live quorum):
// ProposeChange counts a voter live when catchup.Frontier says so, and
// Frontier calls a peer live when now - heard <= Live, heard being 0 for
// a peer never heard from: for the first Live ticks after a node starts,
// every voter counts as live, dead ones included. A master elected soon
// after its restart (a restarted holder resumes at once) then passes a
// removal that leaves the live voters short of a quorum: here voters 4
// and 5 are down for good, 1, 2 and 3 make the quorum of five; removing 2
// leaves {1, 3, 4, 5}, whose quorum of three has only two live voters,
// and the cluster stops for good (no further change can be chosen).
func TestChangeCountsNeverHeardVotersLive(t *testing.T) {
	var c *mcluster
	var m uint64
	up := []uint64{1, 2, 3}
	for seed := uint64(1); ; seed++ {
		if seed > 20 {
			t.Fatal("scenario: no master within Live ticks of the start in 20 seeds")
		}
		c = newMClusterOf(t, seed, 5)
		c.drop = func(msg core.Message) bool { return msg.To > 3 || msg.From > 3 }
		for k := 0; k < 25 && len(c.masters()) == 0; k++ {
			c.tick(up...)
		}
		if ms := c.masters(); len(ms) == 1 {
			m = ms[0]
			break
		}
	}
	x := uint64(2)
	if m == 2 {
		x = 1
	}
	err := c.nodes[m].ProposeChange(1, members.Change{Kind: members.Remove, ID: x})
	if err == nil {
		t.Fatalf("node %d (tick %d) proposed to remove voter %d with voters 4 and 5 never heard from: the live voters left, two of {1, 2, 3} minus %d, are no quorum of four",
			m, c.nodes[m].Now(), x, x)
	}
}

// Question 1, a regression test (passes): a phase 1 started before a
// change applied must not complete on promises of the voter sets it was
// started for once it needs a majority of a new one. Node 1 sends its
// Prepares for C0 = {1, 2, 3}, then learns (catch-up) a removal of 3
// chosen in its first instance: it needs a majority of C0 and of
// C1 = {1, 2} from now on, steps down, and node 2's promise of the old
// ballot does not make it leading.
func TestPreparingProposerStepsDownForANewVoterSet(t *testing.T) {
	l := newLone(t, config(1, 1, &store{}, instance.BugNone), instance.Durable{})
	var p core.Message
	for k := 0; k < 200; k++ {
		l.n.Tick()
		l.flush()
		if ps := l.take(2, core.MsgPrepare); len(ps) > 0 {
			p = ps[0]
			break
		}
	}
	if p.Ballot == 0 {
		t.Fatal("node 1 never sent a Prepare")
	}
	l.learn(2, 0, changeValue(members.Change{Kind: members.AddFollower, ID: 4, Addr: "n4", Incarnation: 40}))
	if ph, b, _ := l.n.Campaign(); ph.String() != "preparing" || b != p.Ballot {
		t.Fatalf("an add-follower (voters unchanged) ended the phase 1: %s at %d", ph, b)
	}
	l.learn(2, 1, changeValue(members.Change{Kind: members.Remove, ID: 3}))
	l.step(core.Message{Type: core.MsgPromise, From: 2, Ballot: p.Ballot, Instance: p.Instance})
	if ph, b, _ := l.n.Campaign(); ph.String() == "leading" {
		t.Fatalf("node 1 leads at ballot %d (its phase 1 started at %d, before the removal) on the promises of 1 and 2", b, p.Ballot)
	}
}
