package rpc

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// IncarnationError says that peer Peer knew node Node with incarnation
// Known, and Node now runs with incarnation Got: Node's data directory was
// created anew and lost the state Node voted with. Node must not vote with
// it. Its Error is written for Node's operator.
type IncarnationError struct {
	Node, Peer uint64
	Known, Got uint64
	// Configured: Known is the incarnation the membership records for
	// Node (it was replaced by the directory of that incarnation).
	Configured bool
}

// Error implements error.
func (e *IncarnationError) Error() string {
	if e.Configured {
		return fmt.Sprintf("node %d's data directory (incarnation %016x) is not the one the membership names for node %d (incarnation %016x), "+
			"as peer %d says: node %d was replaced by another directory (paxosd members replace) and this one must not vote; "+
			"stop this node and delete its directory (docs/operations.md, \"Changing the membership\")",
			e.Node, e.Got, e.Node, e.Known, e.Peer, e.Node)
	}
	return fmt.Sprintf("node %d's data directory was created anew (incarnation %016x) but peer %d knew node %d with incarnation %016x: "+
		"this directory lost the state node %d voted with, and it must not vote with it; "+
		"restore node %d's own data directory if it still exists, or keep node %d stopped and run with the remaining majority "+
		"(docs/operations.md, \"The data directory\")",
		e.Node, e.Got, e.Peer, e.Node, e.Known, e.Node, e.Node, e.Node)
}

// refusal is the reason the refusing peer logs and ends the stream with.
func (e *IncarnationError) refusal() string {
	if e.Configured {
		return fmt.Sprintf("rejected a batch from node %d: it carries incarnation %016x, but the membership names node %d's directory with incarnation %016x: "+
			"node %d was replaced, and this is another (older) directory of it; stop it and delete its directory",
			e.Node, e.Got, e.Node, e.Known, e.Node)
	}
	return fmt.Sprintf("rejected a batch from node %d: it carries incarnation %016x, but this node (%d) knew node %d with incarnation %016x: "+
		"node %d's data directory was created anew and lost the state it voted with; "+
		"restore node %d's own data directory if it still exists, or keep node %d stopped and run with the remaining majority",
		e.Node, e.Got, e.Peer, e.Node, e.Known, e.Node, e.Node, e.Node)
}

// incarnationRefused returns the IncarnationError a peer's status carries,
// nil if err is not such a refusal.
func incarnationRefused(err error) *IncarnationError {
	st, d, ok := api.Detail[*paxosdpb.IncarnationRefused](err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return nil
	}
	return &IncarnationError{Node: d.GetNode(), Peer: d.GetPeer(), Known: d.GetKnown(), Got: d.GetGot(), Configured: d.GetConfigured()}
}

// NewIncarnationCheck returns a TransportConfig.CheckPeer that remembers
// the first incarnation it sees of each peer (trust on first use) and
// refuses any other one later with an *IncarnationError. known holds the
// incarnations remembered before; remember persists a new one, and must
// return only once it is durable. Incarnation 0 (a sender of an older
// build) always passes. A peer already known costs a map lookup under a
// read lock; only its first sighting calls remember.
func NewIncarnationCheck(known map[uint64]uint64, remember func(id, incarnation uint64) error) func(id, incarnation uint64) error {
	return NewIncarnations(known, remember).Check
}

// NewIncarnations is NewIncarnationCheck as a value that also follows the
// membership (SetConfigured); its Check is the TransportConfig.CheckPeer.
func NewIncarnations(known map[uint64]uint64, remember func(id, incarnation uint64) error) *Incarnations {
	c := &Incarnations{known: make(map[uint64]uint64, len(known)), remember: remember}
	for id, inc := range known {
		c.known[id] = inc
	}
	return c
}

// Incarnations checks peers' incarnations: trust on first use, except for
// a member whose incarnation the configuration records (a member added to
// a running cluster), where the configuration decides.
type Incarnations struct {
	mu         sync.RWMutex
	known      map[uint64]uint64
	configured map[uint64]uint64 // member -> the incarnation the configuration records (non-zero only)
	remember   func(id, incarnation uint64) error
}

// SetConfigured sets the incarnations the applied configuration records
// for its members (id -> incarnation; 0: none recorded, trust on first
// use). A recorded incarnation is authoritative: a member removed and added
// again on a new directory is accepted with its new incarnation (and
// remembered so), and its old directory refused.
func (c *Incarnations) SetConfigured(incs map[uint64]uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.configured = map[uint64]uint64{}
	for id, inc := range incs {
		if inc != 0 {
			c.configured[id] = inc
		}
	}
}

// Check is a TransportConfig.CheckPeer.
func (c *Incarnations) Check(id, incarnation uint64) error {
	if incarnation == 0 {
		return nil
	}
	c.mu.RLock()
	known, ok := c.known[id]
	conf := c.configured[id]
	c.mu.RUnlock()
	if conf != 0 {
		if incarnation != conf {
			return &IncarnationError{Node: id, Known: conf, Got: incarnation, Configured: true}
		}
		if known == conf {
			return nil
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if err := c.remember(id, incarnation); err != nil {
			return fmt.Errorf("recording node %d's incarnation: %w", id, err)
		}
		c.known[id] = incarnation
		return nil
	}
	if !ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		if known, ok = c.known[id]; !ok {
			if err := c.remember(id, incarnation); err != nil {
				return fmt.Errorf("recording node %d's incarnation: %w", id, err)
			}
			c.known[id] = incarnation
			return nil
		}
	}
	if known != incarnation {
		return &IncarnationError{Node: id, Known: known, Got: incarnation}
	}
	return nil
}
