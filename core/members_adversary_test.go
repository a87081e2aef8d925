package core

import (
	"testing"

	"github.com/paxosd/paxosd/members"
)

// Attack (decoding the membership): DecodeState checks that members are
// sorted, that roles are in range and that the current configuration is
// not empty, but accepts memberships that every later use assumes cannot
// exist: a pending configuration with no member (hasQuorum of an empty
// voter set is never true: the cluster stalls for good once it is
// pending), a configuration with followers only, two voters sharing a
// ballot slot (both issue the same ballots: two values can be chosen at
// one ballot), a next slot at or below a slot already handed out (the
// next promotion reuses it), a member with ID 0. A state read from disk
// or a base from a peer must be refused, not installed.
func TestDecodeStateRefusesImpossibleMembership(t *testing.T) {
	voter := func(id, slot uint64) members.Member {
		return members.Member{ID: id, Addr: "a", Role: members.Voter, Slot: slot}
	}
	good := members.Config{NextSlot: 3, Members: []members.Member{voter(1, 0), voter(2, 1), voter(3, 2)}}
	empty := members.Config{NextSlot: 3}
	cases := []struct {
		name string
		h    members.History
	}{
		{"pending configuration without members", members.History{Cur: good, Next: &empty, NextFrom: 64}},
		{"no voter", members.History{Cur: members.Config{NextSlot: 1, Members: []members.Member{{ID: 1, Addr: "a", Role: members.Follower}}}}},
		{"two voters with one slot", members.History{Cur: members.Config{NextSlot: 3, Members: []members.Member{voter(1, 0), voter(2, 0), voter(3, 2)}}}},
		{"next slot not above a slot handed out", members.History{Cur: members.Config{NextSlot: 1, Members: []members.Member{voter(1, 0), voter(2, 1), voter(3, 2)}}}},
		{"member ID 0", members.History{Cur: members.Config{NextSlot: 3, Members: []members.Member{voter(0, 0), voter(2, 1), voter(3, 2)}}}},
		{"pending change deciding before the current configuration", members.History{Cur: good, CurFrom: 100, Next: &good, NextFrom: 50}},
	}
	for _, c := range cases {
		b := AppendState(nil, ApplyState{Applied: 10, Members: c.h})
		if _, err := DecodeState(b); err == nil {
			t.Errorf("%s: decoded without error", c.name)
		}
	}
}
