package storage

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/core"
)

// Backup is a consistent view of the live state of a store, for a backup
// (paxosd snapshot save): the apply state, the user entries
// [State.FirstIndex, State.NextIndex) and the dedup table, all as of one
// Save. It holds one goleveldb snapshot until Release, so Saves that trim or
// append meanwhile change nothing it returns (goleveldb keeps what the
// snapshot sees until it is released).
type Backup struct {
	s    *Store
	snap *leveldb.Snapshot
	// State is the live apply state the view holds.
	State core.ApplyState
	// Rows is the number of rows in the dedup table.
	Rows int
	// The view's dedup deltas (at most about foldRows rows): they go over
	// the d/ rows as Dedup pages through them.
	over     map[uint64]core.DedupEntry
	overKeys []uint64 // over's clients, ascending
}

// Backup opens a consistent view of the live state. Release it when done.
func (s *Store) Backup() (*Backup, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	snap, err := s.db.GetSnapshot()
	if err != nil {
		return nil, s.readError(err)
	}
	b := &Backup{s: s, snap: snap}
	if b.State, err = s.getState(snap, metaState); err != nil {
		snap.Release()
		return nil, err
	}
	if b.Rows, err = b.countRows(); err != nil {
		snap.Release()
		return nil, err
	}
	return b, nil
}

// countRows reads the view's deltas and counts the rows of its table: the
// d/ rows, less those a delta deleted, plus the clients a delta added.
func (b *Backup) countRows() (int, error) {
	over, _, _, err := b.s.readDeltas(b.snap)
	if err != nil {
		return 0, err
	}
	b.over, b.overKeys = over, slices.Sorted(maps.Keys(over))
	n := 0
	it := b.snap.NewIterator(prefixRange(prefixDedup), nil)
	for it.Next() {
		n++
	}
	it.Release()
	if err := it.Error(); err != nil {
		return 0, b.s.readError(err)
	}
	for _, c := range b.overKeys {
		in, err := b.snap.Has(key(prefixDedup, c), nil)
		if err != nil {
			return 0, b.s.readError(err)
		}
		switch {
		case in && b.over[c].Deleted:
			n--
		case !in && !b.over[c].Deleted:
			n++
		}
	}
	return n, nil
}

// Release lets goleveldb drop what only the view kept.
func (b *Backup) Release() { b.snap.Release() }

// Entries returns the user entries of the view from index from (at least
// State.FirstIndex) below State.NextIndex, at most maxCount of them and
// stopping before their data would exceed maxBytes, but at least one when
// there is one.
func (b *Backup) Entries(from uint64, maxCount, maxBytes int) ([]core.Entry, error) {
	done, err := b.s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	if from < b.State.FirstIndex {
		return nil, &TrimmedError{First: b.State.FirstIndex}
	}
	size := 0
	ents, _, err := b.s.snapEntries(b.snap, b.State, from, func(n, add int) bool {
		if n > 0 && (maxCount > 0 && n >= maxCount || maxBytes > 0 && size+add > maxBytes) {
			return true
		}
		size += add
		return false
	})
	return ents, err
}

// Dedup returns the view's dedup rows of clients above after, in client ID
// order, at most max of them (all when max is not positive), and whether
// rows are left after them. The rows are the view's own: a caller may
// append to the slice but must not change the rows in it.
func (b *Backup) Dedup(after uint64, max int) (rows []core.DedupEntry, more bool, err error) {
	done, err := b.s.enter()
	if err != nil {
		return nil, false, err
	}
	defer done()
	if after == math.MaxUint64 {
		return nil, false, nil // no client ID lies above
	}
	// Merge the d/ rows above after with the deltas' rows, which win.
	keys := b.overKeys[sort.Search(len(b.overKeys), func(i int) bool { return b.overKeys[i] > after }):]
	it := b.snap.NewIterator(&util.Range{Start: key(prefixDedup, after+1), Limit: []byte{prefixDedup + 1}}, nil)
	defer it.Release()
	stored := it.Next()
	for stored || len(keys) > 0 {
		var d core.DedupEntry
		_, c, _ := parseKey(it.Key())
		if !stored || len(keys) > 0 && keys[0] <= c {
			if stored && keys[0] == c {
				stored = it.Next() // the delta's row replaces the stored one
			}
			d, keys = b.over[keys[0]], keys[1:]
			if d.Deleted {
				continue
			}
		} else {
			if d, err = decodeDedupKV(it.Key(), it.Value()); err != nil {
				return nil, false, b.s.recordError(append([]byte{}, it.Key()...), err)
			}
			stored = it.Next()
		}
		if max > 0 && len(rows) == max {
			return rows, true, nil
		}
		rows = append(rows, d)
	}
	if err := it.Error(); err != nil {
		return nil, false, b.s.readError(err)
	}
	return rows, false, nil
}

// snapEntries reads the user entries from index from below st.NextIndex out
// of snap, in order, while full(entries so far, the next one's
// core.SnapEntrySize) is false; it reports whether full stopped it. An
// entry missing below st.NextIndex is corruption. Snapshot (a base, for
// catch-up) and Backup (the live state) share it.
func (s *Store) snapEntries(snap *leveldb.Snapshot, st core.ApplyState, from uint64, full func(n, add int) bool) ([]core.Entry, bool, error) {
	if from >= st.NextIndex {
		return nil, false, nil
	}
	var out []core.Entry
	c := s.entryCursor(snap, st, from)
	stopped := false
	for {
		e, ok := c.Next()
		if !ok {
			break
		}
		if stopped = full(len(out), core.SnapEntrySize(e)); stopped {
			break
		}
		out = append(out, e)
	}
	if err := c.close(); err != nil {
		return nil, false, err
	}
	return out, stopped, nil
}

// snapRows reads the dedup rows under prefix (the live table or the
// base's) of clients above after out of snap, in client ID order, while
// full(rows so far, the next one's core.SnapRowSize) is false; more reports
// whether full stopped it.
func (s *Store) snapRows(snap *leveldb.Snapshot, prefix byte, after uint64, full func(n, add int) bool) (rows []core.DedupEntry, more bool, err error) {
	if after == math.MaxUint64 {
		return nil, false, nil // no client ID lies above
	}
	it := snap.NewIterator(&util.Range{Start: key(prefix, after+1), Limit: []byte{prefix + 1}}, nil)
	defer it.Release()
	for it.Next() {
		d, err := decodeDedupKV(it.Key(), it.Value())
		if err != nil {
			return nil, false, s.recordError(it.Key(), err)
		}
		if more = full(len(rows), core.SnapRowSize(d)); more {
			break
		}
		rows = append(rows, d)
	}
	if err := it.Error(); err != nil {
		return nil, false, s.readError(err)
	}
	return rows, more, nil
}

// ErrNotEmpty: Restore refuses a data directory that holds anything.
var ErrNotEmpty = errors.New("storage: the data directory is not empty")

// restoreBatchBytes is how much Restorer.Entry buffers before a write.
const restoreBatchBytes = 4 << 20

// Restorer seeds a new data directory from a backup (paxosd snapshot
// restore): Restore creates it, Entry writes the user entries in order,
// Finish writes the state and the dedup table and puts the directory in
// place. Until Finish returns, dir itself is untouched: everything is
// written to a sibling directory (dir + ".restoring") that Finish renames
// to dir, so a restore that stops half way leaves no directory a server
// would start from.
type Restorer struct {
	s        *Store
	dir, tmp string
	st       core.ApplyState
	next     uint64
	b        *leveldb.Batch
	run      []core.Entry // entries not yet in b
	bytes    int          // bytes of entries not yet written, with entryOverhead each
	total    uint64       // entry bytes written
}

// Restore starts seeding dir, which must be missing or empty, as the
// directory of meta (cluster ID, node ID, K) holding the state st: the
// entries [st.FirstIndex, st.NextIndex) follow through Entry. The new
// directory draws its own incarnation, as any new directory does. A
// leftover dir + ".restoring" of a restore that did not finish is removed
// first.
func Restore(dir string, meta Meta, st core.ApplyState) (*Restorer, error) {
	dir = filepath.Clean(dir)
	switch ents, err := os.ReadDir(dir); {
	case err == nil && len(ents) > 0:
		return nil, fmt.Errorf("%w: %s holds %d files; restore seeds a new member's directory, so give a missing or empty one", ErrNotEmpty, dir, len(ents))
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("storage: %w", err)
	}
	if st.FirstIndex > st.NextIndex {
		return nil, fmt.Errorf("storage: restore: first index %d above next index %d", st.FirstIndex, st.NextIndex)
	}
	tmp := dir + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("storage: removing the leftover of an unfinished restore: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	s, err := Open(tmp, meta, Options{})
	if err != nil {
		return nil, err
	}
	return &Restorer{s: s, dir: dir, tmp: tmp, st: st, next: st.FirstIndex, b: new(leveldb.Batch)}, nil
}

// Entry adds the next user entry (index FirstIndex, then one more each
// call). Entries are written in batches, without an fsync: Finish syncs.
func (r *Restorer) Entry(data []byte) error {
	if r.next >= r.st.NextIndex {
		return fmt.Errorf("storage: restore: entry %d is past the state's next index %d", r.next, r.st.NextIndex)
	}
	r.run = append(r.run, core.Entry{Index: r.next, Data: append([]byte(nil), data...)})
	r.next++
	r.total += uint64(len(data))
	r.bytes += len(data) + entryOverhead
	if r.bytes >= restoreBatchBytes {
		return r.flush(false)
	}
	return nil
}

func (r *Restorer) flush(sync bool) error {
	putRun(r.b, &r.s.sealer, r.run)
	r.run = r.run[:0]
	if err := r.s.write(r.b, sync); err != nil {
		return fmt.Errorf("storage: restore: write: %w", err)
	}
	r.b.Reset()
	r.bytes = 0
	return nil
}

// Finish checks that every entry came, writes the dedup table (rows in
// any order, one per client) as both the live table and the base's, the
// state as both the live state and the base (a peer behind it installs
// it, as after a trim), the deletion cursors at the state's first index
// and applied instance, and progress rows at both ends of the log (all of
// it applied by the state's log time), all in one synced write; then closes the store and
// renames it to dir.
func (r *Restorer) Finish(rows []core.DedupEntry) error {
	if r.next != r.st.NextIndex {
		return fmt.Errorf("storage: restore: %d entries written, the state says %d", r.next-r.st.FirstIndex, r.st.NextIndex-r.st.FirstIndex)
	}
	put := func(k, payload []byte) { r.b.Put(k, seal(k, payload)) }
	seen := make(map[uint64]bool, len(rows))
	for _, d := range rows {
		if d.ClientID == 0 || seen[d.ClientID] {
			return fmt.Errorf("storage: restore: dedup row of client %d is zero or repeated", d.ClientID)
		}
		seen[d.ClientID] = true
		put(key(prefixDedup, d.ClientID), encodeDedup(d))
		put(key(prefixBase, d.ClientID), encodeDedup(d))
	}
	put(key(prefixMeta, metaState), encodeState(r.st))
	put(key(prefixMeta, metaBase), encodeState(r.st))
	put(key(prefixMeta, metaTrim), encodeUint(r.st.FirstIndex))
	put(key(prefixMeta, metaChosen), encodeUint(r.st.Applied))
	// Progress rows for retention: the entries hold total bytes, and all
	// were applied by the snapshot's log time.
	if r.st.NextIndex > r.st.FirstIndex {
		put(key(prefixProgress, r.st.FirstIndex), encodeProgress(progressRow{}))
		put(key(prefixProgress, r.st.NextIndex), encodeProgress(progressRow{logTime: r.st.LogTime, bytes: r.total}))
	}
	if err := r.flush(true); err != nil {
		return err
	}
	if err := r.s.Close(); err != nil {
		return fmt.Errorf("storage: restore: close: %w", err)
	}
	if err := os.Remove(r.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("storage: restore: %w", err) // not empty any more
	}
	if err := os.Rename(r.tmp, r.dir); err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	return syncDir(filepath.Dir(r.dir))
}

// Incarnation is the new directory's incarnation, drawn by Restore.
func (r *Restorer) Incarnation() uint64 { return r.s.Incarnation() }

// Abort closes and removes the unfinished directory.
func (r *Restorer) Abort() {
	r.s.Close()
	os.RemoveAll(r.tmp)
}

// syncDir fsyncs a directory, so that a rename in it is durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("storage: sync %s: %w", dir, err)
	}
	return nil
}
