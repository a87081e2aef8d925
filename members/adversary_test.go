package members_test

import (
	"errors"
	"testing"

	"github.com/paxosd/paxosd/members"
)

// Attack (incarnations): a member added after the cluster was created must
// carry the incarnation of its data directory before it votes; 0 means "a
// member the cluster was created with" (instance.mayVote). A follower added
// with incarnation 0 (members add, before its node joined) and promoted
// would let any directory with that ID that did not join vote (a wiped
// original member restarted with its first flags), while the directory
// actually added, which joined with a real incarnation, never votes: the
// configuration counts a voter that never answers. Adding one is allowed
// (its node's Join records the incarnation); promoting it is not.
func TestPromoteNeedsIncarnation(t *testing.T) {
	c, err := members.New(members.Member{ID: 1, Addr: "a1"}, members.Member{ID: 2, Addr: "a2"}, members.Member{ID: 3, Addr: "a3"})
	if err != nil {
		t.Fatal(err)
	}
	c, err = c.Apply(members.Change{Kind: members.AddFollower, ID: 4, Addr: "a4"}, 64)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apply(members.Change{Kind: members.Promote, ID: 4}, 64); !errors.Is(err, members.ErrNoIncarnation) {
		t.Fatalf("a follower without an incarnation promoted: %v", err)
	}
}
