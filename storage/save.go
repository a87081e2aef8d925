// Saving a Ready: its records in one batch, the trims behind cursors, and
// the background compaction that follows them.

package storage

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/instance"
)

// trimChunk bounds the user entries, and separately the chosen values, one
// Save deletes; a variable so tests can exercise the chunking.
var trimChunk uint64 = 10000

// acceptedDeletesByKey is the most accepted values one Save deletes by key,
// without looking for them; more are looked for (a range after a catch-up
// may hold few or none). A variable so tests can exercise both ways.
var acceptedDeletesByKey uint64 = 64

// SetPeerIncarnation records the incarnation of peer id, synced: it returns
// nil only once the record is durable. A failed write fails the store.
func (s *Store) SetPeerIncarnation(id, incarnation uint64) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	k := key(prefixPeer, id)
	b := new(leveldb.Batch)
	b.Put(k, seal(k, encodeUint(incarnation)))
	if err := s.write(b, true); err != nil {
		return s.fail(fmt.Errorf("write of peer %d's incarnation: %w", id, err))
	}
	return nil
}

// Save persists rd's records in one goleveldb batch (synced if
// rd.MustSync()), in this order: the promise (if non-zero) and the accepted
// values; for an install, the replacement of the whole dedup table by the
// installed rows (dropping the dedup deltas); the chosen values, the user
// entries (Entries and Staged, those not stored yet, in blocks), the dedup
// rows (as a delta, or with a fold: dedup.go) and the apply state (if
// non-nil); the new base (state and dedup rows, replacing the old ones). In
// the same batch it deletes the accepted values below State.Applied and
// continues deleting chosen values below the base and the blocks of user
// entries wholly below State.FirstIndex (at most trimChunk of each per
// Save). It returns nil only when the batch is written (and durable if
// synced). After any write error the store is failed and every later call
// returns ErrFailed.
func (s *Store) Save(rd *instance.Ready) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()

	st, writeState := s.state, rd.State != nil
	switch {
	case rd.State != nil:
		st = *rd.State
	case rd.Install != nil:
		// The core sets State whenever it installs; should it not, the
		// installed state is the state.
		st, writeState = rd.Install.State, true
	}
	baseApplied := s.baseApplied
	if rd.Base != nil {
		baseApplied = rd.Base.State.Applied
	}
	b, z := &s.batch, &s.sealer
	b.Reset()
	defer func() {
		// A large Save (entries of many MiB) does not pin its buffers.
		if cap(b.Dump()) > reuseBytes {
			*b = leveldb.Batch{}
		}
		z.trim(reuseBytes)
	}()
	put := func(k, payload []byte) { b.Put(k, seal(k, payload)) }
	dd := s.dd
	if rd.Promised != 0 {
		put(key(prefixMeta, metaPromise), encodeUint(uint64(rd.Promised)))
	}
	for _, a := range rd.Accepted {
		if a.Instance >= st.Applied { // else it is applied already: nothing to keep
			k := key(prefixAccepted, a.Instance)
			z.put(b, k, binary.MaxVarintLen64+a.Value.Size(), func(v []byte) []byte { return appendAccepted(v, a) })
		}
	}
	if rd.Install != nil {
		// The installed table replaces the live one whole: a row this node
		// has and the base has not would be a client the cluster forgot.
		// The dedup rows below, for instances after the base, go over it.
		if err := s.deleteAll(b, prefixDedup); err != nil {
			return err
		}
		if err := s.deleteAll(b, prefixDelta); err != nil {
			return err
		}
		for _, d := range rd.Install.Dedup {
			put(key(prefixDedup, d.ClientID), encodeDedup(d))
		}
		dd = dedupDeltas{first: dd.next, next: dd.next}
	}
	inLog := logMatcher{ents: rd.Entries, first: st.FirstIndex}
	for _, c := range rd.Chosen {
		ref := inLog.match(c.Value) // for every value, to walk the entries in step
		// A value below the base (applied in the Ready whose trim made the
		// base) is not kept: the chosen-value deletion below only sees
		// what earlier Saves wrote, and would pass it by for ever.
		if c.Instance >= baseApplied {
			k := key(prefixChosen, c.Instance)
			z.put(b, k, ref.recordSize(c.Value), func(v []byte) []byte { return appendChosen(v, c.Value, ref) })
		}
	}
	ents := rd.Entries
	if len(rd.Staged) > 0 {
		ents = append(slices.Clone(rd.Staged), rd.Entries...)
	}
	entryBytes, entryEnd, err := s.putEntries(b, ents, st.FirstIndex)
	if err != nil {
		return err
	}
	dd = s.putDedup(b, z, dd, rd.Dedup)
	if writeState {
		put(key(prefixMeta, metaState), encodeState(st))
	}
	if rd.Base != nil {
		put(key(prefixMeta, metaBase), encodeState(rd.Base.State))
		if err := s.deleteAll(b, prefixBase); err != nil {
			return err
		}
		for _, d := range rd.Base.Dedup {
			put(key(prefixBase, d.ClientID), encodeDedup(d))
		}
	}

	// Accepted values of instances now applied: a few (the usual Save, one
	// instance or a handful) by key, with no walk through goleveldb, since
	// deleting a key never written only costs a tombstone; a longer range
	// (a catch-up, an install) by a walk, so that only the keys that exist
	// are deleted.
	accLow := s.accLow
	if st.Applied > accLow && st.Applied-accLow <= acceptedDeletesByKey {
		for i := accLow; i < st.Applied; i++ {
			b.Delete(key(prefixAccepted, i))
		}
		accLow = st.Applied
	}
	if st.Applied > accLow {
		it := s.db.NewIterator(&util.Range{Start: key(prefixAccepted, accLow), Limit: key(prefixAccepted, st.Applied)}, nil)
		for it.Next() {
			b.Delete(append([]byte{}, it.Key()...))
		}
		it.Release()
		if err := it.Error(); err != nil {
			return s.fail(fmt.Errorf("reading accepted records to delete: %w", err))
		}
		accLow = st.Applied
	}

	// Chosen values below the base and user entries below the first index,
	// a chunk at a time.
	chosenCursor, err := s.trimRange(b, prefixChosen, s.chosenCursor, baseApplied)
	if err != nil {
		return err
	}
	if chosenCursor != s.chosenCursor {
		put(key(prefixMeta, metaChosen), encodeUint(chosenCursor))
	}
	cursor, trimmedTo := s.trimCursor, s.trimmedTo
	if st.FirstIndex > trimmedTo {
		var caughtUp bool
		if cursor, caughtUp, err = s.trimEntries(b, cursor, st.FirstIndex); err != nil {
			return err
		}
		if caughtUp {
			trimmedTo = st.FirstIndex
		}
	}
	if cursor != s.trimCursor {
		put(key(prefixMeta, metaTrim), encodeUint(cursor))
	}
	prog, err := s.saveProgress(b, st, entryBytes)
	if err != nil {
		return err
	}

	if err := s.write(b, rd.MustSync()); err != nil {
		return s.fail(fmt.Errorf("write of %d records: %w", b.Len(), err))
	}
	s.accLow, s.trimCursor, s.chosenCursor, s.baseApplied = accLow, cursor, chosenCursor, baseApplied
	s.trimmedTo, s.entryEnd = trimmedTo, entryEnd
	s.dd = dd.commit()
	s.prog = prog
	if writeState {
		s.stateMu.Lock()
		s.state = st
		s.stateMu.Unlock()
	}
	// A deletion that caught up with its target has a range to compact.
	if trimmedTo == st.FirstIndex {
		s.compactTo = cursor
	}
	if chosenCursor == baseApplied {
		s.chosenCompactTo = chosenCursor
	}
	s.startCompaction()
	return nil
}

// deleteAll adds to b the deletion of every key with prefix p.
func (s *Store) deleteAll(b *leveldb.Batch, p byte) error {
	it := s.db.NewIterator(prefixRange(p), nil)
	defer it.Release()
	for it.Next() {
		b.Delete(append([]byte{}, it.Key()...))
	}
	if err := it.Error(); err != nil {
		return s.fail(fmt.Errorf("reading %c/ records to delete: %w", p, err))
	}
	return nil
}

// trimRange adds to b the deletion of at most trimChunk of the keys with
// prefix p in [from, to) and returns the new cursor: the next key left, or
// to when none is. It iterates the keys that exist, not the numbers, so a
// range this node never stored (an install jumps over it) costs nothing.
func (s *Store) trimRange(b *leveldb.Batch, p byte, from, to uint64) (uint64, error) {
	if from >= to {
		return from, nil
	}
	it := s.db.NewIterator(&util.Range{Start: key(p, from), Limit: key(p, to)}, nil)
	defer it.Release()
	next, n := from, uint64(0)
	for it.Next() {
		_, k, ok := parseKey(it.Key())
		if n == trimChunk {
			// Stop at the next key that exists: there is none between.
			if ok {
				next = k
			}
			return next, nil
		}
		b.Delete(append([]byte{}, it.Key()...))
		n++
		if ok {
			next = k + 1
		}
	}
	if err := it.Error(); err != nil {
		return 0, s.fail(fmt.Errorf("reading %c/ records to delete: %w", p, err))
	}
	return to, nil
}

// startCompaction starts a background compaction of the deleted ranges that
// are waiting for one, unless one runs already: then the next Save after it
// ends starts it. A range whose deletion has not caught up yet waits: one
// compaction per caught-up deletion, not one per chunk.
func (s *Store) startCompaction() {
	var rs []util.Range
	if s.compactTo > s.compactFrom {
		rs = append(rs, util.Range{Start: key(prefixBlock, s.compactFrom), Limit: key(prefixBlock, s.compactTo)})
	}
	if s.chosenCompactTo > s.chosenCompactFrom {
		rs = append(rs, util.Range{Start: key(prefixChosen, s.chosenCompactFrom), Limit: key(prefixChosen, s.chosenCompactTo)})
	}
	if len(rs) == 0 || !s.compacting.CompareAndSwap(false, true) {
		return
	}
	s.compactFrom, s.chosenCompactFrom = s.compactTo, s.chosenCompactTo
	s.bg.Add(1)
	go s.compact(rs)
}

// compact reclaims the space of deleted records, off the Save path.
func (s *Store) compact(rs []util.Range) {
	defer s.bg.Done()
	defer s.compacting.Store(false)
	for _, r := range rs {
		if err := s.db.CompactRange(r); err != nil {
			if lerrors.IsCorrupted(err) {
				s.fail(corruptError(s.dir, damagedFiles(err), err))
			}
			return
		}
	}
}
