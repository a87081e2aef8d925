package instance_test

import (
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/proposer"
)

// defaultTiming gives a test cluster the default protocol timing (10 ms
// ticks): PhaseTimeout 200 ms, ElectionJitter 300 ms, a 3 s lease.
func defaultTiming(cfg *instance.Config) {
	def := instance.DefaultConfig()
	cfg.PhaseTimeout, cfg.ElectionJitter, cfg.LeaseTicks, cfg.LeaseMargin = def.PhaseTimeout, def.ElectionJitter, def.LeaseTicks, def.LeaseMargin
}

// TestSlowDiskElectsMaster: with every persist taking 0.6 s or 1.5 s (the
// CI disks synced in 0.7-2.5 s behind large values), a 3-node cluster
// still elects a master, within 25 s. A phase 1 waits for two syncs in
// series (the proposer's own promise, then an acceptor's): with the
// doubling capped at 8 x PhaseTimeout (1.6 s) no phase 1 completed once
// syncs took over 0.8 s, and no master came in 300 s. Below that, a node
// that promised yielded only PhaseTimeout from the Prepare, less than its
// own sync of the promise, then outbid the phase it had promised: 12 to
// 64 s to a master with syncs of 0.6 s.
func TestSlowDiskElectsMaster(t *testing.T) {
	for _, sync := range []uint64{60, 150} {
		for seed := uint64(1); seed <= 3; seed++ {
			c := tunedCluster(t, seed, instance.BugNone, nil, nil, defaultTiming)
			c.syncTicks = sync
			for c.ticks < 2500 && len(c.masters()) == 0 {
				c.tick()
			}
			if len(c.masters()) == 0 {
				var elections, timeouts uint64
				for _, n := range c.nodes {
					elections += n.Status().Counters.Elections
					timeouts += n.Status().Counters.PhaseTimeouts
				}
				t.Errorf("syncs of %d ticks, seed %d: no master after %d ticks (%d phase 1s started, %d abandoned for want of promises)",
					sync, seed, c.ticks, elections, timeouts)
			}
		}
	}
}

// TestOthersLeaseResetsPhase1Backoff: a node whose phase 1s timed out while
// it was cut off (its wait grew to 32 x PhaseTimeout) starts over at
// PhaseTimeout once another node's lease is chosen: its next phase 1, when
// that master is gone, is abandoned after PhaseTimeout. Without the reset
// the count stayed for good on a node that never leads, and so did its
// long wait, and its yield to others after every Accept.
func TestOthersLeaseResetsPhase1Backoff(t *testing.T) {
	c := newCluster(t, 7, instance.BugNone)
	cut := func(m core.Message) bool { return m.From == 3 || m.To == 3 }
	c.drop = cut
	m := c.elect()
	if m == 3 {
		t.Fatal("the cut-off node became master")
	}
	n := c.nodes[3]
	for n.Status().Counters.PhaseTimeouts < 8 {
		c.tick()
	}
	c.drop = nil
	for range 2000 {
		c.tick()
		ms := c.masters()
		if phase, _, _ := n.Campaign(); len(ms) == 1 && ms[0] != 3 && n.Applied().LeaseHolder == ms[0] && phase == proposer.Idle {
			m = ms[0]
			break // 3 applied another master's lease, and no phase 1 of its own is open
		}
	}
	if phase, _, _ := n.Campaign(); n.Applied().LeaseHolder != m || phase != proposer.Idle {
		t.Fatalf("node 3 never settled under another master: holder %d, masters %v, phase %v", n.Applied().LeaseHolder, c.masters(), phase)
	}
	// Cut 3 off again: once m's lease runs out by its clock it campaigns,
	// and nothing answers.
	c.drop = cut
	started := n.Status().Counters.Elections
	for n.Status().Counters.Elections == started {
		c.tick()
	}
	from := n.Now()
	for n.Status().Counters.PhaseTimeouts < n.Status().Counters.Elections {
		c.tick()
	}
	if took := n.Now() - from; took > 5 {
		t.Errorf("node 3's first phase 1 after master %d's lease was abandoned after %d ticks, want PhaseTimeout (5)", m, took)
	}
}
