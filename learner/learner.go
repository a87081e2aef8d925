// Package learner holds the chosen values a node has learned and applies
// them in instance order to the replicated state: user entries get dense log
// indexes, (client, seq) pairs are deduplicated, lease and trim commands
// change the state and take no index.
//
// It is pure. The invariant it keeps: instances are applied exactly once, in
// order, with no holes, and apply is a deterministic function of the chosen
// values, so every replica computes the same indexes and the same dedup table.
package learner

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/paxosd/paxosd/core"
)

// Result is the outcome of one user command, for the node that proposed it.
type Result struct {
	Origin, Epoch, Req uint64
	First, Last        uint64
	Duplicate          bool
	Err                error
}

// LeaseChange reports an applied lease command.
type LeaseChange struct {
	Holder, Epoch, Start uint64
	OK                   bool // the compare-and-set matched and the lease changed
}

// Applied is what applying one instance did.
type Applied struct {
	Instance uint64
	Value    core.Value
	Entries  []core.Entry
	Results  []Result
	Leases   []LeaseChange
	Dedup    []core.DedupEntry // dedup rows written
	Trimmed  bool              // FirstIndex moved
}

// Learner is the chosen-but-not-applied buffer and the applied state.
type Learner struct {
	state  core.ApplyState
	dedup  map[uint64]core.DedupEntry
	chosen map[uint64]core.Value
	// maxAhead bounds the buffer of values chosen beyond the applied
	// frontier; anything further is relearned by catch-up later.
	maxAhead  uint64
	skipDedup bool
	// clientTTL (ms of LogTime) and maxClients bound the dedup table.
	clientTTL  uint64
	maxClients int
	dupHits    uint64 // duplicates answered from the table since start
}

// Defaults for the dedup table's bounds. Every replica must use the same
// values: they decide what apply does.
const (
	DefaultClientTTL  = uint64(time.Hour / time.Millisecond)
	DefaultMaxClients = 100_000
)

// New returns a learner restored from the durable apply state and dedup table.
func New(state core.ApplyState, dedup []core.DedupEntry, maxAhead uint64) *Learner {
	l := &Learner{state: state, dedup: make(map[uint64]core.DedupEntry, len(dedup)), chosen: map[uint64]core.Value{}, maxAhead: maxAhead,
		clientTTL: DefaultClientTTL, maxClients: DefaultMaxClients}
	for _, d := range dedup {
		l.dedup[d.ClientID] = d
	}
	return l
}

// SetClientLimits changes how long (ms of log time) an idle client's dedup row
// is kept and how many rows there may be. Every replica must use the same.
func (l *Learner) SetClientLimits(ttl uint64, maxClients int) {
	l.clientTTL, l.maxClients = ttl, maxClients
}

// Clients returns the number of rows in the dedup table.
func (l *Learner) Clients() int { return len(l.dedup) }

// DuplicateHits returns how many appends apply answered as duplicates since
// this learner was created.
func (l *Learner) DuplicateHits() uint64 { return l.dupHits }

// PlantSkipDedup makes apply ignore the dedup table. Only for tests that prove
// the simulator catches it.
func (l *Learner) PlantSkipDedup() { l.skipDedup = true }

// State returns the applied state.
func (l *Learner) State() core.ApplyState { return l.state }

// Applied returns the applied frontier: every instance below it is applied.
func (l *Learner) Applied() uint64 { return l.state.Applied }

// Dedup returns the dedup row of a client.
func (l *Learner) Dedup(clientID uint64) (core.DedupEntry, bool) {
	d, ok := l.dedup[clientID]
	return d, ok
}

// Snapshot returns the applied state and the whole dedup table, in client
// ID order: the base a node keeps after a trim. The rows are shared, not
// copied: a row is never changed in place.
func (l *Learner) Snapshot() core.Snapshot {
	s := core.Snapshot{State: l.state, Dedup: make([]core.DedupEntry, 0, len(l.dedup))}
	for _, d := range l.dedup {
		s.Dedup = append(s.Dedup, d)
	}
	slices.SortFunc(s.Dedup, func(a, b core.DedupEntry) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return s
}

// Install replaces the applied state and dedup table with a peer's base,
// which is ahead of this learner, and drops buffered values below it. What
// follows applies on top of it exactly as on the peer.
func (l *Learner) Install(s core.Snapshot) {
	if s.State.Applied <= l.state.Applied {
		panic(fmt.Sprintf("learner: Install of a base at %d, not ahead of applied %d", s.State.Applied, l.state.Applied))
	}
	l.state = s.State
	l.dedup = make(map[uint64]core.DedupEntry, len(s.Dedup))
	for _, d := range s.Dedup {
		l.dedup[d.ClientID] = d
	}
	for i := range l.chosen {
		if i < s.State.Applied {
			delete(l.chosen, i)
		}
	}
}

// Learn records that instance i chose v. It returns false when the fact is
// not new or is too far ahead to buffer.
func (l *Learner) Learn(i uint64, v core.Value) bool {
	if i < l.state.Applied || i >= l.state.Applied+l.maxAhead {
		return false
	}
	if _, ok := l.chosen[i]; ok {
		return false
	}
	l.chosen[i] = v
	return true
}

// Chosen returns the chosen value of a not yet applied instance, if learned.
func (l *Learner) Chosen(i uint64) (core.Value, bool) {
	v, ok := l.chosen[i]
	return v, ok
}

// Pending returns how many chosen values wait for a hole to fill.
func (l *Learner) Pending() int { return len(l.chosen) }

// Ready reports whether the next instance can be applied.
func (l *Learner) Ready() bool {
	_, ok := l.chosen[l.state.Applied]
	return ok
}

// ApplyNext applies the next instance. Call only when Ready.
func (l *Learner) ApplyNext() Applied {
	i := l.state.Applied
	v, ok := l.chosen[i]
	if !ok {
		panic(fmt.Sprintf("learner: ApplyNext at %d without a chosen value", i))
	}
	delete(l.chosen, i)
	out := Applied{Instance: i, Value: v}
	for _, c := range v.Commands {
		switch c.Kind {
		case core.CmdUser:
			out.Results = append(out.Results, l.applyUser(c, &out))
		case core.CmdLease:
			lc := LeaseChange{Holder: c.Holder, Epoch: c.Epoch, Start: c.Start}
			if c.Prev == l.state.LeaseVersion {
				l.state.LeaseHolder, l.state.LeaseVersion, lc.OK = c.Holder, c.Prev+1, true
			}
			out.Leases = append(out.Leases, lc)
			if c.Wall > l.state.LogTime {
				l.state.LogTime = c.Wall
				l.expire(&out)
			}
		case core.CmdTrim:
			before := min(c.Before, l.state.NextIndex)
			if before > l.state.FirstIndex {
				l.state.FirstIndex, out.Trimmed = before, true
			}
			out.Results = append(out.Results, Result{Origin: c.Origin, Epoch: c.Epoch, Req: c.Req, First: l.state.FirstIndex})
		case core.CmdNoop:
		}
	}
	l.state.Applied = i + 1
	return out
}

func (l *Learner) applyUser(c core.Command, out *Applied) Result {
	r := Result{Origin: c.Origin, Epoch: c.Epoch, Req: c.Req}
	if c.ClientID != 0 && !l.skipDedup {
		if d, ok := l.dedup[c.ClientID]; ok {
			for _, s := range d.Recent {
				if s.Seq == c.Seq {
					l.dupHits++
					r.First, r.Last, r.Duplicate = s.First, s.Last, true
					return r
				}
			}
			if c.Seq+core.DedupWindow <= d.Seq() {
				r.Err = core.ErrStaleSeq
				return r
			}
		}
	}
	if c.Expect != 0 && c.Expect-1 != l.state.NextIndex {
		r.First, r.Err = l.state.NextIndex, core.ErrConflict
		return r
	}
	r.First = l.state.NextIndex
	for _, e := range c.Entries {
		out.Entries = append(out.Entries, core.Entry{Index: l.state.NextIndex, Data: e})
		l.state.NextIndex++
	}
	r.Last = l.state.NextIndex - 1
	if c.ClientID != 0 {
		l.remember(c.ClientID, core.SeqIndexes{Seq: c.Seq, First: r.First, Last: r.Last}, out)
	}
	return r
}

// remember records an applied (client, seq) in the client's row: a new slice
// each time, since rows are handed to storage in Readies.
func (l *Learner) remember(client uint64, s core.SeqIndexes, out *Applied) {
	old, ok := l.dedup[client]
	if !ok && len(l.dedup) >= l.maxClients {
		l.evictOldest(out)
	}
	recent := make([]core.SeqIndexes, 0, len(old.Recent)+1)
	inserted := false
	for _, r := range old.Recent {
		if !inserted && s.Seq < r.Seq {
			recent, inserted = append(recent, s), true
		}
		recent = append(recent, r)
	}
	if !inserted {
		recent = append(recent, s)
	}
	high := recent[len(recent)-1].Seq
	k := 0
	for k < len(recent) && recent[k].Seq+core.DedupWindow <= high {
		k++
	}
	d := core.DedupEntry{ClientID: client, Recent: recent[k:], LastUsed: l.state.LogTime}
	l.dedup[client] = d
	out.Dedup = append(out.Dedup, d)
}

// expire deletes the rows of clients idle longer than clientTTL of log time.
func (l *Learner) expire(out *Applied) {
	if l.state.LogTime < l.clientTTL {
		return
	}
	cutoff := l.state.LogTime - l.clientTTL
	var gone []uint64
	for id, d := range l.dedup {
		if d.LastUsed < cutoff {
			gone = append(gone, id)
		}
	}
	slices.Sort(gone) // deterministic Ready contents
	for _, id := range gone {
		delete(l.dedup, id)
		out.Dedup = append(out.Dedup, core.DedupEntry{ClientID: id, Deleted: true})
	}
}

// evictOldest deletes the least recently used row (ties: the lowest ID).
func (l *Learner) evictOldest(out *Applied) {
	var victim core.DedupEntry
	found := false
	for _, d := range l.dedup {
		if !found || d.LastUsed < victim.LastUsed || (d.LastUsed == victim.LastUsed && d.ClientID < victim.ClientID) {
			victim, found = d, true
		}
	}
	if found {
		delete(l.dedup, victim.ClientID)
		out.Dedup = append(out.Dedup, core.DedupEntry{ClientID: victim.ClientID, Deleted: true})
	}
}
