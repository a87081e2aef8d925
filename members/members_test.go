package members_test

import (
	"errors"
	"math/bits"
	"math/rand/v2"
	"testing"

	"github.com/paxosd/paxosd/members"
)

// Random change sequences, valid and not: after every change applied, every
// slot ever handed out belongs to at most one member ever, there is a
// voter, and every quorum of the configuration before meets every quorum of
// the one after (one voter more or less per change).
func TestChangesKeepTheRules(t *testing.T) {
	const k = 16
	for seed := uint64(1); seed <= 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		c, err := members.New(members.Member{ID: 1, Addr: "a1"}, members.Member{ID: 2, Addr: "a2"}, members.Member{ID: 3, Addr: "a3"})
		if err != nil {
			t.Fatal(err)
		}
		owner := map[uint64]uint64{0: 1, 1: 2, 2: 3} // slot -> the member it was handed to
		for step := range 60 {
			ch := members.Change{Kind: members.Kind(1 + rng.IntN(3)), ID: 1 + rng.Uint64N(8), Addr: "x", Incarnation: 1 + rng.Uint64N(1<<20)}
			next, err := c.Apply(ch, k)
			if err != nil {
				if !errors.Is(err, members.ErrUnknownMember) && !errors.Is(err, members.ErrMemberExists) &&
					!errors.Is(err, members.ErrNotFollower) && !errors.Is(err, members.ErrLastVoter) && !errors.Is(err, members.ErrSlotsExhausted) {
					t.Fatalf("seed %d step %d: %s refused with an untyped error: %v", seed, step, ch, err)
				}
				if next.String() != c.String() {
					t.Fatalf("seed %d step %d: a refused %s changed the configuration", seed, step, ch)
				}
				continue
			}
			if len(next.Voters()) == 0 {
				t.Fatalf("seed %d step %d: %s left no voter", seed, step, ch)
			}
			for _, m := range next.Members {
				if m.Role != members.Voter {
					continue
				}
				if o, ok := owner[m.Slot]; ok && o != m.ID {
					t.Fatalf("seed %d step %d: slot %d handed to %d, once %d's", seed, step, m.Slot, m.ID, o)
				}
				if prev, ok := c.Get(m.ID); ok && prev.Role == members.Voter && prev.Slot != m.Slot {
					t.Fatalf("seed %d step %d: voter %d's slot changed", seed, step, m.ID)
				}
				if _, ok := owner[m.Slot]; !ok {
					if prev, ok := c.Get(m.ID); ok && prev.Role == members.Voter {
						t.Fatalf("seed %d step %d: voter %d got a new slot", seed, step, m.ID)
					}
					owner[m.Slot] = m.ID
				}
			}
			// A member removed and added again is a new member: its old
			// slot stays owned by the old one, so it must get a new slot.
			if ch.Kind == members.Remove {
				for s, o := range owner {
					if o == ch.ID {
						owner[s] = 1 << 63 // a member gone for good
					}
				}
			}
			if !quorumsMeet(c.Voters(), next.Voters()) {
				t.Fatalf("seed %d step %d: %s: a quorum of %v and one of %v can be disjoint", seed, step, ch, c.Voters(), next.Voters())
			}
			c = next
		}
	}
}

// quorumsMeet reports whether every majority of a meets every majority of b.
func quorumsMeet(a, b []uint64) bool {
	ids := map[uint64]int{}
	for _, x := range append(append([]uint64{}, a...), b...) {
		if _, ok := ids[x]; !ok {
			ids[x] = len(ids)
		}
	}
	mask := func(xs []uint64) uint64 {
		var m uint64
		for _, x := range xs {
			m |= 1 << ids[x]
		}
		return m
	}
	ma, mb := mask(a), mask(b)
	qa, qb := len(a)/2+1, len(b)/2+1
	for s := uint64(0); s < 1<<len(ids); s++ {
		if s&^ma != 0 || bits.OnesCount64(s) < qa {
			continue
		}
		// The largest set of b's voters that avoids s: too small to be a quorum?
		if bits.OnesCount64(mb&^s) >= qb {
			return false
		}
	}
	return true
}
