// Package learner holds the chosen values a node has learned and applies
// them in instance order to the replicated state: user entries get dense log
// indexes, (client, seq) pairs are deduplicated, lease and trim commands
// change the state and take no index.
//
// It is pure. The invariant it keeps: instances are applied exactly once, in
// order, with no holes, and apply is a deterministic function of the chosen
// values, so every replica computes the same indexes and the same dedup table.
// The table is bounded (Limits) without ever dropping the row of a client
// that may still retry: log time, which expires rows, moves at most
// LogTimeStep per lease command whatever a master's wall clock says, and at
// the cap a new client is refused rather than evict a row used within the
// retry window (docs/protocol.md §7).
package learner

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/members"
)

// ErrNoMembership refuses a membership change in a state that holds no
// membership (written before it was replicated, by a node that has not
// learned it).
var ErrNoMembership = errors.New("this node's state holds no membership to change")

// Result is the outcome of one user, trim or membership command, for the
// node that proposed it. A membership change's First is the first instance
// it decides.
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
	// Members: the membership changed (a change was applied, or a pending
	// one took effect).
	Members bool
}

// Learner is the chosen-but-not-applied buffer and the applied state.
type Learner struct {
	state core.ApplyState
	// rows is the dedup table by client ID; byUse holds the same rows least
	// recently used first, so that expiry and eviction find the oldest in
	// O(log n).
	rows   map[uint64]*row
	byUse  useOrder
	chosen map[uint64]core.Value
	// maxAhead bounds the buffer of values chosen beyond the applied
	// frontier; anything further is relearned by catch-up later.
	maxAhead    uint64
	limits      Limits
	rules       members.Rules
	skipDedup   bool // planted bug: apply ignores the dedup table
	logTimeJump bool // planted bug: log time takes a lease's wall clock unbounded
	latestOnly  bool // planted bug: the dedup table answers only a client's highest seq
	dupHits     uint64
}

// Limits bound the dedup table and how fast log time may move. Every replica
// must use the same: they decide what apply does.
type Limits struct {
	// ClientTTL: a row idle this long (ms of log time) is deleted.
	ClientTTL uint64
	// ClientRetry: a client must stop retrying one seq within this long (ms
	// of log time) of sending it first. A row is stamped with the log time
	// its latest seq was applied at, so a row used within ClientRetry may
	// still be retried: it is never evicted to make room. Below ClientTTL.
	ClientRetry uint64
	// MaxClients bounds the rows. At the cap, a new client takes the place
	// of the least recently used row if that one is idle past ClientRetry,
	// and is refused with core.ErrTooManyClients otherwise.
	MaxClients int
	// LogTimeStep is the most (ms) one lease command moves log time, however
	// far ahead the wall clock it carries is.
	LogTimeStep uint64
}

// Defaults for Limits.
const (
	DefaultClientTTL = uint64(time.Hour / time.Millisecond)
	// DefaultClientRetry is far longer than the Go client retries one
	// append (10 rounds over the endpoints, at most 5 s per call and 6.55 s
	// of backoff: 4.3 minutes if 5 endpoints all time out, usually far
	// less), even when log time runs ahead of real time at the most a
	// wrong clock can make it (4/3 with the defaults: docs/protocol.md §7).
	DefaultClientRetry = uint64(15 * time.Minute / time.Millisecond)
	DefaultMaxClients  = 100_000
	// DefaultLogTimeStep is a little longer than the time between two
	// renewals with the default lease (750 ms), so that with correct clocks
	// log time follows the master's wall clock, and a clock that runs ahead
	// moves log time at most 4/3 as fast as real time.
	DefaultLogTimeStep = uint64(time.Second / time.Millisecond)
)

// DefaultLimits returns the default Limits.
func DefaultLimits() Limits {
	return Limits{ClientTTL: DefaultClientTTL, ClientRetry: DefaultClientRetry, MaxClients: DefaultMaxClients, LogTimeStep: DefaultLogTimeStep}
}

// New returns a learner restored from the durable apply state and dedup
// table, with DefaultLimits.
func New(state core.ApplyState, dedup []core.DedupEntry, maxAhead uint64) *Learner {
	l := &Learner{state: state, chosen: map[uint64]core.Value{}, maxAhead: maxAhead, limits: DefaultLimits()}
	l.setRows(dedup)
	return l
}

// SetClientLimits changes the limits. Every replica must use the same;
// instance.Config.Validate checks them, so invalid ones are a programming
// error and panic.
func (l *Learner) SetClientLimits(lim Limits) {
	if lim.ClientRetry == 0 || lim.ClientRetry >= lim.ClientTTL || lim.MaxClients < 1 || lim.LogTimeStep == 0 {
		panic(fmt.Sprintf("learner: invalid limits %+v: need 0 < ClientRetry < ClientTTL, MaxClients >= 1, LogTimeStep > 0", lim))
	}
	l.limits = lim
}

// SetMembershipRules sets the rules membership changes apply by (the
// delay before a change decides instances, the ballot stride). Every
// replica must use the same.
func (l *Learner) SetMembershipRules(r members.Rules) { l.rules = r }

// SetMembers sets the membership of a state that has none: the
// configuration of a new cluster, from the node's flags. Only before the
// first instance that changes it applies; a state that has one keeps it.
func (l *Learner) SetMembers(h members.History) {
	if l.state.Members.IsZero() {
		l.state.Members = h
	}
}

// Clients returns the number of rows in the dedup table.
func (l *Learner) Clients() int { return len(l.rows) }

// DuplicateHits returns how many appends apply answered as duplicates since
// this learner was created.
func (l *Learner) DuplicateHits() uint64 { return l.dupHits }

// PlantSkipDedup makes apply ignore the dedup table. Only for tests that prove
// the simulator catches it.
func (l *Learner) PlantSkipDedup() { l.skipDedup = true }

// PlantLogTimeJump makes log time take the largest wall clock of any lease
// command, unbounded (the rule before LogTimeStep): one master whose clock
// runs an hour ahead expires every client at once. Only for tests that prove
// the simulator catches it.
func (l *Learner) PlantLogTimeJump() { l.logTimeJump = true }

// PlantDedupLatestOnly makes the dedup table answer only a client's highest
// seq, as a table keeping one seq per client would: an older seq sent again
// is applied again. Only for tests that prove the simulator catches it.
func (l *Learner) PlantDedupLatestOnly() { l.latestOnly = true }

// State returns the applied state.
func (l *Learner) State() core.ApplyState { return l.state }

// Applied returns the applied frontier: every instance below it is applied.
func (l *Learner) Applied() uint64 { return l.state.Applied }

// Dedup returns the dedup row of a client.
func (l *Learner) Dedup(clientID uint64) (core.DedupEntry, bool) {
	r, ok := l.rows[clientID]
	if !ok {
		return core.DedupEntry{}, false
	}
	return r.DedupEntry, true
}

// Snapshot returns the applied state and the whole dedup table, in client
// ID order: the base a node keeps after a trim. The rows' Recent slices are
// shared, not copied: they are never changed in place.
func (l *Learner) Snapshot() core.Snapshot {
	s := core.Snapshot{State: l.state, Dedup: make([]core.DedupEntry, 0, len(l.rows))}
	for _, r := range l.rows {
		s.Dedup = append(s.Dedup, r.DedupEntry)
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
	l.setRows(s.Dedup)
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
			if t := l.logTimeAfter(c, lc.OK); t > l.state.LogTime {
				l.state.LogTime = t
				l.expire(&out)
			}
		case core.CmdTrim:
			before := min(c.Before, l.state.NextIndex)
			if before > l.state.FirstIndex {
				l.state.FirstIndex, out.Trimmed = before, true
			}
			out.Results = append(out.Results, Result{Origin: c.Origin, Epoch: c.Epoch, Req: c.Req, First: l.state.FirstIndex})
		case core.CmdMember:
			r := Result{Origin: c.Origin, Epoch: c.Epoch, Req: c.Req}
			h, err := l.state.Members.Apply(i, c.Change, l.rules)
			switch {
			case l.state.Members.IsZero():
				r.Err = ErrNoMembership
			case err != nil:
				r.Err = err
			default:
				l.state.Members, out.Members = h, true
				r.First, _ = h.Pending()
			}
			out.Results = append(out.Results, r)
		case core.CmdNoop:
		}
	}
	l.state.Applied = i + 1
	if from, ok := l.state.Members.Pending(); ok && l.state.Applied >= from {
		l.state.Members, out.Members = l.state.Members.Settle(l.state.Applied), true
	}
	return out
}

// logTimeAfter is the log time once lease command c applied (ok: it took
// effect). Log time moves only forward, and by at most LogTimeStep per lease
// command, so that a master whose wall clock is wrong by any amount cannot
// expire, or make evictable, the row of a client that is still retrying
// (docs/protocol.md §7). A lease that did not take effect came from a node
// that is not the master and does not move it.
//
// One exception: while log time is 0 and the table is empty, a new cluster's
// first lease sets log time to its wall clock, whatever it is. That is safe
// because there is no row to expire, and every row created later is stamped
// with the new log time; it happens once in a cluster's life, since log time
// is never 0 again. (Log time 0 with rows happens, when the runtime sets no
// wall clock: then the step holds.)
func (l *Learner) logTimeAfter(c core.Command, ok bool) uint64 {
	now := l.state.LogTime
	switch {
	case l.logTimeJump:
		return max(now, c.Wall)
	case !ok || c.Wall <= now:
		return now
	case now == 0 && len(l.rows) == 0:
		return c.Wall
	case now > ^uint64(0)-l.limits.LogTimeStep:
		return c.Wall // now+step overflows: c.Wall lies between now and the limit
	}
	return min(c.Wall, now+l.limits.LogTimeStep)
}

func (l *Learner) applyUser(c core.Command, out *Applied) Result {
	r := Result{Origin: c.Origin, Epoch: c.Epoch, Req: c.Req}
	var sum uint32
	if c.ClientID != 0 {
		sum = core.EntriesSum(c.Entries)
		known, ok := l.rows[c.ClientID]
		if ok && !l.skipDedup {
			if l.answer(known.DedupEntry, c.Seq, sum, &r) {
				return r
			}
			if c.Seq+core.DedupWindow <= known.Seq() {
				r.Err = core.ErrStaleSeq
				return r
			}
		}
		if !ok && !l.roomForNewClient() {
			r.Err = &core.TooManyClientsError{Max: l.limits.MaxClients}
			return r
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
		l.remember(c.ClientID, core.SeqIndexes{Seq: c.Seq, First: r.First, Last: r.Last, Sum: sum}, out)
	}
	return r
}

// Answered reports whether the dedup table already answers c, a user
// command not yet proposed: its (client, seq) pair applied (r then holds
// where, as Duplicate) or was applied with other entries (r.Err is
// core.ErrSeqReused). Applying c would give the same answer, so a master
// may answer a retry at once instead of queueing it behind every append
// that arrived since: a client whose call timeout is shorter than the
// queue would otherwise never hear that its first attempt applied.
func (l *Learner) Answered(c core.Command) (r Result, ok bool) {
	if c.ClientID == 0 || l.skipDedup {
		return Result{}, false
	}
	known, ok := l.rows[c.ClientID]
	if !ok || !slices.ContainsFunc(known.Recent, func(s core.SeqIndexes) bool { return s.Seq == c.Seq }) {
		return Result{}, false // a new seq, the common case: no checksum to compute twice
	}
	r = Result{Origin: c.Origin, Epoch: c.Epoch, Req: c.Req}
	return r, l.answer(known.DedupEntry, c.Seq, core.EntriesSum(c.Entries), &r)
}

// answer fills r from a client's dedup row if it holds seq.
func (l *Learner) answer(row core.DedupEntry, seq uint64, sum uint32, r *Result) bool {
	for _, s := range row.Recent {
		if s.Seq != seq || l.latestOnly && seq != row.Seq() {
			continue
		}
		if s.Sum != sum {
			r.Err = core.ErrSeqReused
			return true
		}
		l.dupHits++
		r.First, r.Last, r.Duplicate = s.First, s.Last, true
		return true
	}
	return false
}

// roomForNewClient reports whether a new client may get a row: the table is
// below the cap, or its least recently used row is idle past the retry
// window, so its client no longer retries and the row may be evicted.
func (l *Learner) roomForNewClient() bool {
	if len(l.rows) < l.limits.MaxClients {
		return true
	}
	return len(l.byUse) > 0 && l.idlePastRetry(l.byUse[0].LastUsed)
}

func (l *Learner) idlePastRetry(lastUsed uint64) bool {
	return l.state.LogTime >= lastUsed && l.state.LogTime-lastUsed > l.limits.ClientRetry
}

// remember records an applied (client, seq) in the client's row, stamped
// with the current log time: a new Recent slice each time, since rows are
// handed to storage in Readies. A new client at the cap evicts the least
// recently used row (applyUser checked that it may).
func (l *Learner) remember(client uint64, s core.SeqIndexes, out *Applied) {
	old, ok := l.rows[client]
	var oldRecent []core.SeqIndexes
	if ok {
		oldRecent = old.Recent
	} else if len(l.rows) >= l.limits.MaxClients {
		victim := l.byUse[0]
		if !l.idlePastRetry(victim.LastUsed) {
			panic(fmt.Sprintf("learner: evicting client %d, used at log time %d, within the retry window at %d", victim.ClientID, victim.LastUsed, l.state.LogTime))
		}
		l.drop(out)
	}
	recent := make([]core.SeqIndexes, 0, len(oldRecent)+1)
	inserted := false
	for _, r := range oldRecent {
		if r.Seq == s.Seq {
			// Only with the planted skip-dedup, which applies a seq
			// again: the new entry replaces it, so that the row stays a
			// window of distinct seqs that storage can read back.
			continue
		}
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
	if ok {
		moved := old.LastUsed != d.LastUsed
		old.DedupEntry = d
		if moved { // LastUsed only grows: the row moves back in byUse
			heap.Fix(&l.byUse, old.at)
		}
	} else {
		r := &row{DedupEntry: d}
		l.rows[client] = r
		heap.Push(&l.byUse, r)
	}
	out.Dedup = append(out.Dedup, d)
}

// expire deletes the rows of clients idle longer than the TTL of log time,
// least recently used first: O(log n) per row deleted.
func (l *Learner) expire(out *Applied) {
	if l.state.LogTime < l.limits.ClientTTL {
		return
	}
	cutoff := l.state.LogTime - l.limits.ClientTTL
	for len(l.byUse) > 0 && l.byUse[0].LastUsed < cutoff {
		l.drop(out)
	}
}

// drop deletes the least recently used row.
func (l *Learner) drop(out *Applied) {
	r := heap.Pop(&l.byUse).(*row)
	delete(l.rows, r.ClientID)
	out.Dedup = append(out.Dedup, core.DedupEntry{ClientID: r.ClientID, Deleted: true})
}

// setRows replaces the dedup table.
func (l *Learner) setRows(dedup []core.DedupEntry) {
	l.rows = make(map[uint64]*row, len(dedup))
	l.byUse = make(useOrder, 0, len(dedup))
	for _, d := range dedup {
		if _, dup := l.rows[d.ClientID]; dup || d.Deleted {
			panic(fmt.Sprintf("learner: dedup table with client %d twice or deleted", d.ClientID))
		}
		r := &row{DedupEntry: d, at: len(l.byUse)}
		l.rows[d.ClientID] = r
		l.byUse = append(l.byUse, r)
	}
	heap.Init(&l.byUse)
}

// row is one dedup row and its place in byUse.
type row struct {
	core.DedupEntry
	at int
}

// useOrder is a min-heap of rows by (LastUsed, ClientID): a total order, so
// the least recently used row is the same on every replica however its table
// was built (by applying, or loaded from storage in client ID order).
type useOrder []*row

func (u useOrder) Len() int { return len(u) }

func (u useOrder) Less(i, j int) bool {
	a, b := u[i], u[j]
	return a.LastUsed < b.LastUsed || (a.LastUsed == b.LastUsed && a.ClientID < b.ClientID)
}

func (u useOrder) Swap(i, j int) {
	u[i], u[j] = u[j], u[i]
	u[i].at, u[j].at = i, j
}

func (u *useOrder) Push(x any) {
	r := x.(*row)
	r.at = len(*u)
	*u = append(*u, r)
}

func (u *useOrder) Pop() any {
	old := *u
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*u = old[:len(old)-1]
	return r
}
