package instance_test

import (
	"errors"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// The master hands its lease over: it stops serving at once, and the
// successor is master a few ticks later, long before a lease would have
// run out; appends go on there.
func TestTransferMaster(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		c := newCluster(t, seed, instance.BugNone)
		m := c.elect()
		for range 30 {
			c.tick()
		}
		if err := c.nodes[m].Propose(instance.Proposal{Req: 1, Entries: data("before")}); err != nil {
			t.Fatal(err)
		}
		c.await(m, 1)
		to, err := c.nodes[m].TransferMaster(0)
		if err != nil {
			t.Fatalf("seed %d: TransferMaster: %v", seed, err)
		}
		if to == m || to == 0 {
			t.Fatalf("seed %d: successor %d", seed, to)
		}
		if c.nodes[m].IsMaster() {
			t.Fatalf("seed %d: node %d still master after handing over", seed, m)
		}
		ticks := 0
		for ; !c.nodes[to].IsMaster(); ticks++ {
			if ticks > 10 {
				t.Fatalf("seed %d: node %d not master 10 ticks after the handover (lease %d ticks): %+v %+v", seed, to, 40, c.nodes[to].Status(), c.nodes[m].Status())
			}
			c.drain()
			if c.nodes[to].IsMaster() {
				break
			}
			c.tick()
		}
		if got := c.nodes[m].Master(); got != to {
			t.Errorf("seed %d: the old master believes in %d, want %d", seed, got, to)
		}
		if err := c.nodes[to].Propose(instance.Proposal{Req: 2, Entries: data("after")}); err != nil {
			t.Fatal(err)
		}
		if r := c.await(to, 1); r[0].Err != nil || r[0].First != 1 {
			t.Fatalf("seed %d: append at the new master: %+v", seed, r[0])
		}
	}
}

// A handover to a voter that is down costs what a dead master costs: the
// others elect a master once the lease it was handed runs out.
func TestTransferToDeadVoter(t *testing.T) {
	c := newCluster(t, 3, instance.BugNone)
	m := c.elect()
	var dead uint64
	for _, id := range c.ids {
		if id != m {
			dead = id
			break
		}
	}
	c.down[dead] = true
	if _, err := c.nodes[m].TransferMaster(dead); err != nil {
		t.Fatal(err)
	}
	for range 300 {
		c.tick()
		if ms := c.masters(); len(ms) == 1 {
			return
		}
	}
	t.Fatalf("no master 300 ticks after handing the lease to node %d, down", dead)
}

func TestTransferMasterErrors(t *testing.T) {
	c := newCluster(t, 2, instance.BugNone)
	m := c.elect()
	for _, id := range c.ids {
		if id == m {
			continue
		}
		var nm *core.NotMasterError
		if _, err := c.nodes[id].TransferMaster(0); !errors.As(err, &nm) {
			t.Errorf("node %d, not master: %v, want NotMasterError", id, err)
		}
	}
	if _, err := c.nodes[m].TransferMaster(9); err == nil {
		t.Errorf("TransferMaster(9) on master %d: no error", m)
	}
	if to, err := c.nodes[m].TransferMaster(m); err != nil || to != m {
		t.Errorf("TransferMaster to the master itself: %d, %v; want a no-op", to, err)
	}
	if !c.nodes[m].IsMaster() {
		t.Fatal("a refused transfer stopped the master")
	}
	// A cluster of one voter has nobody to hand over to.
	cfg := config(1, 1, &store{}, instance.BugNone)
	cfg.Members = []instance.Member{{ID: 1, Slot: 0}}
	one, err := instance.New(cfg, instance.Durable{})
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		one.Tick()
		for one.HasReady() {
			one.Ready()
			one.Advance()
		}
		if one.IsMaster() {
			break
		}
	}
	if !one.IsMaster() {
		t.Fatal("a cluster of one voter elected nobody")
	}
	if _, err := one.TransferMaster(0); !errors.Is(err, instance.ErrNoSuccessor) {
		t.Errorf("one voter: %v, want ErrNoSuccessor", err)
	}
}

// A master that hands its lease over must stop serving at once, not when
// the handover applies: the acceptors that accept the handover guard the
// successor, which may complete phase 1 through them before the old master
// hears that the handover was chosen, when it believes the old lease ran
// out (it was cut off from the old master and missed its renewals). With
// the bug planted, the old master still counts its lease right after the
// handover leaves.
func TestHandoverStopsServingAtOnce(t *testing.T) {
	for _, bug := range []instance.Bug{instance.BugNone, instance.BugHandoverKeepsLease} {
		c := newCluster(t, 4, bug)
		m := c.elect()
		if _, err := c.nodes[m].TransferMaster(0); err != nil {
			t.Fatal(err)
		}
		if got, want := c.nodes[m].IsMaster(), bug != instance.BugNone; got != want {
			t.Errorf("bug %s: master right after handing over = %v, want %v", bug, got, want)
		}
	}
}
