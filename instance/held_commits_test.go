package instance_test

import (
	"fmt"
	"testing"

	"github.com/paxosd/paxosd/instance"
)

// A handover's lease is the last instance the old master chooses: no
// Accept of its follows to carry the held commit notice. The successor
// must still learn it within a tick (Tick sets commitsDue, whatever the
// node's role now), not after a catch-up's grace. Fails when the tick
// does not send held notices (planted).
func TestHeldCommitOfAHandoverGoesWithinATick(t *testing.T) {
	c := newCluster(t, 5, instance.BugNone)
	m := c.elect()
	for range 20 {
		c.tick()
	}
	to, err := c.nodes[m].TransferMaster(0)
	if err != nil {
		t.Fatal(err)
	}
	c.drain()
	if h := c.nodes[m].Applied().LeaseHolder; h != to {
		t.Fatalf("old master applied lease holder %d, want the handover to %d chosen without a tick", h, to)
	}
	if c.nodes[m].IsMaster() {
		t.Fatalf("node %d still master after its handover applied", m)
	}
	c.tick()
	if h := c.nodes[to].Applied().LeaseHolder; h != to {
		t.Fatalf("a tick after the handover was chosen, successor %d has applied lease holder %d: the held commit did not go", to, h)
	}
	for range 3 * 5 { // a few phase timeouts of config()
		if c.nodes[to].IsMaster() {
			return
		}
		c.tick()
	}
	t.Fatalf("successor %d not master 15 ticks after the handover", to)
}

// Without any tick, appends one at a time: each commit notice rides with
// the next append's Accept, so the other voters lag by exactly the last
// append: the notices held never pile up while proposals go on. Fails
// when held notices wait for the tick alone (planted).
func TestHeldCommitsStayBoundedWithoutTicks(t *testing.T) {
	c := newCluster(t, 6, instance.BugNone)
	m := c.elect()
	for range 20 {
		c.tick()
	}
	const n = 200
	for k := range n {
		if err := c.nodes[m].Propose(instance.Proposal{Req: uint64(k + 1), Entries: data(fmt.Sprint(k))}); err != nil {
			t.Fatal(err)
		}
		c.drain()
		for _, id := range c.ids {
			if id == m {
				continue
			}
			if got := len(c.stores[id].entries); got != k {
				t.Fatalf("after append %d without a tick, node %d applied %d entries, want %d (all but the last)", k, id, got, k)
			}
		}
	}
}
