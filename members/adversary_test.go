package members_test

import (
	"testing"

	"github.com/paxosd/paxosd/members"
)

// Attack (incarnations): a member added after the cluster was created must
// carry the incarnation of its data directory; 0 means "a member the
// cluster was created with" (instance.mayVote). An add-follower with
// incarnation 0 is applied, and once promoted that entry lets any
// directory with that ID that did not join vote (a wiped original member
// restarted with its first flags), while the directory actually added,
// which joined with a real incarnation, never votes: the configuration
// counts a voter that never answers (ProposeChange's live-quorum check
// counts it live, since it is heard from).
func TestAddFollowerNeedsIncarnation(t *testing.T) {
	c, err := members.New(members.Member{ID: 1, Addr: "a1"}, members.Member{ID: 2, Addr: "a2"}, members.Member{ID: 3, Addr: "a3"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(members.Change{Kind: members.AddFollower, ID: 4, Addr: "a4"}, 64); err == nil {
		t.Fatal("add-follower without an incarnation applied")
	}
}
