package instance_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
)

// Adversary tests of the failure detector's hint (Node.PeerDown).

// isCatchupAnswer matches the answers to catch-up requests sent to id.
func isCatchupAnswer(m core.Message, id uint64) bool {
	return m.To == id && (m.Type == core.MsgLearnResp || m.Type == core.MsgSnapResp)
}

// stalledVoter elects a master m in a 3-node cluster and leaves voter b
// more than MaxAhead instances behind it, unable to learn (catch-up answers
// to it are lost: a link that loses large messages, say): b refuses the
// master's Accepts (beyond its window), so it accepts no lease and guards
// none, and stays behind for good. With alone, b hears only the master
// (its link to the third voter is cut).
func stalledVoter(t *testing.T, seed uint64, alone bool) (c *cluster, m, b uint64) {
	t.Helper()
	c = newCluster(t, seed, instance.BugNone)
	m = c.elect()
	b = m%3 + 1
	o := 6 - m - b
	c.drop = func(msg core.Message) bool { return msg.To == b || msg.From == b }
	for k := range 80 {
		if err := c.nodes[m].Propose(instance.Proposal{Req: uint64(k + 1), Entries: data(fmt.Sprint(k))}); err != nil {
			t.Fatalf("seed %d: proposal %d: %v", seed, k, err)
		}
		c.await(m, k+1)
	}
	c.drop = func(msg core.Message) bool {
		return isCatchupAnswer(msg, b) || alone && (msg.From == o && msg.To == b || msg.From == b && msg.To == o)
	}
	// Cut off, b ran phase 1 again and again and promised its own ballots:
	// its first refusal of an Accept deposes the master once (no report
	// needed, and nothing to do with them). Then a master works and keeps
	// b behind past Stall (70 ticks here), without applying anything: wait
	// for 150 such ticks in a row.
	stable := 0
	for k := 0; stable < 150; k++ {
		if k > 1000 {
			t.Fatalf("seed %d: no stable master with voter %d stalled behind it, without any report (scenario precondition)", seed, b)
		}
		c.tick()
		ms := c.masters()
		if len(ms) == 1 && ms[0] == m && c.nodes[b].Status().Behind {
			stable++
			continue
		}
		stable = 0
		if len(ms) == 1 {
			m = ms[0]
		}
	}
	if m == b || c.nodes[b].Applied().Applied+64 > c.nodes[m].Applied().Applied {
		t.Fatalf("seed %d: node %d is not stalled far behind master %d: %+v", seed, b, m, c.nodes[b].Status())
	}
	return c, m, b
}

// Attack (claim 2, and "does a behind node depose a working master again
// and again"): gossip that keeps saying the master is dead, to a voter that
// cannot learn from it. The report cleared the master as the working one
// (Catchup.masterAhead) and, with the master the only live peer ahead,
// made the voter not behind at once: the stalled voter ran phase 1, its
// own acceptor promised the higher ballot, refused the master's next
// Accept with it, and the master stepped down, once per report. Without
// the reports the same voter never runs (TestStallKeepsBehindALiveMaster).
// Elections never read the hint now: the voter stays behind and the master
// stays master.
func TestFalseReportsDoNotLetABehindVoterDeposeTheMaster(t *testing.T) {
	for _, alone := range []bool{false, true} {
		for seed := uint64(1); seed <= 3; seed++ {
			c, m, b := stalledVoter(t, seed, alone)
			prepares := 0
			c.watch = func(msg core.Message) {
				if msg.From == b && msg.Type == core.MsgPrepare {
					prepares++
				}
			}
			for k := range 300 {
				c.nodes[b].PeerDown(m) // false: m works
				c.tick()
				if ms := c.masters(); len(ms) != 1 || ms[0] != m || prepares > 0 {
					t.Fatalf("alone %v seed %d: %d ticks into false reports about master %d to stalled voter %d: masters %v, %d Prepares from %d",
						alone, seed, k+1, m, b, ms, prepares, b)
				}
			}
		}
	}
}

// Attack (a late answer to a request given up on a report, after a new
// request went to another peer): both answers arrive, and the late one is
// a refusal (the values are below the reported peer's base). Only the
// answer to the outstanding request ended it, but every refusal redirected
// the fetch: the late one turned it to the reported peer while the SnapReq
// to the live one was out, so that peer's chunk was ignored, the request
// waited out its Timeout and that peer, which had answered, was skipped
// for another; the next SnapReq went to the peer reported down. A refusal
// now starts a fetch only when it answers the outstanding request: the
// chunk of the peer asked is taken and its base installed at once.
func TestLateRefusalFromReportedPeerDoesNotRedirectFetch(t *testing.T) {
	l := newLone(t, config(1, 1, &store{}, instance.BugNone), instance.Durable{})
	l.n.Tick()
	l.flush()
	l.out = nil
	l.step(core.Message{Type: core.MsgProbeResp, From: 2, Committed: 100})
	l.step(core.Message{Type: core.MsgProbeResp, From: 3, Committed: 100})
	first := l.take(2, core.MsgLearnReq)
	if len(first) != 1 {
		t.Fatalf("no learn request to 2: %v", l.out)
	}
	l.n.PeerDown(2) // false, or late: its answer is on the way
	l.n.Tick()
	l.flush()
	second := l.take(3, core.MsgLearnReq)
	if len(second) != 1 {
		t.Fatalf("no learn request to 3 after 2 was reported down: %v", l.out)
	}
	refuse := func(from uint64, req core.Message) core.Message {
		return core.Message{Type: core.MsgLearnResp, From: from, Committed: 100, Instance: req.Instance, End: 50, After: req.After, Reject: true}
	}
	l.step(refuse(3, second[0]))
	snap := l.take(3, core.MsgSnapReq)
	if len(snap) != 1 {
		t.Fatalf("no SnapReq to 3 after its refusal: %v", l.out)
	}
	l.step(refuse(2, first[0])) // the late answer to the request given up
	base := core.SnapChunk{State: core.ApplyState{Applied: 50}, Done: true}
	l.step(core.Message{Type: core.MsgSnapResp, From: 3, Committed: 100, Instance: snap[0].Instance, End: snap[0].End, After: snap[0].After, Snap: &base})
	if got := l.n.Applied().Applied; got != 50 {
		t.Fatalf("applied %d after 3's base arrived whole, want 50: the late refusal from 2 redirected the fetch (requests now: %v)", got, l.out)
	}
}

// Attack (TransferMaster when the hints say every voter is down): the
// master has no live successor, says so, and keeps serving (no handover
// to a voter it has no news of); the next message from a voter withdraws
// the report and the handover goes to it. A regression guard: it fails if
// TransferMaster(0) fell back on a voter not live, or if a report outlived
// the peer's next message.
func TestTransferWhenReportsSayAllDown(t *testing.T) {
	c := newCluster(t, 4, instance.BugNone)
	m := c.elect()
	for range 30 {
		c.tick()
	}
	for _, id := range c.ids {
		c.nodes[m].PeerDown(id) // itself included: ignored
	}
	if to, err := c.nodes[m].TransferMaster(0); !errors.Is(err, instance.ErrNoSuccessor) {
		t.Fatalf("TransferMaster(0) with every other voter reported down = %d, %v; want ErrNoSuccessor", to, err)
	}
	if !c.nodes[m].IsMaster() {
		t.Fatal("the master stopped serving after a refused handover")
	}
	if err := c.nodes[m].Propose(instance.Proposal{Req: 1, Entries: data("x")}); err != nil {
		t.Fatal(err)
	}
	if r := c.await(m, 1); r[0].Err != nil {
		t.Fatalf("append after the refused handover: %+v", r[0])
	}
	// The append's Accepted replies were the voters' next messages.
	to, err := c.nodes[m].TransferMaster(0)
	if err != nil || to == m || to == 0 {
		t.Fatalf("TransferMaster(0) after the voters spoke again = %d, %v", to, err)
	}
}

// Attack (reports during a membership change's live-quorum and
// promote-liveness checks): a report only subtracts, so the master refuses
// a change that needs the reported voter (or promotes the reported
// follower) until that peer's next message, and then takes it. A
// regression guard: it fails if a report outlived the peer's next message
// (the change would be refused for good) or if the checks ignored it.
func TestChangeChecksReadReportsUntilNextMessage(t *testing.T) {
	c := newMCluster(t, 2, 4)
	m := c.elect()
	x, y := m%3+1, (m+1)%3+1
	c.change(m, 1, members.Change{Kind: members.AddFollower, ID: 4, Addr: "n4", Incarnation: 40}, 1, 2, 3, 4)
	for k := 0; k < 20 && !c.caughtUp(m, 4); k++ {
		c.tick(4)
	}
	if !c.caughtUp(m, 4) {
		t.Fatal("scenario: follower 4 did not catch up")
	}
	// Removing y leaves {m, x}: x must be live.
	c.nodes[m].PeerDown(x)
	if err := c.nodes[m].ProposeChange(2, members.Change{Kind: members.Remove, ID: y}); !errors.Is(err, members.ErrNoQuorum) {
		t.Fatalf("removing %d with %d reported down: %v, want ErrNoQuorum", y, x, err)
	}
	c.nodes[m].PeerDown(4)
	if err := c.nodes[m].ProposeChange(3, members.Change{Kind: members.Promote, ID: 4}); !errors.Is(err, members.ErrBehind) {
		t.Fatalf("promoting 4 reported down: %v, want ErrBehind", err)
	}
	// Their next messages (a probe, a Follow) withdraw the reports.
	for k := 0; !c.caughtUp(m, x) || !c.caughtUp(m, 4); k++ {
		if k > 20 {
			t.Fatalf("nodes %d and 4 not live at the master 20 ticks after the reports: %+v", x, c.nodes[m].Status().Peers)
		}
		c.tick()
	}
	c.change(m, 4, members.Change{Kind: members.Promote, ID: 4}, m, x, 4)
	c.change(m, 5, members.Change{Kind: members.Remove, ID: y}, m, x, 4)
}

// Attack (reports about the only source in a tight loop, "does a node ever
// stop catching up"): each request is given up on a report before its
// answer arrives, and the peer's next message lets the next request out.
// The late answers still carry chosen values, and learning a chosen value
// is safe from any answer: the node catches up all the same. A regression
// guard: it fails if late answers were dropped whole (the request number
// matters for flow control only).
func TestCatchupProgressesUnderReportEachRoundTrip(t *testing.T) {
	l := newLone(t, config(1, 1, &store{}, instance.BugNone), instance.Durable{})
	const n = 100
	vals := noops(n)
	l.step(core.Message{Type: core.MsgProbeResp, From: 2, Committed: n})
	for k := 0; l.n.Applied().Applied < n; k++ {
		if k > 3*n {
			t.Fatalf("applied %d of %d after %d requests, each given up on a report", l.n.Applied().Applied, n, k)
		}
		reqs := l.take(2, core.MsgLearnReq)
		for w := 0; len(reqs) == 0 && w < 10; w++ { // a small lag waits Grace
			l.n.Tick()
			l.flush()
			reqs = l.take(2, core.MsgLearnReq)
		}
		l.out = nil
		if len(reqs) != 1 {
			t.Fatalf("round %d: %d learn requests to 2 (applied %d)", k, len(reqs), l.n.Applied().Applied)
		}
		l.n.PeerDown(2)
		from := reqs[0].Instance
		to := min(from+7, n) // a small batch (CatchupBytes)
		var ents []core.InstanceValue
		for i := from; i < to; i++ {
			ents = append(ents, core.InstanceValue{Instance: i, Value: vals[i]})
		}
		l.step(core.Message{Type: core.MsgLearnResp, From: 2, Committed: n, Instance: from, End: reqs[0].End, After: reqs[0].After, Entries: ents})
		l.step(core.Message{Type: core.MsgProbeResp, From: 2, Committed: n}) // its next message
	}
}
