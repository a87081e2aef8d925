package instance_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// Faults outside the model that once stopped a cluster for good. Each
// scenario runs on today's core and with the bug that its fix removed
// planted: the first must recover, the second must not (so the scenario
// really reaches the fault).

// largeValues tunes a cluster whose window of large values makes a
// Promise far larger than the largest message: 8 values of about 1.9 KiB,
// a message bound of about 9 KiB.
func largeValues(c *instance.Config) {
	c.MaxBatchBytes, c.MaxCommandBytes = 2<<10, 2<<10
	c.CatchupBatch, c.CatchupBytes = 16, 4<<10
}

// msgSize is a message's encoded size, as the transport measures it.
func msgSize(m core.Message) int { return len(core.AppendMessage(nil, m)) }

// masterDiesWithLargeValues: the master has a full window of large values
// accepted by both other voters, none chosen yet, and dies for good. The
// network drops every message over the bound, as the transport does. The
// survivors must elect a master and choose every value.
func masterDiesWithLargeValues(t *testing.T, bug instance.Bug) error {
	c := tunedCluster(t, 7, bug, nil, nil, largeValues)
	var cfg instance.Config
	largeValues(&cfg)
	cfg.MaxAhead = 64 // as config() sets it
	limit := cfg.MaxMessageBytes()
	oversize := 0
	m := c.elect()
	c.drop = func(msg core.Message) bool {
		if msgSize(msg) > limit {
			oversize++
			return true
		}
		// In flight: the master hears no Accepted, so nothing is chosen.
		return msg.To == m && msg.Type == core.MsgAccepted
	}
	var want []string
	for k := range 8 {
		v := fmt.Sprintf("v%d-%s", k, strings.Repeat("x", 1900))
		want = append(want, v)
		if err := c.nodes[m].Propose(instance.Proposal{Req: uint64(100 + k), Entries: [][]byte{[]byte(v)}}); err != nil {
			t.Fatal(err)
		}
		c.drain() // one instance each
	}
	c.down[m] = true
	c.drop = func(msg core.Message) bool {
		if msgSize(msg) > limit {
			oversize++
			return true
		}
		return false
	}
	for range 1000 {
		c.tick()
		if len(c.masters()) == 1 {
			break
		}
	}
	if len(c.masters()) != 1 {
		return fmt.Errorf("no master 1000 ticks after the master died (%d messages over the %d-byte bound dropped)", oversize, limit)
	}
	for range 200 {
		c.tick()
	}
	for _, id := range c.ids {
		if id == m {
			continue
		}
		var got []string
		for _, e := range c.stores[id].entries {
			got = append(got, string(e.Data))
		}
		for _, v := range want {
			if !slices.Contains(got, v) {
				return fmt.Errorf("node %d lacks an accepted value %.4s... after the election", id, v)
			}
		}
	}
	if oversize > 0 {
		return fmt.Errorf("%d messages over the %d-byte bound were sent", oversize, limit)
	}
	return nil
}

// A Promise larger than the message bound once made every phase 1 fail for
// good; it now comes in pieces, each within the bound.
func TestMasterDiesWithLargeValuesInFlight(t *testing.T) {
	if err := masterDiesWithLargeValues(t, instance.BugNone); err != nil {
		t.Fatal(err)
	}
	err := masterDiesWithLargeValues(t, instance.BugUnboundedPromise)
	if err == nil {
		t.Fatal("with unbounded Promises the scenario recovered: it does not reach the fault")
	}
	t.Logf("planted %s: %v", instance.BugUnboundedPromise, err)
}

// masterDiesAfterAnnouncingApply: the master's Commit for an instance is
// lost, its Accept for the next one (which says it applied the first) is
// not, and it dies for good. Nobody alive can teach the survivors the
// first instance; phase 1 is how they recover it.
func masterDiesAfterAnnouncingApply(t *testing.T, bug instance.Bug) error {
	c := tunedCluster(t, 3, bug, nil, nil, func(*instance.Config) {})
	m := c.elect()
	c.drop = func(msg core.Message) bool { return msg.From == m && msg.Type == core.MsgCommit }
	if err := c.nodes[m].Propose(instance.Proposal{Req: 1, Entries: data("acked")}); err != nil {
		t.Fatal(err)
	}
	c.drain()
	res := c.results[m]
	if len(res) != 1 || res[0].Err != nil {
		t.Fatalf("the first append was not acknowledged: %v", res)
	}
	acked := res[0].First
	if err := c.nodes[m].Propose(instance.Proposal{Req: 2, Entries: data("second")}); err != nil {
		t.Fatal(err)
	}
	c.drain()
	c.down[m] = true
	c.drop = nil
	for range 4000 {
		c.tick()
		if len(c.masters()) == 1 {
			break
		}
	}
	if len(c.masters()) != 1 {
		return fmt.Errorf("no master 4000 ticks after the master died")
	}
	for range 100 {
		c.tick()
	}
	for _, id := range c.ids {
		if id == m {
			continue
		}
		ents := c.stores[id].entries
		if uint64(len(ents)) <= acked || string(ents[acked].Data) != "acked" {
			return fmt.Errorf("node %d: the acknowledged append is not at index %d (log %v)", id, acked, ents)
		}
	}
	return nil
}

// Survivors once counted themselves behind the dead master forever and never
// ran the phase 1 that would recover what it had announced.
func TestMasterDiesAfterAnnouncingApply(t *testing.T) {
	if err := masterDiesAfterAnnouncingApply(t, instance.BugNone); err != nil {
		t.Fatal(err)
	}
	err := masterDiesAfterAnnouncingApply(t, instance.BugBehindDeadPeer)
	if err == nil {
		t.Fatal("with dead peers counted the scenario recovered: it does not reach the fault")
	}
	t.Logf("planted %s: %v", instance.BugBehindDeadPeer, err)
}

// leaseValue is a lease command for holder.
func leaseValue(holder uint64) core.Value {
	return core.Value{Commands: []core.Command{{Kind: core.CmdLease, Holder: holder}}}
}

// promiseTo steps m into n and returns its Promise to m.From.
func promiseTo(t *testing.T, n *instance.Node, m core.Message) core.Message {
	t.Helper()
	if err := n.Step(m); err != nil {
		t.Fatal(err)
	}
	for n.HasReady() {
		rd := n.Ready()
		n.Advance()
		for _, r := range append(rd.Messages, rd.After...) {
			if r.Type == core.MsgPromise && r.To == m.From {
				return r
			}
		}
	}
	t.Fatalf("no Promise to %d", m.From)
	return core.Message{}
}

// The stale re-proposal with a lost reply: node 1, the master, re-proposed
// a stale lease for node 2 in instance 2 and its own in instance 3 (both at
// its ballot). Node 3 accepted 3; the reply for 2 was lost and node 1's
// resent Accept(2) reached node 3 after it. The old lease may not move node
// 3's guard to node 2 — or node 2 completes phase 1 through node 3 while
// node 1's lease still runs. After a restart the same rule holds.
func TestStaleLeaseKeepsGuard(t *testing.T) {
	b1 := idgen.Make(1, 0, idgen.DefaultK) // node 1's ballot
	b2 := idgen.Make(2, 1, idgen.DefaultK) // node 2's, higher
	accept := func(i, holder uint64) core.Message {
		return core.Message{Type: core.MsgAccept, From: 1, To: 3, Ballot: b1, Instance: i, Value: leaseValue(holder)}
	}
	prepare := core.Message{Type: core.MsgPrepare, From: 2, To: 3, Ballot: b2}
	for _, bug := range []instance.Bug{instance.BugNone, instance.BugGuardOldLease} {
		n, err := instance.New(config(3, 1, &store{}, bug), instance.Durable{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []core.Message{accept(3, 1), accept(2, 2)} {
			if err := n.Step(m); err != nil {
				t.Fatal(err)
			}
		}
		p := promiseTo(t, n, prepare)
		if p.Reject != (bug == instance.BugNone) {
			t.Errorf("bug %s: node 2's Prepare answered reject=%v while node 1's lease (instance 3) is guarded", bug, p.Reject)
		}
	}
	// After a restart, from the accepted records in any order.
	d := instance.Durable{Promised: b1, Accepted: []core.InstanceValue{
		{Instance: 3, Ballot: b1, Value: leaseValue(1)}, {Instance: 2, Ballot: b1, Value: leaseValue(2)},
	}}
	n, err := instance.New(config(3, 1, &store{}, instance.BugNone), d)
	if err != nil {
		t.Fatal(err)
	}
	if p := promiseTo(t, n, prepare); !p.Reject {
		t.Error("restarted: node 2's Prepare promised while node 1's lease (instance 3) is guarded")
	}
}

// CommandBytesFor bounds the encoded command of any append of that many
// bytes of entry data, however it is cut into entries (the length prefixes
// are the overhead), with every field at its largest.
func TestCommandBytesFor(t *testing.T) {
	const appendBytes = 1 << 16
	for _, entry := range []int{1, 2, 127, 128, 129, 16383, 16384, appendBytes} {
		var entries [][]byte
		for left := appendBytes; left > 0; left -= entry {
			entries = append(entries, make([]byte, min(entry, left)))
		}
		c := core.Command{Kind: core.CmdUser, Entries: entries, ClientID: ^uint64(0), Seq: ^uint64(0), Origin: ^uint64(0),
			Req: ^uint64(0), Epoch: ^uint64(0), Expect: ^uint64(0)}
		if c.Size() > instance.CommandBytesFor(appendBytes) {
			t.Errorf("entries of %d bytes: a command of %d bytes, over CommandBytesFor = %d", entry, c.Size(), instance.CommandBytesFor(appendBytes))
		}
	}
}

// A lease of an older ballot can sit in a higher instance than a newer
// master's lease: node 1 (ballot b1) had its lease accepted in instance 5
// before node 2's phase 1 (ballot b2), which did not see it, and node 2
// proposed its own lease in instance 4. The guard follows the higher
// ballot, node 2's: ordered by instance alone (as it once was) it stayed
// with node 1, whose Prepare was then promised while node 2's lease ran
// (simulator seeds 391 of 3 nodes and 736 of 5). After a restart the
// same rule holds.
func TestNewerBallotLeaseKeepsGuard(t *testing.T) {
	b1 := idgen.Make(1, 0, idgen.DefaultK)
	b2 := idgen.Make(2, 1, idgen.DefaultK)
	b3 := idgen.Make(3, 0, idgen.DefaultK) // node 1's next ballot
	prepare := core.Message{Type: core.MsgPrepare, From: 1, To: 3, Ballot: b3}
	n, err := instance.New(config(3, 1, &store{}, instance.BugNone), instance.Durable{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []core.Message{
		{Type: core.MsgAccept, From: 1, To: 3, Ballot: b1, Instance: 5, Value: leaseValue(1)},
		{Type: core.MsgAccept, From: 2, To: 3, Ballot: b2, Instance: 4, Value: leaseValue(2)},
	} {
		if err := n.Step(m); err != nil {
			t.Fatal(err)
		}
	}
	if p := promiseTo(t, n, prepare); !p.Reject {
		t.Error("node 1's Prepare promised while node 2's lease (ballot b2, instance 4) is guarded")
	}
	d := instance.Durable{Promised: b2, Accepted: []core.InstanceValue{
		{Instance: 4, Ballot: b2, Value: leaseValue(2)}, {Instance: 5, Ballot: b1, Value: leaseValue(1)},
	}}
	if n, err = instance.New(config(3, 1, &store{}, instance.BugNone), d); err != nil {
		t.Fatal(err)
	}
	if p := promiseTo(t, n, prepare); !p.Reject {
		t.Error("restarted: node 1's Prepare promised while node 2's lease (ballot b2, instance 4) is guarded")
	}
}

// loneNode drives node 1 of three by hand: the test plays nodes 2 and 3.
type loneNode struct {
	t   *testing.T
	n   *instance.Node
	out []core.Message // messages node 1 sent, not yet looked at
}

func (l *loneNode) flush() {
	for l.n.HasReady() {
		rd := l.n.Ready()
		l.n.Advance()
		l.out = append(l.out, rd.Messages...)
		l.out = append(l.out, rd.After...)
	}
}

func (l *loneNode) step(m core.Message) {
	l.t.Helper()
	m.To = 1
	if err := l.n.Step(m); err != nil {
		l.t.Fatal(err)
	}
	l.flush()
}

// await ticks until node 1 sends a message that match accepts, and returns it.
func (l *loneNode) await(what string, match func(core.Message) bool) core.Message {
	l.t.Helper()
	for range 1000 {
		for k, m := range l.out {
			if match(m) {
				l.out = l.out[k+1:]
				return m
			}
		}
		l.out = nil
		l.n.Tick()
		l.flush()
	}
	l.t.Fatalf("node 1 never sent %s", what)
	return core.Message{}
}

// reproposedForeignLease: node 1 is master (its lease chosen in instance
// 0), proposes a renewal in instance 1 and is outbid there. Its next phase
// 1 learns from node 2 of a lease for node 3 accepted in instance 2 (before
// node 1's first phase 1, which did not see it) and re-proposes it at its
// new ballot: a higher ballot than node 1's lease, so the acceptors that
// accept it guard node 3, which may then complete phase 1. From then on
// node 1 must not count its own lease, not even when its renewal in
// instance 1, below the foreign lease, applies; only its lease above it
// does. It returns the first moment node 1 counted itself master wrongly.
func reproposedForeignLease(t *testing.T, bug instance.Bug) error {
	n, err := instance.New(config(1, 1, &store{}, bug), instance.Durable{})
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
	if !n.IsMaster() || a.Instance != 0 {
		t.Fatalf("node 1 is not master with its lease in instance 0 (lease in %d)", a.Instance)
	}
	renewal := l.await("a renewal", isTo2(core.MsgAccept))
	high := idgen.Make(5, 1, idgen.DefaultK)
	l.step(core.Message{Type: core.MsgAccepted, From: 2, Ballot: renewal.Ballot, Instance: renewal.Instance, Reject: true, Promised: high})
	p = l.await("a second Prepare", isTo2(core.MsgPrepare))
	foreign := core.InstanceValue{Instance: renewal.Instance + 1, Ballot: idgen.Make(1, 2, idgen.DefaultK), Value: leaseValue(3)}
	l.step(core.Message{Type: core.MsgPromise, From: 2, Ballot: p.Ballot, Instance: p.Instance, Entries: []core.InstanceValue{foreign}})
	if n.IsMaster() {
		return fmt.Errorf("master as soon as its phase 1 re-proposed node 3's lease")
	}
	var mine core.Message
	for _, want := range []uint64{renewal.Instance, foreign.Instance, foreign.Instance + 1} {
		a := l.await(fmt.Sprintf("an Accept for instance %d", want), func(m core.Message) bool {
			return m.Type == core.MsgAccept && m.To == 2 && m.Instance == want
		})
		if want == foreign.Instance+1 {
			mine = a
			break
		}
		l.step(core.Message{Type: core.MsgAccepted, From: 2, Ballot: a.Ballot, Instance: a.Instance})
		if n.IsMaster() {
			return fmt.Errorf("master after instance %d applied, below node 3's re-proposed lease", want)
		}
	}
	if len(mine.Value.Commands) != 1 || mine.Value.Commands[0].Kind != core.CmdLease || mine.Value.Commands[0].Holder != 1 {
		t.Fatalf("instance %d holds %v, want node 1's new lease", mine.Instance, mine.Value)
	}
	// Its lease above node 3's (proposed with the lease version before the
	// renewal applied, so it may fail the version check and be proposed
	// again) makes it master.
	for a := mine; !n.IsMaster(); a = l.await("another lease", isTo2(core.MsgAccept)) {
		if a.Instance > foreign.Instance+3 {
			t.Fatalf("not master after its own leases above node 3's applied (instance %d)", a.Instance)
		}
		l.step(core.Message{Type: core.MsgAccepted, From: 2, Ballot: a.Ballot, Instance: a.Instance})
	}
	return nil
}

func TestReproposedForeignLease(t *testing.T) {
	if err := reproposedForeignLease(t, instance.BugNone); err != nil {
		t.Fatal(err)
	}
	err := reproposedForeignLease(t, instance.BugReproposedLease)
	if err == nil {
		t.Fatal("with the bug planted node 1 never counted its lease wrongly: the scenario does not reach the fault")
	}
	t.Logf("planted %s: %v", instance.BugReproposedLease, err)
}

// A node that promised another proposer's ballot does not start a phase 1
// of its own until that proposer has been silent for PhaseTimeout: it would
// only outbid a phase 1 in progress (one over a window of large values
// takes longer than the election jitter), and the two would outbid each
// other in turn.
func TestYieldToProposerInProgress(t *testing.T) {
	c := tunedCluster(t, 3, instance.BugNone, nil, nil, func(cfg *instance.Config) {
		cfg.PhaseTimeout, cfg.ElectionJitter = 40, 5
	})
	n := c.nodes[3]
	ballot := idgen.Make(5, 1, idgen.DefaultK) // node 2's (slot 1), above any node 3 has seen
	if err := n.Step(core.Message{Type: core.MsgPrepare, From: 2, To: 3, Ballot: ballot}); err != nil {
		t.Fatal(err)
	}
	n.Advance()
	ticks := 0
	for ; n.Status().Counters.Elections == 0 && ticks < 200; ticks++ {
		n.Tick()
		if n.HasReady() {
			n.Ready()
			n.Advance()
		}
	}
	// Without yielding, node 3 starts within ElectionJitter (5) ticks.
	if ticks < 40 {
		t.Fatalf("node 3 started a phase 1 %d ticks after promising node 2's ballot, within PhaseTimeout (40)", ticks)
	}
	if ticks > 40+5+1 {
		t.Fatalf("node 3 started no phase 1 within PhaseTimeout and the jitter after node 2 fell silent (%d ticks)", ticks)
	}
}

// The master renews its lease, the other voters accept the renewal, the
// master hears none of it and dies for good. The survivor that runs phase 1
// must re-propose the renewal. It counts that lease from when its own
// acceptor accepted it, not from when the re-proposal applies (which gave
// the dead master a second lease), and waits what is left of it out as the
// leader it already is, rather than stepping down and running phase 1
// again.
func TestDeadMastersRenewalCostsOneLease(t *testing.T) {
	c := newCluster(t, 11, instance.BugNone)
	m := c.elect()
	renewing := false
	c.watch = func(msg core.Message) {
		if msg.From == m && msg.Type == core.MsgAccept && msg.To != m {
			for _, cmd := range msg.Value.Commands {
				renewing = renewing || cmd.Kind == core.CmdLease && cmd.Holder == m
			}
		}
	}
	c.drop = func(msg core.Message) bool { return renewing && msg.To == m }
	for range 200 {
		if renewing {
			break
		}
		c.tick()
	}
	if !renewing {
		t.Fatal("the master proposed no renewal in 200 ticks")
	}
	c.down[m], c.drop, c.watch = true, nil, nil
	elections := func() (n uint64) {
		for _, id := range c.ids {
			if id != m {
				n += c.nodes[id].Status().Counters.Elections
			}
		}
		return n
	}
	before, killed := elections(), c.nodes[1].Now()
	for range 1000 {
		c.tick()
		if len(c.masters()) == 1 {
			break
		}
	}
	if len(c.masters()) != 1 {
		t.Fatal("no master 1000 ticks after the master died")
	}
	// Stepping down for the re-proposed renewal ran a second phase 1.
	if got := elections() - before; got != 1 {
		t.Fatalf("%d phase 1s between the kill and a new master, want 1", got)
	}
	// One lease (40), the jitter (10) and a few round trips; counted from
	// the re-proposal's apply, the renewal held the survivors up for 87.
	took := c.nodes[1].Now() - killed
	if took > 40+10+10 {
		t.Fatalf("a master %d ticks after the kill: the re-proposed renewal cost a second lease (40 ticks)", took)
	}
	t.Logf("node %d master %d ticks after the kill (lease 40)", c.masters()[0], took)
}
