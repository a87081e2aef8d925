// The live dedup table on disk: rows as of the last fold, and deltas.

package storage

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/syndtr/goleveldb/leveldb"

	"github.com/paxosd/paxosd/core"
)

// A Save at many clients changes one dedup row per append (the appending
// client's, rewritten whole), and a goleveldb memtable insert costs by the
// number of records more than by their bytes (the skip list's search). So a
// Save writes the rows its Ready changed as one record, the delta
// y/<n> (n counting up), and d/<client> holds each row as of the last fold;
// Load applies the deltas over the rows, in order. A Save that would write
// the foldEvery-th delta, or leave foldRows rows changed since the last
// fold, folds instead: in the same batch it writes every
// row changed since the last fold (the store keeps them, encoded) into d/,
// deletes the deltas, and writes its own rows into d/. An install replaces
// the rows and drops the deltas.
//
// A delta's payload: the count of rows (uvarint), then per row its client
// ID (uvarint) and 0 for a row deleted or 1 + the length of the row's
// encoding (uvarint) followed by that encoding (encodeDedup).
var foldEvery uint64 = 256

// foldRows bounds the rows changed since the last fold: a Save that would
// keep more folds, so that a fold writes at most about foldRows rows (a few
// hundred KiB; at 100,000 clients changed, a fold of them all took seconds),
// and the store and a Backup hold at most that many rows of deltas.
var foldRows = 1024

// dedupDeltas is what the store knows of the deltas on disk.
type dedupDeltas struct {
	first, next uint64            // the deltas on disk are y/first up to y/next-1
	changed     map[uint64][]byte // rows changed since the last fold, encoded; nil: deleted
	pending     []rowChange       // the rows of a delta not written yet (commit adds them to changed)
}

// commit is dd once the batch that putDedup filled is written.
func (dd dedupDeltas) commit() dedupDeltas {
	for _, c := range dd.pending {
		dd.changed[c.client] = c.row
	}
	dd.pending = nil
	return dd
}

// rowChange is one row a Ready changed, encoded (nil: deleted).
type rowChange struct {
	client uint64
	row    []byte
}

// appendDelta appends the delta of rows to dst.
func appendDelta(dst []byte, rows []rowChange) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(rows)))
	for _, r := range rows {
		dst = binary.AppendUvarint(dst, r.client)
		if r.row == nil {
			dst = binary.AppendUvarint(dst, 0)
			continue
		}
		dst = binary.AppendUvarint(dst, uint64(len(r.row))+1)
		dst = append(dst, r.row...)
	}
	return dst
}

// deltaSize bounds the length of appendDelta's encoding of rows.
func deltaSize(rows []rowChange) int {
	size := binary.MaxVarintLen64
	for _, r := range rows {
		size += 2*binary.MaxVarintLen64 + len(r.row)
	}
	return size
}

// decodeDelta decodes and checks a delta's rows (each as decodeDedup does;
// a deleted row has Deleted set).
func decodeDelta(b []byte) ([]core.DedupEntry, error) {
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return nil, fmt.Errorf("%w: dedup delta: bad count", errRecord)
	}
	b = b[n:]
	rows := make([]core.DedupEntry, 0, count)
	for range count {
		client, n := binary.Uvarint(b)
		if n <= 0 || client == 0 {
			return nil, fmt.Errorf("%w: dedup delta: bad client ID", errRecord)
		}
		b = b[n:]
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n)+1 {
			return nil, fmt.Errorf("%w: dedup delta: bad row length", errRecord)
		}
		b = b[n:]
		if l == 0 {
			rows = append(rows, core.DedupEntry{ClientID: client, Deleted: true})
			continue
		}
		d, err := decodeDedup(client, b[:l-1])
		if err != nil {
			return nil, err
		}
		rows = append(rows, d)
		b = b[l-1:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: dedup delta: %d bytes after its rows", errRecord, len(b))
	}
	return rows, nil
}

// putDedup adds to b the rows rd.Dedup changed (as a delta sealed with z, or with a fold)
// and returns the deltas as they are once b is written; s.dd stays as it is
// until then. dd is s.dd, or what an install in the same batch left of it.
func (s *Store) putDedup(b *leveldb.Batch, z *sealer, dd dedupDeltas, rows []core.DedupEntry) dedupDeltas {
	if len(rows) == 0 {
		return dd
	}
	// A Ready holds a row for each append it applied, so a client that
	// appended many times in it has many: only its last one is written.
	last := make(map[uint64]int, len(rows))
	for i, d := range rows {
		last[d.ClientID] = i
	}
	changes := make([]rowChange, 0, len(last))
	for i, d := range rows {
		if last[d.ClientID] != i {
			continue
		}
		c := rowChange{client: d.ClientID}
		if !d.Deleted {
			c.row = encodeDedup(d)
		}
		changes = append(changes, c)
	}
	if dd.next-dd.first+1 < foldEvery && len(dd.changed)+len(changes) < foldRows {
		k := key(prefixDelta, dd.next)
		z.put(b, k, deltaSize(changes), func(v []byte) []byte { return appendDelta(v, changes) })
		changed := dd.changed
		if changed == nil {
			changed = map[uint64][]byte{}
		}
		return dedupDeltas{first: dd.first, next: dd.next + 1, changed: changed, pending: changes}
	}
	// Fold: every row changed since the last fold, then this Ready's (which
	// go over them), into d/; the deltas go.
	for _, c := range slices.Sorted(maps.Keys(dd.changed)) {
		putRow(b, c, dd.changed[c])
	}
	for _, c := range changes {
		putRow(b, c.client, c.row)
	}
	for n := dd.first; n < dd.next; n++ {
		b.Delete(key(prefixDelta, n))
	}
	return dedupDeltas{first: dd.next, next: dd.next}
}

func putRow(b *leveldb.Batch, client uint64, row []byte) {
	k := key(prefixDedup, client)
	if row == nil {
		b.Delete(k)
		return
	}
	b.Put(k, seal(k, row))
}

// readDeltas reads the deltas out of r: the rows they hold, each as the
// last delta left it (Deleted: deleted), and the deltas' range.
func (s *Store) readDeltas(r reader) (over map[uint64]core.DedupEntry, first, next uint64, err error) {
	it := r.NewIterator(prefixRange(prefixDelta), nil)
	defer it.Release()
	for it.Next() {
		_, n, ok := parseKey(it.Key())
		payload, err := unseal(it.Key(), it.Value())
		if err == nil && !ok {
			err = fmt.Errorf("%w: bad key", errRecord)
		}
		if err == nil && over != nil && n != next {
			err = fmt.Errorf("%w: dedup delta %d follows delta %d: the ones between are missing", errRecord, n, next-1)
		}
		var delta []core.DedupEntry
		if err == nil {
			delta, err = decodeDelta(payload)
		}
		if err != nil {
			return nil, 0, 0, s.recordError(append([]byte{}, it.Key()...), err)
		}
		if over == nil {
			over, first = map[uint64]core.DedupEntry{}, n
		}
		next = n + 1
		for _, d := range delta {
			over[d.ClientID] = d
		}
	}
	if err := it.Error(); err != nil {
		return nil, 0, 0, s.readError(err)
	}
	return over, first, next, nil
}

// loadDeltas sets s.dd from the deltas on disk.
func (s *Store) loadDeltas() error {
	over, first, next, err := s.readDeltas(s.db)
	if err != nil {
		return err
	}
	s.dd = dedupDeltas{first: first, next: next}
	if over != nil {
		s.dd.changed = make(map[uint64][]byte, len(over))
		for c, d := range over {
			if d.Deleted {
				s.dd.changed[c] = nil
			} else {
				s.dd.changed[c] = encodeDedup(d)
			}
		}
	}
	return nil
}

// liveDedup reads the live dedup table out of r: the rows of d/ with the
// deltas applied over them, in client ID order.
func (s *Store) liveDedup(r reader) ([]core.DedupEntry, error) {
	rows, err := s.dedupRows(r, prefixDedup)
	if err != nil {
		return nil, err
	}
	over, _, _, err := s.readDeltas(r)
	if err != nil || over == nil {
		return rows, err
	}
	live := make(map[uint64]core.DedupEntry, len(rows)+len(over))
	for _, d := range rows {
		live[d.ClientID] = d
	}
	for c, d := range over {
		if d.Deleted {
			delete(live, c)
		} else {
			live[c] = d
		}
	}
	rows = rows[:0]
	for _, c := range slices.Sorted(maps.Keys(live)) {
		rows = append(rows, live[c])
	}
	return rows, nil
}
