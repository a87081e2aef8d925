// The user log on disk: entries in blocks, one record per run of
// consecutive indexes that one Save writes, so that an append of many
// entries, or a Save applying many appends, costs one goleveldb record and
// not one per entry (a record's cost in the memtable and in every later
// compaction is mostly per record, not per byte).

package storage

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/iterator"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/core"
)

// blockBytes bounds the entry data of one block (an entry larger than it
// has a block of its own), so a read of one entry copies at most about this
// much.
const blockBytes = 1 << 20

// entryOverhead is about what an entry costs in memory beside its data
// (its core.Entry), for bounds on entries held before a write.
const entryOverhead = 40

// putBlock adds to b the block of ents under k, sealed with z. A block's
// payload: the number of entries (uvarint), then each entry's
// length (uvarint) and data. Its key is its first entry's index. Blocks
// never overlap, and every index in [State.FirstIndex, State.NextIndex) is
// in one; a block holding the first index may begin below it (the trim
// deletes whole blocks only).
func putBlock(b *leveldb.Batch, z *sealer, k []byte, ents []core.Entry) {
	n := binary.MaxVarintLen64
	for _, e := range ents {
		n += binary.MaxVarintLen64 + len(e.Data)
	}
	z.put(b, k, n, func(v []byte) []byte {
		v = binary.AppendUvarint(v, uint64(len(ents)))
		for _, e := range ents {
			v = binary.AppendUvarint(v, uint64(len(e.Data)))
			v = append(v, e.Data...)
		}
		return v
	})
}

// blockCount returns the number of entries of a block's payload.
func blockCount(payload []byte) (uint64, error) {
	n, k := binary.Uvarint(payload)
	if k <= 0 {
		return 0, fmt.Errorf("%w: bad block count", errRecord)
	}
	if n == 0 || n > uint64(len(payload)-k) {
		return 0, fmt.Errorf("%w: block count %d in %d bytes", errRecord, n, len(payload))
	}
	return n, nil
}

// decodeBlock decodes the payload of the block whose first index is first.
// The entries' data alias payload.
func decodeBlock(first uint64, payload []byte) ([]core.Entry, error) {
	n, err := blockCount(payload)
	if err != nil {
		return nil, err
	}
	if first+n < first {
		return nil, fmt.Errorf("%w: block of %d entries at %d overflows", errRecord, n, first)
	}
	_, k := binary.Uvarint(payload)
	b := payload[k:]
	ents := make([]core.Entry, n)
	for i := range ents {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: entry %d of block %d: bad length", errRecord, first+uint64(i), first)
		}
		end := k + int(l)
		ents[i] = core.Entry{Index: first + uint64(i), Data: b[k:end:end]}
		b = b[end:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: block %d: %d trailing bytes", errRecord, first, len(b))
	}
	return ents, nil
}

// blockAt reads the block under the iterator's key: its first index and
// number of entries.
func (s *Store) blockAt(it iterator.Iterator) (first, count uint64, err error) {
	_, first, _ = parseKey(it.Key())
	payload, err := unseal(it.Key(), it.Value())
	if err == nil {
		count, err = blockCount(payload)
	}
	if err != nil {
		return 0, 0, s.recordError(append([]byte{}, it.Key()...), err)
	}
	return first, count, nil
}

// seekBlock moves it to the last block starting at or before index i or,
// when every block begins after i, to the first one; false when there is no
// block at all.
func seekBlock(it iterator.Iterator, i uint64) bool {
	if it.Seek(key(prefixBlock, i)) {
		if _, first, _ := parseKey(it.Key()); first == i {
			return true
		}
		return it.Prev() || it.First()
	}
	return it.Last()
}

// entryCursor reads the user entries of state st in index order, from an
// index on. It decodes a block an entry at a time, in place, and copies
// only the entries it returns.
type entryCursor struct {
	s    *Store
	it   iterator.Iterator
	st   core.ApplyState
	next uint64 // index of the next entry
	end  uint64 // one past the current block's last index
	blk  []byte // the current block's entries from next on (aliasing the iterator's value)
	read bool   // a block was read
	err  error
}

func (s *Store) entryCursor(r reader, st core.ApplyState, from uint64) *entryCursor {
	return &entryCursor{s: s, it: r.NewIterator(prefixRange(prefixBlock), nil), st: st, next: from}
}

// Next returns the next entry; false at the end of the state's log or on
// an error (close returns it).
func (c *entryCursor) Next() (core.Entry, bool) {
	if c.err != nil || c.next >= c.st.NextIndex || c.next >= c.end && !c.load() {
		return core.Entry{}, false
	}
	data, ok := c.take()
	if !ok {
		return core.Entry{}, false
	}
	e := core.Entry{Index: c.next, Data: bytes.Clone(data)}
	c.next++
	if c.next == c.end && len(c.blk) != 0 {
		c.corrupt(fmt.Errorf("%w: %d trailing bytes", errRecord, len(c.blk)))
	}
	return e, true
}

// take decodes the next entry's data out of the block.
func (c *entryCursor) take() ([]byte, bool) {
	l, k := binary.Uvarint(c.blk)
	if k <= 0 || l > uint64(len(c.blk)-k) {
		c.corrupt(fmt.Errorf("%w: entry %d: bad length", errRecord, c.next))
		return nil, false
	}
	data := c.blk[k : k+int(l)]
	c.blk = c.blk[k+int(l):]
	return data, true
}

func (c *entryCursor) corrupt(err error) {
	c.err = c.s.recordError(append([]byte{}, c.it.Key()...), err)
}

// load moves to the block holding c.next: the last one starting at or
// before it the first time, the next one after.
func (c *entryCursor) load() bool {
	var ok bool
	if c.read {
		ok = c.it.Next()
	} else {
		ok, c.read = seekBlock(c.it, c.next), true
	}
	if !ok {
		if err := c.it.Error(); err != nil {
			c.err = c.s.readError(err)
		} else {
			c.err = c.s.missingEntry(c.next, c.st)
		}
		return false
	}
	_, first, _ := parseKey(c.it.Key())
	payload, err := unseal(c.it.Key(), c.it.Value())
	var count uint64
	if err == nil {
		count, err = blockCount(payload)
	}
	if err != nil {
		c.corrupt(err)
		return false
	}
	if first > c.next || first+count <= c.next {
		c.err = c.s.missingEntry(c.next, c.st)
		return false
	}
	_, k := binary.Uvarint(payload)
	c.blk, c.end = payload[k:], first+count
	for i := first; i < c.next; i++ { // the entries before the one wanted
		if _, ok := c.take(); !ok {
			return false
		}
	}
	return true
}

func (c *entryCursor) close() error {
	c.it.Release()
	if c.err != nil {
		return c.err
	}
	return c.s.readError(c.it.Error())
}

// missingEntry fails the store: the apply state says entry i exists.
func (s *Store) missingEntry(i uint64, st core.ApplyState) error {
	return s.fail(corruptError(s.dir, fmt.Sprintf("user entry %d", i),
		fmt.Errorf("missing, though the apply state says entries [%d,%d) exist", st.FirstIndex, st.NextIndex)))
}

// putEntries adds to b, in blocks, the entries of ents at or above first
// that the store does not hold yet; ents need not be sorted, and where two
// have one index the earlier one is taken. It returns the bytes of entry
// data it writes and the end of the stored log after b (one past the
// highest index stored).
func (s *Store) putEntries(b *leveldb.Batch, ents []core.Entry, first uint64) (bytes, end uint64, err error) {
	end = s.entryEnd
	byIndex := func(a, b core.Entry) int { return cmp.Compare(a.Index, b.Index) }
	if !slices.IsSortedFunc(ents, byIndex) {
		ents = slices.Clone(ents)
		slices.SortStableFunc(ents, byIndex)
	}
	for k := 1; k < len(ents); k++ {
		if ents[k].Index == ents[k-1].Index {
			ents = slices.CompactFunc(slices.Clone(ents), func(a, b core.Entry) bool { return a.Index == b.Index })
			break
		}
	}
	if i, _ := slices.BinarySearchFunc(ents, first, func(e core.Entry, f uint64) int { return cmp.Compare(e.Index, f) }); i > 0 {
		ents = ents[i:] // below the first index: trimmed by this very Ready
	}
	if len(ents) == 0 {
		return 0, end, nil
	}
	if ents[0].Index < end {
		// Staged entries may come again, and a Ready may stage and apply
		// the same ones. An index of the log holds one entry for ever (the
		// chosen log's), so one stored already is not written again.
		if ents, err = s.unstored(ents); err != nil || len(ents) == 0 {
			return 0, end, err
		}
	}
	for _, e := range ents {
		bytes += uint64(len(e.Data))
	}
	end = max(end, ents[len(ents)-1].Index+1)
	for len(ents) > 0 {
		k := 1
		for k < len(ents) && ents[k].Index == ents[k-1].Index+1 {
			k++
		}
		putRun(b, &s.sealer, ents[:k])
		ents = ents[k:]
	}
	return bytes, end, nil
}

// unstored returns the entries of ents (sorted, one per index) whose
// indexes no stored block holds.
func (s *Store) unstored(ents []core.Entry) ([]core.Entry, error) {
	lo, hi := ents[0].Index, ents[len(ents)-1].Index+1
	out := make([]core.Entry, 0, len(ents))
	it := s.db.NewIterator(prefixRange(prefixBlock), nil)
	defer it.Release()
	for ok := seekBlock(it, lo); ok && len(ents) > 0; ok = it.Next() {
		first, count, err := s.blockAt(it)
		if err != nil {
			return nil, err
		}
		if first >= hi {
			break
		}
		for len(ents) > 0 && ents[0].Index < first+count {
			if ents[0].Index < first {
				out = append(out, ents[0])
			}
			ents = ents[1:]
		}
	}
	if err := it.Error(); err != nil {
		return nil, s.fail(fmt.Errorf("reading user entry blocks: %w", err))
	}
	return append(out, ents...), nil
}

// putRun adds run (consecutive indexes) to b in blocks of at most
// blockBytes of data, sealed with z, and returns its bytes of data.
func putRun(b *leveldb.Batch, z *sealer, run []core.Entry) uint64 {
	var total uint64
	for len(run) > 0 {
		k, size := 0, 0
		for k < len(run) && (k == 0 || size+len(run[k].Data) <= blockBytes) {
			size += len(run[k].Data)
			k++
		}
		kk := key(prefixBlock, run[0].Index)
		putBlock(b, z, kk, run[:k])
		total += uint64(size)
		run = run[k:]
	}
	return total
}

// trimEntries adds to b the deletion of at most trimChunk blocks from the
// cursor from on that lie wholly below first, and returns the new cursor (no
// block begins below it) and whether no such block is left.
func (s *Store) trimEntries(b *leveldb.Batch, from, first uint64) (uint64, bool, error) {
	if from >= first {
		return from, true, nil
	}
	it := s.db.NewIterator(&util.Range{Start: key(prefixBlock, from), Limit: key(prefixBlock, first)}, nil)
	defer it.Release()
	var n uint64
	for it.Next() {
		bf, count, err := s.blockAt(it)
		if err != nil {
			return 0, false, err
		}
		if n == trimChunk {
			return bf, false, nil
		}
		if bf+count > first {
			return bf, true, nil // holds the first index: it stays
		}
		b.Delete(append([]byte{}, it.Key()...))
		n++
	}
	if err := it.Error(); err != nil {
		return 0, false, s.fail(fmt.Errorf("reading user entry blocks to delete: %w", err))
	}
	return first, true, nil
}

// loadEntryEnd finds one past the highest index stored.
func (s *Store) loadEntryEnd() error {
	it := s.db.NewIterator(prefixRange(prefixBlock), nil)
	defer it.Release()
	if it.Last() {
		first, count, err := s.blockAt(it)
		if err != nil {
			return err
		}
		s.entryEnd = first + count
	}
	return s.readError(it.Error())
}
