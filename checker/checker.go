// Package checker decides whether a recorded client history of paxosd is
// consistent with a linearizable, append-only log.
//
// The simulator and the fault tests record every client operation (with its
// invoke and completion times and the outcome the client saw) and, at the end,
// the final log that every node agrees on. The checker judges the servers only
// by that evidence: it never trusts a server's own claims (its logs, its
// metrics, its idea of what was committed) beyond the final log the caller
// passes in, and it never changes the history it is given.
//
// The one invariant it enforces: there is a single sequence of log entries,
// the final log, in which every value that took effect appears exactly once,
// at the index its client was told, in an order that respects real time, and
// every read saw a prefix of that sequence (linearizable reads: a prefix that
// includes everything completed before the read began).
//
// Check is a fast linear pass that looks for specific kinds of violation.
// CheckPorcupine hands the same history to the Porcupine linearizability
// checker, cut into windows at quiescent points, as an independent second
// opinion.
package checker

import (
	"fmt"
	"sort"
	"strings"
)

// Status is the outcome of a completed operation as the client saw it.
type Status int

const (
	// OK means the client got a success reply.
	OK Status = iota
	// Fail means the client got a definite failure: the operation did not
	// and will never take effect.
	Fail
	// Unknown means the client timed out, crashed or lost the reply: the
	// operation may or may not have taken effect.
	Unknown
)

// Kind says what an operation did.
type Kind int

const (
	// Append adds one value to the end of the log.
	Append Kind = iota
	// Read returns a range of log entries.
	Read
)

// Op is one client operation. Times are in any monotonically comparable unit
// (nanoseconds of a real or virtual clock); two operations are concurrent when
// their closed intervals [Invoke, Complete] overlap.
type Op struct {
	Client   int    // client number, for messages
	Kind     Kind   // Append or Read
	Invoke   int64  // when the client sent it
	Complete int64  // when the client saw the outcome (for Unknown: when it gave up)
	Status   Status // outcome as the client saw it

	// Value is the appended value; every append in a history appends a
	// distinct value.
	Value string
	// Index is the log index an OK append was told its value landed at.
	Index uint64

	// Linearizable marks a read that must see every append that completed
	// before it was invoked; other (local) reads may be stale but must still
	// return entries that match the final log.
	Linearizable bool
	// From is the log index of Entries[0] for an OK read.
	From uint64
	// Entries are the values an OK read returned, starting at From.
	Entries []string
	// LastIndex is the server's last applied index when it served the read
	// (-1 for an empty log): the read saw LastIndex+1 entries.
	LastIndex int64
}

// History is a recorded list of client operations, in any order.
type History []Op

// ViolationKind names a class of inconsistency.
type ViolationKind string

const (
	// Lost: an OK append whose value is not at its returned index in the
	// final log.
	Lost ViolationKind = "lost"
	// Duplicated: a value that appears more than once in the final log.
	Duplicated ViolationKind = "duplicated"
	// Phantom: a value in the final log that no append ever tried, or a read
	// result (entry or length) that the final log contradicts.
	Phantom ViolationKind = "phantom"
	// Stale: a linearizable OK read that misses an append that completed OK
	// before the read was invoked, or that saw fewer entries than a
	// linearizable read that completed before it was invoked.
	Stale ViolationKind = "stale"
	// Order: real time broken. An OK append A completed before append B was
	// invoked but index(A) >= index(B); or a read completed before an append
	// was invoked yet already saw that append's entry.
	Order ViolationKind = "order"
	// FailedButPresent: an append the client was told definitely failed
	// whose value is in the final log.
	FailedButPresent ViolationKind = "failed-present"
)

// Violation is one inconsistency found in a history.
type Violation struct {
	Kind   ViolationKind
	Op     int    // index into the history, -1 if none
	Detail string // human-readable: values, indexes, times
}

// Result is the outcome of Check.
type Result struct {
	Violations []Violation
	// Counts over the whole history: operations by kind and by status.
	Appends, Reads, OKs, Fails, Unknowns int
}

// OK reports whether no violation was found.
func (r Result) OK() bool { return len(r.Violations) == 0 }

// maxListed caps the violations that String lists; one bug usually causes
// many, and the first few are what a reader needs.
const maxListed = 20

// String gives one summary line plus one line per violation (at most
// maxListed, then how many more).
func (r Result) String() string {
	var b strings.Builder
	verdict := "consistent"
	if !r.OK() {
		verdict = fmt.Sprintf("%d violation(s)", len(r.Violations))
	}
	fmt.Fprintf(&b, "%d ops (%d appends, %d reads; %d ok, %d failed, %d unknown): %s",
		r.Appends+r.Reads, r.Appends, r.Reads, r.OKs, r.Fails, r.Unknowns, verdict)
	for i, v := range r.Violations {
		if i == maxListed {
			fmt.Fprintf(&b, "\n  ... and %d more", len(r.Violations)-maxListed)
			break
		}
		fmt.Fprintf(&b, "\n  %s (op %d): %s", v.Kind, v.Op, v.Detail)
	}
	return b.String()
}

// at describes what the final log holds at index i, for messages.
func at(final []string, i uint64) string {
	if i >= uint64(len(final)) {
		return fmt.Sprintf("nothing (log has %d entries)", len(final))
	}
	return fmt.Sprintf("%q", final[i])
}

// latestBefore answers "of the ops that completed strictly before time t,
// which has the largest key?" in O(log n) per query. Strictly, because
// intervals are closed: ops that touch at one instant are concurrent.
type latestBefore struct {
	complete []int64 // sorted ascending
	best     []int   // best[k]: op with the largest key among the first k+1
	key      []int64 // key[k]: that op's key
}

type timedKey struct {
	complete, key int64
	op            int
}

func newLatestBefore(xs []timedKey) latestBefore {
	sort.Slice(xs, func(i, j int) bool { return xs[i].complete < xs[j].complete })
	lb := latestBefore{}
	for k, x := range xs {
		lb.complete = append(lb.complete, x.complete)
		if k == 0 || x.key > lb.key[k-1] {
			lb.best, lb.key = append(lb.best, x.op), append(lb.key, x.key)
		} else {
			lb.best, lb.key = append(lb.best, lb.best[k-1]), append(lb.key, lb.key[k-1])
		}
	}
	return lb
}

// query returns the op and key with the largest key among ops completed
// before t, or op -1 if there is none.
func (lb latestBefore) query(t int64) (op int, key int64) {
	n := sort.Search(len(lb.complete), func(i int) bool { return lb.complete[i] >= t })
	if n == 0 {
		return -1, 0
	}
	return lb.best[n-1], lb.key[n-1]
}

// Check runs the linear-time check of h against the final log (final[i] is
// the value at index i). It does no search over interleavings: each rule
// compares an operation with the final log or with the "furthest" operation
// that completed before it began, found by sorting, so it runs in
// O(n log n).
func Check(h History, final []string) Result {
	var r Result
	add := func(k ViolationKind, op int, format string, args ...any) {
		r.Violations = append(r.Violations, Violation{Kind: k, Op: op, Detail: fmt.Sprintf(format, args...)})
	}

	// Which append tried each value. Values are unique per history; should
	// a caller repeat one, the first append wins rather than failing.
	appendOf := make(map[string]int)
	for i, o := range h {
		switch o.Kind {
		case Append:
			r.Appends++
			if _, seen := appendOf[o.Value]; !seen {
				appendOf[o.Value] = i
			}
		case Read:
			r.Reads++
		}
		switch o.Status {
		case OK:
			r.OKs++
		case Fail:
			r.Fails++
		default:
			r.Unknowns++
		}
	}
	opOf := func(v string) int {
		if i, ok := appendOf[v]; ok {
			return i
		}
		return -1
	}

	// Where each value sits in the final log (first occurrence).
	pos := make(map[string]uint64, len(final))
	for i, v := range final {
		if first, dup := pos[v]; dup {
			add(Duplicated, opOf(v), "value %q at index %d and again at index %d", v, first, i)
			continue
		}
		pos[v] = uint64(i)
		if _, tried := appendOf[v]; !tried {
			add(Phantom, -1, "final log index %d holds %q, which no append in the history tried", i, v)
		}
	}

	// Per-op checks against the final log, and the index each append that
	// took effect has: OK ones claim theirs; for the rest the final log says.
	effIndex := make(map[int]uint64)
	var okAppends, linReads []timedKey
	for i, o := range h {
		switch {
		case o.Kind == Append && o.Status == OK:
			effIndex[i] = o.Index
			okAppends = append(okAppends, timedKey{o.Complete, int64(o.Index), i})
			if o.Index >= uint64(len(final)) || final[o.Index] != o.Value {
				where := "nowhere in the final log"
				if p, ok := pos[o.Value]; ok {
					where = fmt.Sprintf("at index %d instead", p)
				}
				add(Lost, i, "client %d append %q acknowledged at index %d (t=%d..%d), but the final log has %s there; the value is %s",
					o.Client, o.Value, o.Index, o.Invoke, o.Complete, at(final, o.Index), where)
			}
		case o.Kind == Append:
			p, present := pos[o.Value]
			if present {
				effIndex[i] = p
			}
			if present && o.Status == Fail {
				add(FailedButPresent, i, "client %d append %q was told it failed (t=%d..%d) but the final log holds it at index %d",
					o.Client, o.Value, o.Invoke, o.Complete, p)
			}
		case o.Kind == Read && o.Status == OK:
			for k, v := range o.Entries {
				idx := o.From + uint64(k)
				if idx >= uint64(len(final)) || final[idx] != v {
					add(Phantom, i, "client %d read (t=%d..%d) returned %q at index %d, but the final log has %s there",
						o.Client, o.Invoke, o.Complete, v, idx, at(final, idx))
					break
				}
				// An entry cannot be read before its append was even sent.
				if a := opOf(v); a >= 0 && h[a].Invoke > o.Complete {
					add(Order, i, "client %d read completed at t=%d but returned %q (index %d), whose append (op %d) was invoked later at t=%d",
						o.Client, o.Complete, v, idx, a, h[a].Invoke)
					break
				}
			}
			if o.Linearizable {
				linReads = append(linReads, timedKey{o.Complete, o.LastIndex, i})
				if o.LastIndex >= int64(len(final)) {
					add(Phantom, i, "client %d linearizable read (t=%d..%d) saw last index %d, but the final log has only %d entries",
						o.Client, o.Invoke, o.Complete, o.LastIndex, len(final))
				}
			}
		}
	}

	// Real-time rules: compare each op with the op of largest index that
	// completed before it was invoked.
	appendsBefore := newLatestBefore(okAppends)
	readsBefore := newLatestBefore(linReads)
	for i, o := range h {
		switch {
		case o.Kind == Append:
			idx, took := effIndex[i]
			if !took {
				continue
			}
			if a, ai := appendsBefore.query(o.Invoke); a >= 0 && a != i && ai >= int64(idx) {
				add(Order, i, "append %q (op %d, index %d) completed at t=%d before append %q was invoked at t=%d, yet the latter has the lower-or-equal index %d",
					h[a].Value, a, ai, h[a].Complete, o.Value, o.Invoke, idx)
			}
			if rd, last := readsBefore.query(o.Invoke); rd >= 0 && last >= int64(idx) {
				add(Order, i, "linearizable read (op %d) completed at t=%d already saw last index %d, but append %q at index %d was only invoked at t=%d",
					rd, h[rd].Complete, last, o.Value, idx, o.Invoke)
			}
		case o.Kind == Read && o.Status == OK && o.Linearizable:
			if a, ai := appendsBefore.query(o.Invoke); a >= 0 && ai > o.LastIndex {
				add(Stale, i, "client %d linearizable read invoked at t=%d saw last index %d, missing append %q (op %d) at index %d that completed at t=%d",
					o.Client, o.Invoke, o.LastIndex, h[a].Value, a, ai, h[a].Complete)
			}
			if rd, last := readsBefore.query(o.Invoke); rd >= 0 && rd != i && last > o.LastIndex {
				add(Stale, i, "client %d linearizable read invoked at t=%d saw last index %d, below last index %d seen by read op %d that completed at t=%d",
					o.Client, o.Invoke, o.LastIndex, last, rd, h[rd].Complete)
			}
		}
	}
	return r
}
