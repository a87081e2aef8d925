package instance_test

import (
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// A master that can send but not receive (as in TestDeafMasterStallsCluster),
// under a light, steady client load: while it still counts its lease it
// places one append every few ticks, so its window holds many instances
// proposed at staggered ticks. Each is resent on its own backoff timer
// (PhaseTimeout, then 2x and 4x, 4x, ...), so an Accept of the deaf master
// reaches nodes 2 and 3 at least every few ticks, for ever. When a resent
// Accept held the acceptor's election off (yielding) as a first one does,
// nobody ever started a phase 1: the connected quorum {2, 3} never elected
// a master. Only a first acceptance makes a node yield.
func TestDeafMasterWithStaggeredWindowKeepsAllYielding(t *testing.T) {
	c := tunedCluster(t, 3, instance.BugNone, nil, nil, func(cfg *instance.Config) {
		cfg.LeaseTicks, cfg.LeaseMargin = 100, 20
		cfg.Window, cfg.MaxAhead = 16, 64
		// PhaseTimeout 5, ElectionJitter 10, as everywhere in these tests.
	})
	m := c.elect()
	c.drain()
	// Deaf: nothing reaches m; its Commits are lost too (it learns nothing
	// is chosen, so it sends none anyway).
	c.drop = func(msg core.Message) bool { return msg.To == m || msg.From == m && msg.Type == core.MsgCommit }
	req := uint64(100)
	for k := 0; k < 3000; k++ {
		if k%4 == 0 && c.nodes[m].IsMaster() {
			req++
			_ = c.nodes[m].Propose(instance.Proposal{Req: req, Entries: data("light load")})
		}
		c.tick()
		for _, id := range c.ids {
			if id != m && c.nodes[id].IsMaster() {
				t.Logf("node %d master %d ticks after master %d went deaf", id, k, m)
				return
			}
		}
	}
	var el []uint64
	for _, id := range c.ids {
		el = append(el, c.nodes[id].Status().Counters.Elections)
	}
	t.Fatalf("no master among the connected quorum 3000 ticks after master %d went deaf (%d appends placed; phase 1s started per node %v; deaf master resent %d Accepts)",
		m, req-100, el, c.nodes[m].Status().Counters.AcceptsResent)
}

// The same with the production timings (DefaultConfig: lease 300, margin 75,
// PhaseTimeout 20, jitter 30, window 32): a client appending every 150 ms.
func TestDeafMasterWithStaggeredWindowDefaults(t *testing.T) {
	c := tunedCluster(t, 3, instance.BugNone, nil, nil, func(cfg *instance.Config) {
		d := instance.DefaultConfig()
		cfg.LeaseTicks, cfg.LeaseMargin = d.LeaseTicks, d.LeaseMargin
		cfg.PhaseTimeout, cfg.ElectionJitter = d.PhaseTimeout, d.ElectionJitter
		cfg.Window, cfg.MaxAhead = d.Window, d.MaxAhead
	})
	m := c.elect()
	c.drain()
	c.drop = func(msg core.Message) bool { return msg.To == m || msg.From == m && msg.Type == core.MsgCommit }
	req := uint64(100)
	for k := 0; k < 20000; k++ {
		if k%15 == 0 && c.nodes[m].IsMaster() {
			req++
			_ = c.nodes[m].Propose(instance.Proposal{Req: req, Entries: data("light load")})
		}
		c.tick()
		for _, id := range c.ids {
			if id != m && c.nodes[id].IsMaster() {
				t.Logf("node %d master %d ticks after master %d went deaf", id, k, m)
				return
			}
		}
	}
	t.Fatalf("no master among the connected quorum 20000 ticks (200 s) after master %d went deaf (%d appends placed)", m, req-100)
}

// A handover's successor accepted the handover (an Accept of the old
// master's ballot). It holds the lease, so it runs phase 1 at once rather
// than yield for PhaseTimeout: nobody else may run (the acceptors guard
// it), and the cluster would have no master for that long. With
// PhaseTimeout 20 and ElectionJitter 30 (the defaults) it is master within
// 5 ticks.
func TestHandoverSuccessorYieldsToOldMaster(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		c := tunedCluster(t, seed, instance.BugNone, nil, nil, func(cfg *instance.Config) {
			cfg.PhaseTimeout, cfg.ElectionJitter = 20, 30
		})
		m := c.elect()
		for range 30 {
			c.tick()
		}
		to, err := c.nodes[m].TransferMaster(0)
		if err != nil {
			t.Fatal(err)
		}
		ticks := 0
		for ; !c.nodes[to].IsMaster() && ticks < 200; ticks++ {
			c.tick()
		}
		t.Logf("seed %d: node %d master %d ticks after the handover", seed, to, ticks)
		if ticks > 5 {
			t.Errorf("seed %d: the successor took %d ticks (PhaseTimeout 20): it yielded to the master that handed over", seed, ticks)
		}
	}
}
