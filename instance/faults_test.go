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
