// Reads of a running store: chosen values for catch-up, user entries, and
// chunks of the base.

package storage

import (
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/core"
)

// Chosen returns the chosen values of instances in [from, to), in instance
// order, stopping at the first instance it does not hold and before the
// encoded values would exceed maxBytes, but returning at least one value when
// there is one. maxBytes <= 0 means no byte limit. It returns none from below
// the base. It implements instance.LogReader.
func (s *Store) Chosen(from, to uint64, maxBytes int) (_ []core.InstanceValue, err error) {
	if from >= to {
		return nil, nil
	}
	snap, release, err := s.view()
	if err != nil {
		return nil, err
	}
	defer release()
	if base, err := s.getState(snap, metaBase); err != nil || from < base.Applied {
		return nil, err // values below the base may be gone, or have their entries trimmed
	}
	var out []core.InstanceValue
	size := 0
	fill := logFiller{s: s, snap: snap}
	defer func() {
		if cerr := fill.close(); err == nil && cerr != nil {
			out, err = nil, cerr
		}
	}()
	it := snap.NewIterator(&util.Range{Start: key(prefixChosen, from), Limit: key(prefixChosen, to)}, nil)
	defer it.Release()
	for it.Next() {
		_, n, _ := parseKey(it.Key())
		if n != from+uint64(len(out)) {
			break // a hole: stop before it
		}
		payload, err := unseal(it.Key(), it.Value())
		if err != nil {
			return nil, s.recordError(it.Key(), err)
		}
		r, err := decodeChosen(n, payload)
		if err != nil {
			return nil, s.recordError(it.Key(), err)
		}
		if err := fill.fill(&r); err != nil {
			return nil, err
		}
		sz := r.iv.Value.Size()
		if maxBytes > 0 && len(out) > 0 && size+sz > maxBytes {
			break
		}
		out = append(out, r.iv)
		size += sz
	}
	if err := it.Error(); err != nil {
		return nil, s.readError(err)
	}
	return out, nil
}

// Entries returns the user entries from index from, in index order, at most
// maxCount of them and stopping before their data would exceed maxBytes, but
// at least one when there is one (a non-positive limit means none on that
// count). A start below the first index is a *TrimmedError (ErrTrimmed); a
// start at or past the end returns no entries and nil. It reads one
// consistent snapshot, so a concurrent Save that trims cannot make it see a
// hole.
func (s *Store) Entries(from uint64, maxCount int, maxBytes int) ([]core.Entry, error) {
	snap, release, err := s.view()
	if err != nil {
		return nil, err
	}
	defer release()
	st, err := s.getState(snap, metaState)
	if err != nil {
		return nil, err
	}
	if from < st.FirstIndex {
		return nil, &TrimmedError{First: st.FirstIndex}
	}
	if from >= st.NextIndex {
		return nil, nil
	}
	var out []core.Entry
	size := 0
	c := s.entryCursor(snap, st, from)
	for maxCount <= 0 || len(out) < maxCount {
		e, ok := c.Next()
		if !ok || maxBytes > 0 && len(out) > 0 && size+len(e.Data) > maxBytes {
			break
		}
		out = append(out, e)
		size += len(e.Data)
	}
	if err := c.close(); err != nil {
		return nil, err
	}
	return out, nil
}

// Snapshot returns a chunk of the base (the last Ready.Base saved; the zero
// base if none was): its State, then the user entries from max(index,
// State.FirstIndex) below State.NextIndex, or, once index is at or past
// State.NextIndex, the base's dedup rows of clients above after (above 0
// when base is not the base's Applied: the asker was fetching another one),
// with Done set when the chunk holds the last row. It returns at most
// maxCount entries or rows and stops before the chunk's Size would exceed
// maxBytes, but returns at least one when there is one (a non-positive
// limit means none on that count). It implements instance.LogReader.
//
// Everything comes from one goleveldb snapshot, so a concurrent Save that
// sets a new base cannot mix two bases in a chunk. The entries of the base
// are all on disk: the first index moves only with a new base, so the trim
// never reaches them while the base is current; a missing one is corruption.
func (s *Store) Snapshot(base, index, after uint64, maxCount, maxBytes int) (core.SnapChunk, error) {
	snap, release, err := s.view()
	if err != nil {
		return core.SnapChunk{}, err
	}
	defer release()
	var ch core.SnapChunk
	if ch.State, err = s.getState(snap, metaBase); err != nil {
		return core.SnapChunk{}, err
	}
	st := ch.State
	size := ch.Size()
	// full reports whether a chunk holding n items has no room for one more
	// of add bytes; else it counts the item in.
	full := func(n, add int) bool {
		if n > 0 && (maxCount > 0 && n >= maxCount || maxBytes > 0 && size+add > maxBytes) {
			return true
		}
		size += add
		return false
	}

	if from := max(index, st.FirstIndex); from < st.NextIndex {
		if ch.Entries, _, err = s.snapEntries(snap, st, from, full); err != nil {
			return core.SnapChunk{}, err
		}
		return ch, nil
	}

	if base != st.Applied {
		after = 0
	}
	var more bool
	if ch.Dedup, more, err = s.snapRows(snap, prefixBase, after, full); err != nil {
		return core.SnapChunk{}, err
	}
	ch.Done = !more
	return ch, nil
}
