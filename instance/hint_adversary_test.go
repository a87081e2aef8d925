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
