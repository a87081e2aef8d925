// The live dedup table on disk: rows as of the last fold, and deltas.

package storage

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/bits"
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
// row changed since the last fold (the store keeps them) into d/,
// deletes the deltas, and writes its own rows into d/. An install replaces
// the rows and drops the deltas.
//
// A row that an earlier delta since the last fold holds is written as a
// patch of it: the seqs dropped from its front and those added. A client's
// row holds up to DedupWindow seqs (about 400 bytes) and one append changes
// one or two of them, so the patch is about 20 bytes where the row would
// be 400, and the rows were half the bytes a Save wrote at many clients.
//
// A delta's payload: the count of rows (uvarint), then per row one of
//   - client ID (uvarint, not 0), 0: the row is deleted;
//   - client ID, 1 + the length of the row's encoding (uvarint), the
//     encoding (core.AppendDedup): the row whole;
//   - 0, client ID, the count of seqs dropped from the front of the row as
//     the deltas before left it (uvarint), 1 + the length of a row encoding
//     and the encoding, whose Recent are the seqs added (the row is the
//     seqs kept and added, merged by seq) and whose LastUsed is the row's:
//     a patch.
var foldEvery uint64 = 256

// foldRows bounds the rows changed since the last fold: a Save that would
// keep more folds, so that a fold writes at most about foldRows rows (a few
// hundred KiB; at 100,000 clients changed, a fold of them all took seconds),
// and the store and a Backup hold at most that many rows of deltas.
var foldRows = 1024

// dedupDeltas is what the store knows of the deltas on disk.
type dedupDeltas struct {
	first, next uint64 // the deltas on disk are y/first up to y/next-1
	// changed are the rows changed since the last fold (Deleted: deleted).
	// Their Recent slices are the core's, which it never changes in place
	// (instance.Ready.Dedup).
	changed map[uint64]core.DedupEntry
	pending []rowChange // the rows of a delta not written yet (commit adds them to changed)
}

// commit is dd once the batch that putDedup filled is written.
func (dd dedupDeltas) commit() dedupDeltas {
	for _, c := range dd.pending {
		dd.changed[c.row.ClientID] = c.full
	}
	dd.pending = nil
	return dd
}

// rowChange is one row of a delta. Written, row is the row whole (Deleted:
// deleted) or, with patch set, the patch: LastUsed and the seqs added in
// Recent, drop the seqs dropped. full is the row the change leaves (the
// store's, not encoded; decodeDelta leaves it zero).
type rowChange struct {
	row   core.DedupEntry
	patch bool
	drop  uint64
	full  core.DedupEntry
}

// wholeRow is the change that writes d whole.
func wholeRow(d core.DedupEntry) rowChange { return rowChange{row: d, full: d} }

// patchRow is the change from prev to next as a patch, when next is prev
// with seqs dropped from its front and others added (ok false otherwise).
func patchRow(prev, next core.DedupEntry) (c rowChange, ok bool) {
	old := prev.Recent
	drop := 0
	for drop < len(old) && (len(next.Recent) == 0 || old[drop].Seq < next.Recent[0].Seq) {
		drop++
	}
	// Every seq left of prev must be in next, unchanged; the others are added.
	var added []core.SeqIndexes
	i := drop
	for _, s := range next.Recent {
		switch {
		case i < len(old) && old[i] == s:
			i++
		case i < len(old) && old[i].Seq <= s.Seq:
			return rowChange{}, false // old[i] changed, or went
		default:
			added = append(added, s)
		}
	}
	if i != len(old) {
		return rowChange{}, false
	}
	return rowChange{row: core.DedupEntry{ClientID: next.ClientID, LastUsed: next.LastUsed, Recent: added},
		patch: true, drop: uint64(drop), full: next}, true
}

// applyPatch is the row that patch c leaves of prev, or an error when it
// does not fit it.
func applyPatch(prev core.DedupEntry, c rowChange) (core.DedupEntry, error) {
	if c.drop > uint64(len(prev.Recent)) {
		return core.DedupEntry{}, fmt.Errorf("%w: dedup delta: a patch of client %d drops %d of %d seqs", errRecord, c.row.ClientID, c.drop, len(prev.Recent))
	}
	kept, added := prev.Recent[c.drop:], c.row.Recent
	d := core.DedupEntry{ClientID: c.row.ClientID, LastUsed: c.row.LastUsed, Recent: make([]core.SeqIndexes, 0, len(kept)+len(added))}
	for len(kept) > 0 || len(added) > 0 {
		if len(added) == 0 || (len(kept) > 0 && kept[0].Seq < added[0].Seq) {
			d.Recent, kept = append(d.Recent, kept[0]), kept[1:]
		} else {
			d.Recent, added = append(d.Recent, added[0]), added[1:]
		}
		if n := len(d.Recent); n > 1 && d.Recent[n-1].Seq <= d.Recent[n-2].Seq {
			return core.DedupEntry{}, fmt.Errorf("%w: dedup delta: a patch of client %d adds seq %d twice", errRecord, d.ClientID, d.Recent[n-1].Seq)
		}
	}
	if len(d.Recent) > core.DedupWindow {
		return core.DedupEntry{}, fmt.Errorf("%w: dedup delta: a patch leaves client %d %d seqs", errRecord, d.ClientID, len(d.Recent))
	}
	return d, nil
}

// appendDelta appends the delta of rows to dst.
func appendDelta(dst []byte, rows []rowChange) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(rows)))
	for _, r := range rows {
		switch {
		case r.row.Deleted:
			dst = appendUvarints(dst, r.row.ClientID, 0)
			continue
		case r.patch:
			dst = appendUvarints(dst, 0, r.row.ClientID, r.drop)
		default:
			dst = binary.AppendUvarint(dst, r.row.ClientID)
		}
		dst = binary.AppendUvarint(dst, uint64(dedupSize(r.row))+1)
		dst = core.AppendDedup(dst, r.row)
	}
	return dst
}

// dedupSize is the length of d's encoding (core.AppendDedup).
func dedupSize(d core.DedupEntry) int {
	n := uvarintLen(d.LastUsed) + uvarintLen(uint64(len(d.Recent)))
	for _, s := range d.Recent {
		n += uvarintLen(s.Seq) + uvarintLen(s.First) + uvarintLen(s.Last) + 4
	}
	return n
}

func uvarintLen(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// deltaSize bounds the length of appendDelta's encoding of rows.
func deltaSize(rows []rowChange) int {
	size := binary.MaxVarintLen64
	for _, r := range rows {
		size += 4*binary.MaxVarintLen64 + dedupSize(r.row)
	}
	return size
}

// decodeDelta decodes and checks a delta's rows (each row, and each
// patch's added seqs, as decodeDedup does).
func decodeDelta(b []byte) ([]rowChange, error) {
	bad := false
	uvarint := func() uint64 {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return x
	}
	count := uvarint()
	if bad || count > uint64(len(b)) {
		return nil, fmt.Errorf("%w: dedup delta: bad count", errRecord)
	}
	rows := make([]rowChange, 0, count)
	for range count {
		var c rowChange
		client := uvarint()
		if client == 0 && !bad {
			client, c.patch, c.drop = uvarint(), true, uvarint()
		}
		l := uvarint()
		switch {
		case bad || client == 0:
			return nil, fmt.Errorf("%w: dedup delta: bad client ID", errRecord)
		case c.patch && (l == 0 || c.drop > core.DedupWindow):
			return nil, fmt.Errorf("%w: dedup delta: bad patch of client %d", errRecord, client)
		case l > uint64(len(b))+1:
			return nil, fmt.Errorf("%w: dedup delta: bad row length", errRecord)
		case l == 0:
			c.row = core.DedupEntry{ClientID: client, Deleted: true}
			rows = append(rows, c)
			continue
		}
		d, err := decodeDedup(client, b[:l-1])
		if err != nil {
			return nil, err
		}
		c.row = d
		rows = append(rows, c)
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
	if dd.next-dd.first+1 >= foldEvery || len(dd.changed)+len(last) >= foldRows {
		// Fold: every row changed since the last fold, then this Ready's
		// (which go over them), into d/; the deltas go.
		for _, c := range slices.Sorted(maps.Keys(dd.changed)) {
			putRow(b, dd.changed[c])
		}
		for i, d := range rows {
			if last[d.ClientID] == i {
				putRow(b, d)
			}
		}
		for n := dd.first; n < dd.next; n++ {
			b.Delete(key(prefixDelta, n))
		}
		return dedupDeltas{first: dd.next, next: dd.next}
	}
	changes := make([]rowChange, 0, len(last))
	for i, d := range rows {
		if last[d.ClientID] != i {
			continue
		}
		c := wholeRow(d)
		if prev, ok := dd.changed[d.ClientID]; ok && !prev.Deleted && !d.Deleted {
			if p, ok := patchRow(prev, d); ok {
				c = p
			}
		}
		changes = append(changes, c)
	}
	k := key(prefixDelta, dd.next)
	z.put(b, k, deltaSize(changes), func(v []byte) []byte { return appendDelta(v, changes) })
	changed := dd.changed
	if changed == nil {
		changed = map[uint64]core.DedupEntry{}
	}
	return dedupDeltas{first: dd.first, next: dd.next + 1, changed: changed, pending: changes}
}

func putRow(b *leveldb.Batch, d core.DedupEntry) {
	k := key(prefixDedup, d.ClientID)
	if d.Deleted {
		b.Delete(k)
		return
	}
	b.Put(k, seal(k, encodeDedup(d)))
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
		var delta []rowChange
		if err == nil {
			delta, err = decodeDelta(payload)
		}
		if over == nil {
			over, first = map[uint64]core.DedupEntry{}, n
		}
		for i := 0; i < len(delta) && err == nil; i++ {
			c := delta[i]
			if !c.patch {
				over[c.row.ClientID] = c.row
				continue
			}
			prev, ok := over[c.row.ClientID]
			if !ok || prev.Deleted {
				err = fmt.Errorf("%w: dedup delta: a patch of client %d, whose row no earlier delta holds", errRecord, c.row.ClientID)
				break
			}
			over[c.row.ClientID], err = applyPatch(prev, c)
		}
		if err != nil {
			return nil, 0, 0, s.recordError(append([]byte{}, it.Key()...), err)
		}
		next = n + 1
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
	s.dd = dedupDeltas{first: first, next: next, changed: over}
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
