// Package catchup decides when a node that is behind pulls chosen values from
// a peer, and from which: it learns peers' applied frontiers from every
// message (and from probes sent on a timer), and keeps one bounded range
// request in flight to the most advanced peer (or to a peer other than the
// master, when one has what is missing), switching peer when one stops
// answering. One request at a time is the flow control: the next is sent only
// after the previous response was taken in.
//
// It is pure. The invariant it keeps: at most one request is outstanding,
// and every request asks for at most Batch instances.
package catchup

import (
	"slices"

	"github.com/paxosd/paxosd/core"
)

// Config tunes catch-up. Durations are in ticks.
type Config struct {
	Peers    []uint64 // whom to probe and learn from
	Interval uint64   // between probes
	Timeout  uint64   // a request unanswered this long moves to another peer
	Grace    uint64   // how long a small lag may last before a request (normal commits close it)
	Slack    uint64   // a lag above this is requested at once
	Batch    uint64   // instances per request
}

type request struct {
	peer, from, sent uint64
}

// Catchup tracks peers' progress and the outstanding request.
type Catchup struct {
	cfg         Config
	known       map[uint64]uint64 // peer -> highest applied frontier it reported
	failedUntil map[uint64]uint64
	lastProbe   uint64
	probed      bool
	behindSince uint64
	behind      bool
	out         *request
	master      uint64 // the peer that proposes, spared when another can serve
}

// New returns a catch-up tracker.
func New(cfg Config) *Catchup {
	return &Catchup{cfg: cfg, known: map[uint64]uint64{}, failedUntil: map[uint64]uint64{}}
}

// Observe records that peer has applied everything below committed. The
// latest report counts, not the highest: a peer that crashed may have lost
// applies it had not synced, and a frontier it no longer has would keep
// this node "behind" (and so out of elections) for good. Only the peers
// this node learns from count: a follower that got a value pushed before
// its member lost it must not hold the voters back.
func (c *Catchup) Observe(peer, committed uint64) {
	if slices.Contains(c.cfg.Peers, peer) {
		c.known[peer] = committed
	}
}

// SetMaster names the peer that is proposing (it sends Accepts and
// Commits). Requests go to another peer whenever one has applied more than
// this node: the master's loop and disk serve the clients, and a catch-up
// read there shows in their latency.
func (c *Catchup) SetMaster(peer uint64) { c.master = peer }

// source is the peer to ask: the most advanced one, or, if that is the
// master, the most advanced other peer that is ahead of applied.
func (c *Catchup) source(now, applied uint64) uint64 {
	peer, _ := c.Best(now)
	if peer == 0 || peer != c.master {
		return peer
	}
	var other, best uint64
	for _, p := range c.cfg.Peers {
		if k := c.known[p]; p != c.master && k > applied && k > best && now >= c.failedUntil[p] {
			other, best = p, k
		}
	}
	if other != 0 {
		return other
	}
	return peer
}

// Best returns the most advanced peer's frontier and the peer (0 if none),
// skipping peers that recently failed to answer.
func (c *Catchup) Best(now uint64) (peer, committed uint64) {
	for _, p := range c.cfg.Peers {
		if k := c.known[p]; k > committed && now >= c.failedUntil[p] {
			peer, committed = p, k
		}
	}
	return peer, committed
}

// Behind reports whether any peer is known to have applied more than applied.
func (c *Catchup) Behind(applied uint64) bool {
	for _, k := range c.known {
		if k > applied {
			return true
		}
	}
	return false
}

// Outstanding reports whether a request is in flight.
func (c *Catchup) Outstanding() bool { return c.out != nil }

// OnResponse notes that a response from peer arrived.
func (c *Catchup) OnResponse(peer uint64) {
	if c.out != nil && c.out.peer == peer {
		c.out = nil
	}
}

// Tick sends probes on the interval, gives up on a request that timed out,
// and returns messages to send.
func (c *Catchup) Tick(now, applied uint64) []core.Message {
	var msgs []core.Message
	if c.out != nil && now-c.out.sent >= c.cfg.Timeout {
		c.failedUntil[c.out.peer] = now + c.cfg.Timeout
		c.out = nil
	}
	if !c.probed || now-c.lastProbe >= c.cfg.Interval {
		// The first probe goes at once: a node that just started wants to
		// know at once how far behind it is.
		c.probed, c.lastProbe = true, now
		for _, p := range c.cfg.Peers {
			msgs = append(msgs, core.Message{Type: core.MsgProbe, To: p})
		}
	}
	return append(msgs, c.Maybe(now, applied)...)
}

// Maybe starts a request when the node is behind: at once when the lag is
// above Slack, after Grace ticks otherwise.
func (c *Catchup) Maybe(now, applied uint64) []core.Message {
	_, best := c.Best(now)
	if best <= applied {
		c.behind = false
		return nil
	}
	if !c.behind {
		c.behind, c.behindSince = true, now
	}
	if c.out != nil || (best-applied <= c.cfg.Slack && now-c.behindSince < c.cfg.Grace) {
		return nil
	}
	peer := c.source(now, applied)
	c.out = &request{peer: peer, from: applied, sent: now}
	return []core.Message{{Type: core.MsgLearnReq, To: peer, Instance: applied, End: applied + c.cfg.Batch}}
}
