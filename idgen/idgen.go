// Package idgen issues the identifiers the protocol depends on: K-stride
// ballot numbers and random client IDs.
//
// A ballot is round*K + slot, where slot is the issuing member's index and K
// the stride fixed when the cluster was created. Two members therefore never
// issue the same ballot. A member never issues the same ballot twice either,
// across restarts too: the caller seeds the generator with the member's
// durable promise, which is at least every ballot the member ever sent a
// Prepare for (the member promises its own ballot, durably, before any
// Prepare leaves).
//
// This package imports nothing of paxosd and keeps no clock.
package idgen

import (
	"fmt"
	"math/rand/v2"
)

// Ballot is a proposal number. Zero means "none": every issued ballot has a
// round of at least one.
type Ballot uint64

// DefaultK is the stride used when a cluster does not choose one. It bounds
// the number of voting slots a cluster can ever hand out.
const DefaultK = 64

// Make returns the ballot of round for slot with stride k.
func Make(round, slot, k uint64) Ballot {
	if slot >= k {
		panic(fmt.Sprintf("idgen: slot %d out of range for K=%d", slot, k))
	}
	return Ballot(round*k + slot)
}

// Round returns the round of b.
func (b Ballot) Round(k uint64) uint64 { return uint64(b) / k }

// Slot returns the slot (member index) that owns b.
func (b Ballot) Slot(k uint64) uint64 { return uint64(b) % k }

// Owns reports whether slot issued b.
func Owns(b Ballot, slot, k uint64) bool { return b != 0 && b.Slot(k) == slot }

// NextAbove returns the smallest ballot owned by slot that is strictly
// greater than b.
func NextAbove(b Ballot, slot, k uint64) Ballot {
	round := b.Round(k)
	if Make(round, slot, k) > b && round > 0 {
		return Make(round, slot, k)
	}
	return Make(round+1, slot, k)
}

// Generator issues strictly increasing ballots for one slot.
type Generator struct {
	slot, k uint64
	floor   Ballot // highest ballot observed; the next one issued is above it
}

// NewGenerator returns a generator for slot whose first ballot is above
// durablePromise. Passing anything lower than the member's durable promise
// may reissue a ballot the member already used.
func NewGenerator(slot, k uint64, durablePromise Ballot) *Generator {
	if k == 0 || slot >= k {
		panic(fmt.Sprintf("idgen: slot %d out of range for K=%d", slot, k))
	}
	return &Generator{slot: slot, k: k, floor: durablePromise}
}

// Observe records a ballot seen anywhere (a reject, a peer's Prepare), so
// the next ballot issued is above it.
func (g *Generator) Observe(b Ballot) {
	if b > g.floor {
		g.floor = b
	}
}

// Next returns a fresh ballot above everything observed and records it.
func (g *Generator) Next() Ballot {
	b := NextAbove(g.floor, g.slot, g.k)
	g.floor = b
	return b
}

// Floor returns the highest ballot observed or issued.
func (g *Generator) Floor() Ballot { return g.floor }

// NewClientID returns a random non-zero client ID drawn from r.
func NewClientID(r *rand.Rand) uint64 {
	for {
		if id := r.Uint64(); id != 0 {
			return id
		}
	}
}
