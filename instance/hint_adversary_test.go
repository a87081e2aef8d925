package instance_test

import (
	"fmt"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
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
