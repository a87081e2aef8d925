// Package catchup decides when a node that is behind pulls chosen values from
// a peer, and from which: it learns peers' applied frontiers from every
// message (and from probes sent on a timer), and keeps one bounded range
// request in flight to the most advanced peer (or to a peer other than the
// master, when one has what is missing), switching peer when one stops
// answering. One request at a time is the flow control: the next is sent only
// after the previous response was taken in.
//
// A peer that no longer holds the values asked for (they are below its base,
// the state it kept after a trim) says so, and the node fetches that base
// instead, in chunks over the same one-request-at-a-time flow: the user
// entries it lacks, then the dedup rows, then installs it (Fetch).
//
// It is pure. The invariant it keeps: at most one request is outstanding,
// and every request asks for at most Batch instances; a base is installed
// only whole: every entry from where the node's own log ends and every row,
// all of one base.
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
	// Live: a peer heard from within this many ticks counts toward being
	// behind; one silent longer (crashed, cut off) does not. Several probe
	// intervals, so that a lost probe or two do not matter.
	Live uint64
	// Stall: a node behind for this long without applying anything stops
	// counting itself behind for elections. What it lacks may be held by no
	// live peer (a master that died after announcing it had applied an
	// instance nobody else learned), and phase 1 is how it is recovered.
	Stall uint64
	// CountDeadPeers plants the bug that stalled clusters for good: every
	// peer's last report counts, however long ago it was heard from.
	CountDeadPeers bool
	// StallPastMaster plants the bug that let a voter that cannot catch up
	// depose a working master again and again: Stall ends being behind even
	// while the master is live and ahead.
	StallPastMaster bool
}

type request struct {
	peer, from, sent uint64
	seq              uint64 // a LearnReq's number (its After), echoed in the answer
	snap             bool   // a SnapReq: OnChunk ends it
}

// Catchup tracks peers' progress and the outstanding request.
type Catchup struct {
	cfg         Config
	known       map[uint64]uint64 // peer -> latest applied frontier it reported
	heard       map[uint64]uint64 // peer -> when it was last heard from
	down        map[uint64]bool   // peer -> reported down (PeerDown) since its last message
	grew        map[uint64]uint64 // peer -> when its reported frontier last went up
	failedUntil map[uint64]uint64
	// progressAt is when the node last applied something (or stopped being
	// behind), progressed what it had applied then: for the Stall bound.
	progressAt, progressed uint64
	lastProbe              uint64
	probed                 bool
	behindSince            uint64
	behind                 bool
	out                    *request
	seq                    uint64 // the last LearnReq's number
	quietUntil             uint64 // after an answer that carried nothing: no learn request before then
	master                 uint64 // the peer that proposes, spared when another can serve
	masterAt               uint64 // when the master last sent an Accept or a Commit
	fetch                  *fetch // a base being fetched
}

// fetch is the progress of fetching a peer's base.
type fetch struct {
	peer  uint64 // whom to ask (0: between peers: a learn request finds one)
	base  uint64 // the base's instance, as the last chunk said (0: none yet)
	index uint64 // the next user entry wanted
	// gap: entries were skipped, from where the node's own log ends up to
	// a base's first index. Another base may start lower and need them.
	gap   bool
	after uint64 // the dedup rows have been taken up to this client ID
	rows  []core.DedupEntry
}

// New returns a catch-up tracker.
func New(cfg Config) *Catchup {
	return &Catchup{cfg: cfg, known: map[uint64]uint64{}, heard: map[uint64]uint64{}, down: map[uint64]bool{}, grew: map[uint64]uint64{}, failedUntil: map[uint64]uint64{}}
}

// Observe records that peer has applied everything below committed. The
// latest report counts, not the highest: a peer that crashed may have lost
// applies it had not synced, and a frontier it no longer has would keep
// this node "behind" (and so out of elections) for good. Only the peers
// this node learns from count: a follower that got a value pushed before
// its member lost it must not hold the voters back. now is when it was heard.
func (c *Catchup) Observe(now, peer, committed uint64) {
	if slices.Contains(c.cfg.Peers, peer) {
		if committed > c.known[peer] {
			c.grew[peer] = now
		}
		c.known[peer], c.heard[peer] = committed, now
		delete(c.down, peer)
	}
}

// SetPeers changes whom this node probes and learns from, as membership
// changes. What it knows of a peer that stays is kept; a peer that left no
// longer counts.
func (c *Catchup) SetPeers(peers []uint64) {
	c.cfg.Peers = slices.Clone(peers)
	for p := range c.known {
		if !slices.Contains(peers, p) {
			delete(c.known, p)
			delete(c.heard, p)
			delete(c.down, p)
			delete(c.grew, p)
		}
	}
}

// Peers returns whom this node learns from, in order.
func (c *Catchup) Peers() []uint64 { return slices.Sorted(slices.Values(c.cfg.Peers)) }

// live reports whether peer was heard from recently enough to count, and
// was not reported down since (PeerDown): whom to ask, and whom the
// master counts live (Frontier). A peer never heard from is not live,
// however young this node: for the first Live ticks after a start every
// peer would count as live, dead ones included (ProposeChange counts live
// voters with it).
func (c *Catchup) live(now, peer uint64) bool {
	return c.cfg.CountDeadPeers || !c.down[peer] && c.heardWithin(now, peer)
}

// heardWithin reports whether peer was heard from within Live, whatever a
// failure detector said since: what Behind counts.
func (c *Catchup) heardWithin(now, peer uint64) bool {
	heard, ok := c.heard[peer]
	return c.cfg.CountDeadPeers || ok && now-heard <= c.cfg.Live
}

// PeerDown takes a failure detector's report (gossip) that peer is down.
// It is a hint, and it only subtracts: the peer stops counting as live (a
// source, a live voter) until its next message, as if it had been silent
// for Live already, and a request outstanding to it is given up at once
// (its late answer is ignored, as after a Timeout). A false report costs at
// most the time to the peer's next message (a probe answer); a true one
// spares the node waiting out Live and Timeout. Nothing of the lease or of
// quorums reads it, and neither does Behind: elections wait for the lease
// anyway, and a false report about a working master made a voter that
// cannot learn from it run phase 1 and depose it, once per report
// (instance TestFalseReportsDoNotLetABehindVoterDeposeTheMaster).
func (c *Catchup) PeerDown(peer uint64) {
	if slices.Contains(c.cfg.Peers, peer) {
		c.down[peer] = true
	}
	if c.out != nil && c.out.peer == peer {
		if c.fetch != nil && c.fetch.peer == peer {
			c.fetch.peer = 0 // a learn request finds another peer with a base
		}
		c.out = nil
	}
}

// SetMaster names the peer that is proposing: it sent an Accept or a Commit
// at now. Requests go to another peer whenever one has applied more than
// this node: the master's loop and disk serve the clients, and a catch-up
// read there shows in their latency.
func (c *Catchup) SetMaster(now, peer uint64) { c.master, c.masterAt = peer, now }

// source is the peer to ask: the most advanced one, or, if that is the
// master, the most advanced other peer that is ahead of applied.
func (c *Catchup) source(now, applied uint64) uint64 {
	peer, _ := c.Best(now)
	if peer == 0 || peer != c.master {
		return peer
	}
	var other, best uint64
	for _, p := range c.cfg.Peers {
		if k := c.known[p]; p != c.master && k > applied && k > best && now >= c.failedUntil[p] && c.live(now, p) {
			other, best = p, k
		}
	}
	if other != 0 {
		return other
	}
	return peer
}

// Frontier returns the applied frontier peer last reported and whether it
// was heard from within Live.
func (c *Catchup) Frontier(now, peer uint64) (committed uint64, live bool) {
	return c.known[peer], c.live(now, peer)
}

// Best returns the most advanced live peer's frontier and the peer (0 if
// none), skipping peers that recently failed to answer.
func (c *Catchup) Best(now uint64) (peer, committed uint64) {
	for _, p := range c.cfg.Peers {
		if k := c.known[p]; k > committed && now >= c.failedUntil[p] && c.live(now, p) {
			peer, committed = p, k
		}
	}
	return peer, committed
}

// Behind reports whether the node should stay out of elections because a
// live peer has applied more than applied: a peer heard from within Live.
// Behind that long (Stall) without applying anything, it is not behind any
// more, unless a working master is ahead: no live peer gives it what it
// lacks (the master that chose it died, or no longer gets anything
// chosen), and phase 1 recovers it. A working master, one that sent an
// Accept or a Commit within Live and whose frontier went up within Stall
// (its lease renewals alone move it), keeps a node that cannot learn from
// it (a lossy link, a slow disk) behind: such a node's phase 1 would only
// depose it, again and again. A master that still sends but gets nothing
// chosen (it hears no one) is not working. Running phase 1 while truly
// behind never costs safety: a peer that is ahead refuses the Prepare (it
// has applied past its start).
func (c *Catchup) Behind(now, applied uint64) bool {
	if !c.ahead(now, applied) {
		return false
	}
	return c.cfg.CountDeadPeers || now-c.progressAt < c.cfg.Stall || c.masterAhead(now, applied)
}

// masterAhead reports whether the master is working (it sent an Accept or
// a Commit within Live, and its frontier went up within Stall) and has
// applied more than applied.
func (c *Catchup) masterAhead(now, applied uint64) bool {
	return !c.cfg.StallPastMaster && c.master != 0 && now-c.masterAt <= c.cfg.Live &&
		now-c.grew[c.master] < c.cfg.Stall && c.known[c.master] > applied
}

// ahead reports whether a peer heard from within Live has applied more
// than applied (a failure detector's report does not count).
func (c *Catchup) ahead(now, applied uint64) bool {
	for p, k := range c.known {
		if k > applied && c.heardWithin(now, p) {
			return true
		}
	}
	return false
}

// track restarts the Stall clock whenever the node applied something or is
// not behind.
func (c *Catchup) track(now, applied uint64) {
	if applied > c.progressed || !c.ahead(now, applied) {
		c.progressAt, c.progressed = now, applied
	}
}

// Outstanding reports whether a request is in flight.
func (c *Catchup) Outstanding() bool { return c.out != nil }

// OnResponse notes that peer answered, at now, the learn request numbered
// seq (the answer's After, echoed from the request), carrying nothing if
// empty. Only the answer to the outstanding request ends it: a duplicate
// or late answer to an earlier one must not, or each one would let another
// request out, and duplicates would multiply the requests in flight without
// bound. After an answer that carried nothing (the peer's durable frontier
// lags the one it reported) the next learn request waits a tick, so that
// such answers cannot loop at network speed. It reports whether the answer
// ended the outstanding request.
func (c *Catchup) OnResponse(now, peer, seq uint64, empty bool) bool {
	if o := c.out; o != nil && !o.snap && o.peer == peer && o.seq == seq {
		c.out = nil
		if empty {
			c.quietUntil = now + 1
		}
		return true
	}
	return false
}

// NeedBase notes that peer answered a learn request with its base: the
// values asked for are gone there. Only the answer to the outstanding
// request (OnResponse true) may say so: a late refusal from a peer given up
// on (a Timeout, a report) would turn a fetch under way to that peer, and
// the chunk of the peer asked would be ignored. The node fetches the base from it, from
// user index nextIndex (where its own log ends) or from where an earlier
// fetch got to.
func (c *Catchup) NeedBase(peer, nextIndex uint64) {
	if c.fetch == nil {
		c.fetch = &fetch{index: nextIndex}
	}
	c.fetch.peer, c.fetch.index = peer, max(c.fetch.index, nextIndex)
}

// Fetching reports whether a base is being fetched.
func (c *Catchup) Fetching() bool { return c.fetch != nil }

// OnChunk takes a chunk of a base (a SnapResp). A chunk that does not answer
// the outstanding request exactly is ignored. It returns the user entries to
// store, and, with the last chunk, the base to install. applied and
// nextIndex are the node's own; a base not ahead of applied ends the fetch.
func (c *Catchup) OnChunk(m core.Message, applied, nextIndex uint64) (stage []core.Entry, install *core.Snapshot) {
	f := c.fetch
	if f == nil || m.Snap == nil || m.From != f.peer || m.Instance != f.base || m.End != f.index || m.After != f.after {
		return nil, nil
	}
	if c.out != nil && c.out.snap && c.out.peer == m.From {
		c.out = nil // the chunk answers the outstanding request exactly
	}
	ch := m.Snap
	if ch.State.Applied <= applied {
		c.fetch = nil // the peer's base is no help: learn normally
		return nil, nil
	}
	if ch.State.Applied != f.base {
		// A new base (the peer trimmed again, or another peer): its rows
		// start over. Entries are the same in every base, but if some were
		// skipped this one may need them: then start from the own log's end.
		f.base, f.after, f.rows = ch.State.Applied, 0, nil
		if f.gap {
			f.index, f.gap = nextIndex, false
			return nil, nil
		}
	}
	start := max(f.index, ch.State.FirstIndex)
	if start < ch.State.NextIndex {
		for k, e := range ch.Entries {
			if e.Index != start+uint64(k) || e.Index >= ch.State.NextIndex {
				return nil, nil // malformed: ask again
			}
		}
		if len(ch.Entries) > 0 {
			f.gap = f.gap || start > f.index
			f.index = start + uint64(len(ch.Entries))
		}
		return ch.Entries, nil
	}
	f.gap = f.gap || start > f.index
	f.index = start
	for _, d := range ch.Dedup {
		if d.ClientID <= f.after {
			f.rows = nil
			f.after = 0
			return nil, nil // out of order: start the rows over
		}
		f.rows = append(f.rows, d)
		f.after = d.ClientID
	}
	if !ch.Done {
		return nil, nil
	}
	c.fetch = nil
	return nil, &core.Snapshot{State: ch.State, Dedup: f.rows}
}

// Tick sends probes on the interval, gives up on a request that timed out,
// and returns messages to send.
func (c *Catchup) Tick(now, applied uint64) []core.Message {
	c.track(now, applied)
	var msgs []core.Message
	if c.out != nil && now-c.out.sent >= c.cfg.Timeout {
		c.failedUntil[c.out.peer] = now + c.cfg.Timeout
		if c.fetch != nil && c.fetch.peer == c.out.peer {
			c.fetch.peer = 0 // a learn request finds another peer with a base
		}
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
		if !c.ahead(now, applied) {
			// Not behind: the fetch is no help. A peer still ahead that
			// is no source for now (reported down, failed to answer)
			// keeps it: once it is, the fetch resumes where it stood.
			c.fetch = nil
		}
		return nil
	}
	if !c.behind {
		c.behind, c.behindSince = true, now
	}
	if c.out != nil {
		return nil
	}
	if f := c.fetch; f != nil && f.peer != 0 {
		c.out = &request{peer: f.peer, from: applied, sent: now, snap: true}
		return []core.Message{{Type: core.MsgSnapReq, To: f.peer, Instance: f.base, End: f.index, After: f.after}}
	}
	if best-applied <= c.cfg.Slack && now-c.behindSince < c.cfg.Grace || now < c.quietUntil {
		return nil
	}
	peer := c.source(now, applied)
	c.seq++
	c.out = &request{peer: peer, from: applied, sent: now, seq: c.seq}
	return []core.Message{{Type: core.MsgLearnReq, To: peer, Instance: applied, End: applied + c.cfg.Batch, After: c.seq}}
}
