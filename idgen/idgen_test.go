package idgen

import (
	"math/rand/v2"
	"testing"
)

func TestMakeRoundSlot(t *testing.T) {
	for _, tc := range []struct{ round, slot, k uint64 }{{1, 0, 64}, {1, 63, 64}, {7, 3, 64}, {2, 2, 3}} {
		b := Make(tc.round, tc.slot, tc.k)
		if b.Round(tc.k) != tc.round || b.Slot(tc.k) != tc.slot {
			t.Errorf("Make(%d,%d,%d)=%d: round %d slot %d", tc.round, tc.slot, tc.k, b, b.Round(tc.k), b.Slot(tc.k))
		}
		if !Owns(b, tc.slot, tc.k) || Owns(b, (tc.slot+1)%tc.k, tc.k) {
			t.Errorf("ownership of %d wrong", b)
		}
	}
	if Owns(0, 0, 64) {
		t.Error("ballot 0 is owned by nobody")
	}
}

func TestNextAbove(t *testing.T) {
	for _, tc := range []struct {
		b       Ballot
		slot, k uint64
		want    Ballot
	}{
		{0, 0, 4, 4}, {0, 3, 4, 7}, {4, 0, 4, 8}, {5, 0, 4, 8}, {5, 2, 4, 6}, {6, 2, 4, 10}, {7, 2, 4, 10},
	} {
		if got := NextAbove(tc.b, tc.slot, tc.k); got != tc.want {
			t.Errorf("NextAbove(%d, slot %d, K %d) = %d, want %d", tc.b, tc.slot, tc.k, got, tc.want)
		}
	}
}

// Property: NextAbove is strictly above, owned by the slot, and minimal.
func TestNextAboveProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		k := uint64(1 + r.IntN(64))
		slot := uint64(r.IntN(int(k)))
		b := Ballot(r.Uint64N(1 << 20))
		n := NextAbove(b, slot, k)
		if n <= b || !Owns(n, slot, k) {
			t.Fatalf("NextAbove(%d,%d,%d)=%d not above or not owned", b, slot, k, n)
		}
		for c := b + 1; c < n; c++ {
			if Owns(c, slot, k) {
				t.Fatalf("NextAbove(%d,%d,%d)=%d skipped owned %d", b, slot, k, n, c)
			}
		}
	}
}

func TestGeneratorNeverReuses(t *testing.T) {
	g := NewGenerator(1, 3, 0)
	seen := map[Ballot]bool{}
	last := Ballot(0)
	for i := 0; i < 100; i++ {
		if i%7 == 0 {
			g.Observe(last + Ballot(i%5))
		}
		b := g.Next()
		if seen[b] || b <= last || !Owns(b, 1, 3) {
			t.Fatalf("ballot %d reused, not increasing or not owned", b)
		}
		seen[b] = true
		last = b
	}
	// A restart seeded with the durable promise (the last ballot) continues above it.
	g2 := NewGenerator(1, 3, last)
	if b := g2.Next(); b <= last {
		t.Fatalf("after restart got %d, not above %d", b, last)
	}
}

func TestNewClientIDNonZero(t *testing.T) {
	r := rand.New(rand.NewPCG(0, 0))
	for i := 0; i < 1000; i++ {
		if NewClientID(r) == 0 {
			t.Fatal("zero client ID")
		}
	}
}
