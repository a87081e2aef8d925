// Package acceptor is one node's Paxos acceptor across all instances: a single
// promise that covers every instance at or above the proposer's starting
// point, and the accepted (ballot, value) of each open instance.
//
// It is pure: it answers requests and says what must be persisted; the caller
// (instance/) persists those records before releasing any reply.
//
// The invariant it keeps: it never accepts a ballot below its promise, and its
// promise never decreases.
package acceptor

import (
	"fmt"
	"slices"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
)

// Acceptor holds the promise and the accepted values of open instances
// (instances at or above the node's applied frontier).
type Acceptor struct {
	promised idgen.Ballot
	accepted map[uint64]core.InstanceValue
	// maxAhead bounds how far beyond the applied frontier it accepts, which
	// bounds its memory: a node that far behind must catch up first.
	maxAhead uint64
	// acceptBelowPromise plants a bug for the simulator to catch.
	acceptBelowPromise bool
}

// New returns an acceptor restored from its durable promise and accepted
// records.
func New(promised idgen.Ballot, accepted []core.InstanceValue, maxAhead uint64) *Acceptor {
	a := &Acceptor{promised: promised, accepted: make(map[uint64]core.InstanceValue, len(accepted)), maxAhead: maxAhead}
	for _, iv := range accepted {
		a.accepted[iv.Instance] = iv
	}
	return a
}

// PlantAcceptBelowPromise makes the acceptor accept ballots below its
// promise. Only for tests that prove the simulator catches it.
func (a *Acceptor) PlantAcceptBelowPromise() { a.acceptBelowPromise = true }

// Promised returns the current promise.
func (a *Acceptor) Promised() idgen.Ballot { return a.promised }

// Accepted returns what was accepted in instance i, if anything.
func (a *Acceptor) Accepted(i uint64) (core.InstanceValue, bool) {
	iv, ok := a.accepted[i]
	return iv, ok
}

// Prepare handles phase 1a for every instance at or above m.Instance.
// applied is the node's applied frontier. It returns the reply (From/To and
// Committed left for the caller) and whether the promise changed and must be
// persisted before the reply leaves.
//
// The reply carries the accepted values at or above max(m.Instance,
// m.After), in instance order, stopping before their encoded size would
// pass maxBytes (but with at least one): a window full of large values
// never makes a Promise larger than the transport carries. When it stopped
// early, reply.End is the first instance left out, and the proposer asks
// again with After = End (same ballot, same start: the promise is the same,
// only the values continue). maxBytes <= 0 means no bound.
func (a *Acceptor) Prepare(m core.Message, applied uint64, maxBytes int) (reply core.Message, promiseChanged bool) {
	reply = core.Message{Type: core.MsgPromise, Ballot: m.Ballot, Instance: m.Instance, After: m.After}
	if applied > m.Instance || m.Ballot < a.promised {
		// Either the proposer is behind (the reply's Committed tells it), or
		// it is outbid.
		reply.Reject, reply.Promised = true, a.promised
		return reply, false
	}
	if m.Ballot > a.promised {
		a.promised, promiseChanged = m.Ballot, true
	}
	from := max(m.Instance, m.After)
	var found []core.InstanceValue
	for i, iv := range a.accepted {
		if i >= from {
			found = append(found, iv)
		}
	}
	slices.SortFunc(found, func(x, y core.InstanceValue) int { return cmpU64(x.Instance, y.Instance) })
	size := 0
	for k, iv := range found {
		if maxBytes > 0 && k > 0 && size+iv.Size() > maxBytes {
			reply.End = iv.Instance
			break
		}
		size += iv.Size()
		reply.Entries = append(reply.Entries, iv)
	}
	return reply, promiseChanged
}

// Accept handles phase 2a. It returns the reply, and the record to persist
// (nil when nothing was accepted) and whether the promise changed; both must
// be durable before the reply leaves.
func (a *Acceptor) Accept(m core.Message, applied uint64) (reply core.Message, record *core.InstanceValue, promiseChanged bool) {
	reply = core.Message{Type: core.MsgAccepted, Ballot: m.Ballot, Instance: m.Instance}
	switch {
	case m.Instance < applied, m.Instance >= applied+a.maxAhead:
		// Already chosen here (the proposer learns it from Committed), or
		// too far ahead to hold: refuse without raising the promise.
		reply.Reject, reply.Promised = true, a.promised
		return reply, nil, false
	case m.Ballot < a.promised && !a.acceptBelowPromise:
		reply.Reject, reply.Promised = true, a.promised
		return reply, nil, false
	}
	if m.Ballot > a.promised {
		a.promised, promiseChanged = m.Ballot, true
	}
	if prev, ok := a.accepted[m.Instance]; ok && prev.Ballot == m.Ballot {
		return reply, nil, promiseChanged // a duplicate: already durable (or in the same batch)
	}
	iv := core.InstanceValue{Instance: m.Instance, Ballot: m.Ballot, Value: m.Value}
	a.accepted[m.Instance] = iv
	return reply, &iv, promiseChanged
}

// Forget drops accepted values of instances below applied: they are chosen
// and their values are in the log.
func (a *Acceptor) Forget(applied uint64) {
	for i := range a.accepted {
		if i < applied {
			delete(a.accepted, i)
		}
	}
}

// Open returns the number of open instances held, for status and bounds checks.
func (a *Acceptor) Open() int { return len(a.accepted) }

// Check asserts the acceptor's invariants; it returns an error naming the
// first one broken.
func (a *Acceptor) Check(applied uint64) error {
	for i, iv := range a.accepted {
		if iv.Instance != i {
			return fmt.Errorf("acceptor: record for instance %d filed under %d", iv.Instance, i)
		}
		if iv.Ballot > a.promised && !a.acceptBelowPromise {
			return fmt.Errorf("acceptor: accepted ballot %d above promise %d in instance %d", iv.Ballot, a.promised, i)
		}
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
