// Chosen values on disk. A Save writes the value of each instance it applies
// (peers catching up read them back), and the user entries that value put in
// the log (blocks.go). The entries are most of its bytes, so a chosen record
// leaves out those it finds in the log: the same bytes, at consecutive
// indexes of the Ready's applied entries, at or above the first index. A
// read puts them back from the blocks. Every byte of an append then goes
// through goleveldb's journal, memtable and compactions twice (accepted
// value, entries) rather than three times.
//
// The record of such a value is chosenRef, the index of the first entry it
// leaves out, the number of commands and, per command, how many entries of
// the log are its own (0: none, or they are in the record), then the value
// with those entries left out (core's encoding). A record that leaves out
// nothing is core's encoding of the value, as in format 4 and before.
//
// The entries stay as long as the record: the base only moves with a trim
// (or an install), which drops the chosen values below it, and every value
// applied after a trim put its entries at or above the trim's first index.
// A record whose entries are missing is corruption.

package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/paxosd/paxosd/core"
)

// chosenRef begins the payload of a chosen record that leaves entries out;
// a full record begins with core's value encoding version instead
// (TestChosenRefTag).
const chosenRef = 0xcf

// logRef says where the entries a chosen record leaves out are: from index
// first, counts[i] of them for command i (0 for a command whose entries, if
// any, are in the record). A nil counts leaves out nothing.
type logRef struct {
	first  uint64
	counts []uint64
}

// total is the number of entries r leaves out.
func (r logRef) total() uint64 {
	var n uint64
	for _, c := range r.counts {
		n += c
	}
	return n
}

// logMatcher finds, for a Ready's chosen values taken in instance order,
// the entries each put in the log: it walks the Ready's applied entries
// (index order) and takes a user command's entries from them when they are
// the next ones, byte for byte. A command that applied nothing (a duplicate,
// a failed condition) does not match and is kept whole; if its entries
// happen to equal the next ones, a reference to those is as good.
type logMatcher struct {
	ents  []core.Entry // the applied entries not matched yet
	first uint64       // the first index after the Ready: entries below it may go
}

// match returns the log reference of v's record and moves past the entries
// it takes.
func (m *logMatcher) match(v core.Value) logRef {
	var r logRef
	var taken uint64
	for i, c := range v.Commands {
		n := len(c.Entries)
		if c.Kind != core.CmdUser || n == 0 || n > len(m.ents) {
			continue
		}
		at := m.ents[0].Index
		if taken > 0 && at != r.first+taken {
			continue
		}
		same := true
		for k, e := range c.Entries {
			if m.ents[k].Index != at+uint64(k) || !bytes.Equal(m.ents[k].Data, e) {
				same = false
				break
			}
		}
		if !same {
			continue
		}
		m.ents = m.ents[n:]
		if at < m.first {
			continue // trimmed by this Ready: the record keeps them, and the values after it match on
		}
		if r.counts == nil {
			r.first, r.counts = at, make([]uint64, len(v.Commands))
		}
		r.counts[i] = uint64(n)
		taken += uint64(n)
	}
	return r
}

// recordSize is about the size of the payload of v's record with log
// reference r (at least it).
func (r logRef) recordSize(v core.Value) int {
	n := v.Size()
	if r.counts == nil {
		return n
	}
	for i, c := range r.counts {
		if c > 0 {
			for _, e := range v.Commands[i].Entries {
				n -= len(e)
			}
		}
	}
	return n + (len(r.counts)+3)*binary.MaxVarintLen64
}

// appendChosen appends to dst the payload of the chosen record of v with
// log reference r.
func appendChosen(dst []byte, v core.Value, r logRef) []byte {
	if r.counts == nil {
		return core.AppendValue(dst, v)
	}
	dst = append(dst, chosenRef)
	dst = binary.AppendUvarint(dst, r.first)
	dst = binary.AppendUvarint(dst, uint64(len(r.counts)))
	for _, c := range r.counts {
		dst = binary.AppendUvarint(dst, c)
	}
	left := core.Value{Commands: slices.Clone(v.Commands)}
	for i, c := range r.counts {
		if c > 0 {
			left.Commands[i].Entries = nil
		}
	}
	return core.AppendValue(dst, left)
}

// chosenRecord is a decoded chosen record: the value, without the entries
// ref leaves out.
type chosenRecord struct {
	iv  core.InstanceValue
	ref logRef
}

func decodeChosen(instance uint64, b []byte) (chosenRecord, error) {
	var r logRef
	if len(b) > 0 && b[0] == chosenRef {
		b = b[1:]
		var ok bool
		var n uint64
		if r.first, b, ok = uvarint(b); ok {
			n, b, ok = uvarint(b)
		}
		if !ok || n == 0 || n > uint64(len(b)) {
			return chosenRecord{}, fmt.Errorf("%w: bad chosen value reference", errRecord)
		}
		r.counts = make([]uint64, n)
		var total uint64
		for i := range r.counts {
			if r.counts[i], b, ok = uvarint(b); !ok || total+r.counts[i] < total {
				return chosenRecord{}, fmt.Errorf("%w: bad chosen value reference", errRecord)
			}
			total += r.counts[i]
		}
		if total == 0 || r.first+total < r.first {
			return chosenRecord{}, fmt.Errorf("%w: chosen value reference to %d entries at %d", errRecord, total, r.first)
		}
	}
	v, err := core.DecodeValue(b)
	if err != nil {
		return chosenRecord{}, fmt.Errorf("%w: %w", errRecord, err)
	}
	if r.counts != nil {
		if len(r.counts) != len(v.Commands) {
			return chosenRecord{}, fmt.Errorf("%w: chosen value of %d commands with a reference for %d", errRecord, len(v.Commands), len(r.counts))
		}
		for i, c := range r.counts {
			if cmd := v.Commands[i]; c > 0 && (cmd.Kind != core.CmdUser || len(cmd.Entries) != 0) {
				return chosenRecord{}, fmt.Errorf("%w: chosen value command %d (%d entries of kind %d) with entries in the log", errRecord, i, len(cmd.Entries), cmd.Kind)
			}
		}
	}
	return chosenRecord{iv: core.InstanceValue{Instance: instance, Value: v}, ref: r}, nil
}

func uvarint(b []byte) (uint64, []byte, bool) {
	x, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, false
	}
	return x, b[n:], true
}

// logFiller puts back the entries chosen records leave out, reading the
// log of one snapshot; consecutive records read on with one cursor.
type logFiller struct {
	s    *Store
	snap reader
	st   *core.ApplyState // the snapshot's apply state, read at the first use
	cur  *entryCursor
}

// fill puts into r's value the entries its reference leaves out.
func (f *logFiller) fill(r *chosenRecord) error {
	total := r.ref.total()
	if total == 0 {
		return nil
	}
	if f.st == nil {
		st, err := f.s.getState(f.snap, metaState)
		if err != nil {
			return err
		}
		f.st = &st
	}
	if st := f.st; r.ref.first < st.FirstIndex || r.ref.first+total > st.NextIndex {
		return f.s.fail(corruptError(f.s.dir, "record "+keyName(key(prefixChosen, r.iv.Instance)),
			fmt.Errorf("its entries [%d,%d) are outside the log [%d,%d)", r.ref.first, r.ref.first+total, st.FirstIndex, st.NextIndex)))
	}
	if f.cur == nil || f.cur.next != r.ref.first {
		if err := f.close(); err != nil {
			return err
		}
		f.cur = f.s.entryCursor(f.snap, *f.st, r.ref.first)
	}
	for i, n := range r.ref.counts {
		if n == 0 {
			continue
		}
		es := make([][]byte, n)
		for k := range es {
			e, ok := f.cur.Next()
			if !ok {
				if f.cur.err == nil {
					f.cur.err = f.s.missingEntry(f.cur.next, *f.st)
				}
				return f.close()
			}
			es[k] = e.Data
		}
		r.iv.Value.Commands[i].Entries = es
	}
	return nil
}

// close releases the cursor, returning its error.
func (f *logFiller) close() error {
	if f.cur == nil {
		return nil
	}
	err := f.cur.close()
	f.cur = nil
	return err
}
