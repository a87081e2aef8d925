package instance_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
)

// withJoiner adds node 4 to a three-voter cluster as a node that joined: it
// runs, mirrors nothing yet, and votes nowhere until the configuration
// names its incarnation.
func withJoiner(t *testing.T, seed uint64) *cluster {
	t.Helper()
	c := newCluster(t, seed, instance.BugNone)
	s := &store{accepted: map[uint64]core.InstanceValue{}, chosen: map[uint64]core.Value{}}
	cfg := config(4, seed, s, instance.BugNone)
	cfg.Incarnation, cfg.Joined = 44, true
	n, err := instance.New(cfg, instance.Durable{})
	if err != nil {
		t.Fatal(err)
	}
	c.ids = append(c.ids, 4)
	c.nodes[4], c.stores[4] = n, s
	return c
}

// change proposes ch at the master and waits for its result.
func (c *cluster) change(m uint64, req uint64, ch members.Change) instance.Result {
	c.t.Helper()
	if err := c.nodes[m].ProposeChange(req, ch); err != nil {
		c.t.Fatalf("ProposeChange(%s): %v", ch, err)
	}
	for range 300 {
		for _, r := range c.results[m] {
			if r.Req == req {
				return r
			}
		}
		c.tick()
	}
	c.t.Fatalf("no result for %s", ch)
	return instance.Result{}
}

// settle ticks until the pending change took effect on every node up.
func (c *cluster) settle() {
	c.t.Helper()
	for range 500 {
		done := true
		for _, id := range c.ids {
			if _, pending := c.nodes[id].Applied().Members.Pending(); pending && !c.down[id] {
				done = false
			}
		}
		if done {
			return
		}
		c.tick()
	}
	c.t.Fatal("the change never took effect")
}

// A node that joined is added as a follower, promoted, and then votes: two
// of the first voters down, it makes the quorum with the third. A removed
// voter stops voting, and a change needs a live quorum of its result.
func TestGrowThenShrink(t *testing.T) {
	c := withJoiner(t, 7)
	m := c.elect()
	if st := c.nodes[4].Status(); st.Role != "follower" || st.Promised != 0 {
		t.Fatalf("a joiner before it is added: %+v", st)
	}
	r := c.change(m, 1, members.Change{Kind: members.AddFollower, ID: 4, Addr: "a4", Incarnation: 44})
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if from := r.First; from < c.nodes[m].Applied().Applied || from > c.nodes[m].Applied().Applied+instance.ChangeDelay {
		t.Fatalf("the change decides from %d; applied is %d, the delay %d", from, c.nodes[m].Applied().Applied, instance.ChangeDelay)
	}
	c.settle()
	// Promotion waits until the follower is known to have caught up: the
	// no-ops that made the change take effect put it far behind, as the
	// master last heard it.
	if err := c.nodes[m].ProposeChange(2, members.Change{Kind: members.Promote, ID: 4}); !errors.Is(err, members.ErrBehind) {
		t.Fatalf("promoting a follower last heard far behind: %v", err)
	}
	for range 30 { // three learn intervals: it reports again
		c.tick()
	}
	if r := c.change(m, 2, members.Change{Kind: members.Promote, ID: 4}); r.Err != nil {
		t.Fatal(r.Err)
	}
	c.settle()
	for _, id := range c.ids {
		if vs := c.nodes[id].Applied().Members.Cur.Voters(); !slices.Equal(vs, []uint64{1, 2, 3, 4}) {
			t.Fatalf("node %d: voters %v", id, vs)
		}
	}
	if st := c.nodes[4].Status(); st.Role == "follower" {
		t.Fatalf("node 4 promoted but still a follower: %+v", st)
	}
	// Four voters: a quorum is three. With two of the first three down,
	// nothing is chosen; the change refuses to drop below a live quorum.
	var others []uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != m {
			others = append(others, id)
		}
	}
	if err := c.nodes[m].ProposeChange(3, members.Change{Kind: members.Remove, ID: m}); !errors.Is(err, instance.ErrRemovingMaster) {
		t.Fatalf("the master removing itself: %v", err)
	}
	// Remove a voter that went down: three voters stay, all live.
	c.down[others[0]] = true
	if r := c.change(m, 4, members.Change{Kind: members.Remove, ID: others[0]}); r.Err != nil {
		t.Fatal(r.Err)
	}
	c.settle()
	if vs := c.nodes[m].Applied().Members.Cur.Voters(); len(vs) != 3 || slices.Contains(vs, others[0]) {
		t.Fatalf("voters after the removal: %v", vs)
	}
	if st := c.nodes[others[0]].Status(); st.Role == "removed" {
		t.Fatalf("a node down cannot know it was removed: %+v", st)
	}
	// Another voter goes down: removing the live one left would leave one
	// live voter of two.
	c.down[others[1]] = true
	for range 60 { // no longer heard from
		c.tick()
	}
	if err := c.nodes[m].ProposeChange(3, members.Change{Kind: members.Remove, ID: 4}); !errors.Is(err, members.ErrNoQuorum) {
		t.Fatalf("removing a live voter with another down: %v", err)
	}
	// Appends still commit, with node 4 in the quorum.
	if err := c.nodes[m].Propose(instance.Proposal{Req: 5, Entries: data("after")}); err != nil {
		t.Fatal(err)
	}
	if r := c.await(m, len(c.results[m])+1); r[len(r)-1].Err != nil {
		t.Fatal(r[len(r)-1].Err)
	}
}

// A second change proposed before the first applies is refused where it
// applies, on every replica alike, and changes nothing.
func TestSecondChangeRefusedAtApply(t *testing.T) {
	c := withJoiner(t, 3)
	m := c.elect()
	if err := c.nodes[m].ProposeChange(1, members.Change{Kind: members.AddFollower, ID: 4, Addr: "a4", Incarnation: 44}); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[m].ProposeChange(2, members.Change{Kind: members.AddFollower, ID: 5, Addr: "a5", Incarnation: 55}); err != nil {
		t.Fatal(err)
	}
	rs := c.await(m, 2)
	var errs []error
	for _, r := range rs {
		errs = append(errs, r.Err)
	}
	if errs[0] != nil || !errors.Is(errs[1], members.ErrChangePending) {
		t.Fatalf("results %v", errs)
	}
	c.settle()
	for _, id := range c.ids {
		if _, ok := c.nodes[id].Applied().Members.Cur.Get(5); ok {
			t.Fatalf("node %d applied the refused change", id)
		}
	}
}

// A member the cluster was created with that restarts on a state whose
// configuration no longer lists it knows it was removed; a node that joined
// and has not applied its addition yet does not think so.
func TestRemovedAfterRestart(t *testing.T) {
	c, _ := members.New(members.Member{ID: 1}, members.Member{ID: 2}, members.Member{ID: 4})
	st := core.ApplyState{Applied: 500, Members: members.NewHistory(c, 300)}
	s := &store{accepted: map[uint64]core.InstanceValue{}, chosen: map[uint64]core.Value{}}
	n, err := instance.New(config(3, 1, s, instance.BugNone), instance.Durable{State: st})
	if err != nil {
		t.Fatal(err)
	}
	if r := n.Status().Role; r != "removed" {
		t.Fatalf("removed member 3 restarted as %q", r)
	}
	cfg := config(5, 1, s, instance.BugNone)
	cfg.Joined = true
	if n, err = instance.New(cfg, instance.Durable{}); err != nil {
		t.Fatal(err)
	}
	if r := n.Status().Role; r != "follower" {
		t.Fatalf("a joiner before its addition applied: %q", r)
	}
}

// A change that does not apply is refused as such, before the checks of
// liveness and catch-up would call the member silent or behind.
func TestChangeRefusedForWhatItIs(t *testing.T) {
	c := newCluster(t, 2, instance.BugNone)
	m := c.elect()
	for _, tc := range []struct {
		ch   members.Change
		want error
	}{
		{members.Change{Kind: members.Promote, ID: 9}, members.ErrUnknownMember},
		{members.Change{Kind: members.Promote, ID: m%3 + 1}, members.ErrNotFollower},
		{members.Change{Kind: members.Remove, ID: 9}, members.ErrUnknownMember},
	} {
		if err := c.nodes[m].ProposeChange(1, tc.ch); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.ch, err, tc.want)
		}
	}
}
