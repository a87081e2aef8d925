package storage

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/syndtr/goleveldb/leveldb"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

func logEntry(i uint64) core.Entry {
	return core.Entry{Index: i, Data: []byte(fmt.Sprintf("entry-%d", i))}
}

func logEntries(from, to uint64) []core.Entry {
	var es []core.Entry
	for i := from; i < to; i++ {
		es = append(es, logEntry(i))
	}
	return es
}

// checkLog reads [first, next) back and checks every entry.
func checkLog(t *testing.T, s *Store, first, next uint64) {
	t.Helper()
	es, err := s.Entries(first, 0, 0)
	if err != nil {
		t.Fatalf("Entries(%d): %v", first, err)
	}
	if uint64(len(es)) != next-first {
		t.Fatalf("Entries(%d): %d entries, want %d", first, len(es), next-first)
	}
	for k, e := range es {
		if want := logEntry(first + uint64(k)); e.Index != want.Index || !bytes.Equal(e.Data, want.Data) {
			t.Fatalf("entry %d is %d %q", first+uint64(k), e.Index, e.Data)
		}
	}
	// From every index on, one at a time: each start finds its block.
	for i := first; i < next; i++ {
		if es, err := s.Entries(i, 1, 0); err != nil || len(es) != 1 || !bytes.Equal(es[0].Data, logEntry(i).Data) {
			t.Fatalf("Entries(%d, 1): %v %v", i, es, err)
		}
	}
}

// TestBlocksOverlap: staged entries ahead of the log, stored again, applied
// again over them and across the gap before them, end up stored once each:
// every read finds its entry, and blocks never overlap.
func TestBlocksOverlap(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	save(t, s, instance.Ready{Entries: logEntries(0, 10), State: &core.ApplyState{Applied: 1, NextIndex: 10}})
	// A base being fetched from 20 on: a gap [10, 20).
	save(t, s, instance.Ready{Staged: logEntries(20, 25)})
	save(t, s, instance.Ready{Staged: logEntries(23, 30)}) // again, in part
	if s.entryEnd != 30 {
		t.Fatalf("stored log ends at %d, want 30", s.entryEnd)
	}
	// Applied after all, over the gap and the staged run, with some
	// entries staged once more in the same Ready, out of order.
	save(t, s, instance.Ready{
		Entries: logEntries(10, 35),
		Staged:  append(logEntries(28, 31), logEntries(12, 14)...),
		State:   &core.ApplyState{Applied: 2, NextIndex: 35},
	})
	checkLog(t, s, 0, 35)
	if n := entriesOnDisk(t, s, 0, 100); n != 35 {
		t.Fatalf("%d entries on disk, want 35: some stored twice", n)
	}
	s.Close()
	s = openT(t, dir, Options{})
	if s.entryEnd != 35 {
		t.Fatalf("after reopen the stored log ends at %d, want 35", s.entryEnd)
	}
	checkLog(t, s, 0, 35)
	// A trim to the middle of a block keeps the block; reads below the
	// first index are refused, and the rest read on.
	save(t, s, instance.Ready{State: &core.ApplyState{Applied: 3, NextIndex: 35, FirstIndex: 22}})
	if n := entriesOnDisk(t, s, 0, 22); n == 0 || n >= 22 {
		t.Fatalf("%d entries below the first index on disk: want the blocks wholly below it gone and the one holding it kept", n)
	}
	if _, err := s.Entries(21, 0, 0); err == nil {
		t.Fatal("read below the first index")
	}
	checkLog(t, s, 22, 35)
}

// TestBlockSize: a Save of more than blockBytes of entries writes several
// blocks, an entry larger than blockBytes one of its own.
func TestBlockSize(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	big := make([]byte, blockBytes+1)
	ents := []core.Entry{{Index: 0, Data: []byte("a")}, {Index: 1, Data: big}, {Index: 2, Data: []byte("b")}}
	for i := uint64(3); i < 3+3*blockBytes/(64<<10); i++ {
		ents = append(ents, core.Entry{Index: i, Data: make([]byte, 64<<10)})
	}
	next := uint64(len(ents))
	save(t, s, instance.Ready{Entries: ents, State: &core.ApplyState{Applied: 1, NextIndex: next}})
	if n := countKeys(t, s, prefixBlock, 0, next); n < 4 {
		t.Fatalf("%d blocks", n)
	}
	it := s.db.NewIterator(prefixRange(prefixBlock), nil)
	defer it.Release()
	for it.Next() {
		if len(it.Value()) > blockBytes+64<<10+64 && !bytes.Contains(it.Value(), big[:1024]) {
			t.Fatalf("block %s of %d bytes", keyName(it.Key()), len(it.Value()))
		}
	}
	es, err := s.Entries(0, 0, 0)
	if err != nil || uint64(len(es)) != next || len(es[1].Data) != len(big) {
		t.Fatalf("read back: %d entries, %v", len(es), err)
	}
}

// TestUpgradeFormat2: a directory of format 2 (one record per entry) opens
// as format 3 with every entry read back, also when a crash cut the upgrade
// after its first write.
func TestUpgradeFormat2(t *testing.T) {
	defer func(n uint64) { upgradeBatchEntries = n }(upgradeBatchEntries)
	upgradeBatchEntries = 7
	for _, cut := range []bool{false, true} {
		t.Run(fmt.Sprintf("cut=%t", cut), func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			// Format 2: entries [3, 40) one record each, and 1, below the
			// first index, that the trim has not deleted yet.
			st := core.ApplyState{Applied: 5, FirstIndex: 5, NextIndex: 40}
			save(t, s, instance.Ready{State: &st})
			put := func(k, payload []byte) {
				if err := s.db.Put(k, seal(k, payload), nil); err != nil {
					t.Fatal(err)
				}
			}
			put(key(prefixEntryV2, 1), logEntry(1).Data)
			for i := uint64(3); i < 40; i++ {
				put(key(prefixEntryV2, i), logEntry(i).Data)
			}
			put(key(prefixMeta, metaTrim), encodeUint(1)) // the trim's deletion under way
			put(key(prefixMeta, metaIdentity), append([]byte{2}, encodeIdentity(testMeta)[1:]...))
			if cut {
				b := s.db // one write of the upgrade, then a crash
				batch := new(leveldb.Batch)
				if _, done, err := s.convertEntries(batch); err != nil || done {
					t.Fatalf("first batch: done %t, %v", done, err)
				}
				if err := b.Write(batch, nil); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			s = openT(t, dir, Options{})
			if n := countKeys(t, s, prefixEntryV2, 0, 100); n != 0 {
				t.Fatalf("%d format 2 records left", n)
			}
			v, err := s.db.Get(key(prefixMeta, metaIdentity), nil)
			if err != nil || v[4] != formatVersion {
				t.Fatalf("identity after the upgrade: %x %v", v, err)
			}
			checkLog(t, s, 5, 40)
			save(t, s, instance.Ready{Entries: logEntries(40, 45), State: &core.ApplyState{Applied: 6, FirstIndex: 5, NextIndex: 45}})
			save(t, s, instance.Ready{State: &core.ApplyState{Applied: 7, FirstIndex: 30, NextIndex: 45}})
			checkLog(t, s, 30, 45)
			if n := entriesOnDisk(t, s, 0, 30); n != 0 {
				t.Fatalf("%d entries below the first index left after the trim", n)
			}
		})
	}
}

// TestBlocksStagedWithNoBlockBefore: staged entries stored while no block
// begins at or before the log's end, then applied over and past them. The
// check for entries already stored must find the staged block though no
// block lies before the run's start; else a block overlapping it is
// written and a read inside the overlap past the staged block fails.
func TestBlocksStagedWithNoBlockBefore(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	save(t, s, instance.Ready{Staged: logEntries(5, 8)})
	save(t, s, instance.Ready{Entries: logEntries(0, 10), State: &core.ApplyState{Applied: 1, NextIndex: 10}})
	checkLog(t, s, 0, 10)
	if n := entriesOnDisk(t, s, 0, 100); n != 10 {
		t.Fatalf("%d entries on disk, want 10: some stored twice", n)
	}
}

// TestReadOneOfABigBlock: a read of one entry of a block of many does not
// decode or copy the block's entries (reads copy only the entries they
// return).
func TestReadOneOfABigBlock(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	const n = 20000
	save(t, s, instance.Ready{Entries: logEntries(0, n), State: &core.ApplyState{Applied: 1, NextIndex: n}})
	if c := countKeys(t, s, prefixBlock, 0, n); c != 1 {
		t.Fatalf("%d blocks, want 1", c)
	}
	if _, err := s.Entries(n/2, 1, 0); err != nil { // warm the block cache
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	es, err := s.Entries(n/2, 1, 0)
	runtime.ReadMemStats(&after)
	if err != nil || len(es) != 1 || !bytes.Equal(es[0].Data, logEntry(n/2).Data) {
		t.Fatalf("Entries(%d, 1): %v %v", n/2, es, err)
	}
	// goleveldb copies a record it steps back onto (seekBlock's Prev):
	// that one copy of the block, and no more.
	v, err := s.db.Get(key(prefixBlock, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(len(v)+64<<10); got > limit {
		t.Fatalf("reading one entry of a block of %d bytes allocated %d bytes, want at most %d", len(v), got, limit)
	}
}

// blockPayload is the payload of the block of ents.
func blockPayload(ents []core.Entry) []byte {
	var z sealer
	putBlock(new(leveldb.Batch), &z, key(prefixBlock, 0), ents)
	return z.buf[4:]
}

// TestSaveKeepsSmallBuffers: Save reuses its batch and sealing buffer from
// one write to the next, but lets go of them after a write of entries
// larger than reuseBytes.
func TestSaveKeepsSmallBuffers(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	st := core.ApplyState{Applied: 1, NextIndex: 1}
	save(t, s, instance.Ready{Entries: logEntries(0, 1), State: &st})
	if cap(s.batch.Dump()) == 0 || cap(s.sealer.buf) == 0 {
		t.Fatalf("after a small Save: batch %d, sealer %d bytes kept; want both kept", cap(s.batch.Dump()), cap(s.sealer.buf))
	}
	big := bytes.Repeat([]byte("big"), reuseBytes)
	st = core.ApplyState{Applied: 2, NextIndex: 3}
	save(t, s, instance.Ready{Entries: []core.Entry{{Index: 1, Data: big}, logEntry(2)}, State: &st})
	if b, z := cap(s.batch.Dump()), cap(s.sealer.buf); b > reuseBytes || z > reuseBytes {
		t.Fatalf("after a Save of %d bytes: batch %d, sealer %d bytes kept; want at most %d", len(big), b, z, reuseBytes)
	}
	es, err := s.Entries(0, 0, 0)
	if err != nil || len(es) != 3 || !bytes.Equal(es[0].Data, logEntry(0).Data) || !bytes.Equal(es[1].Data, big) || !bytes.Equal(es[2].Data, logEntry(2).Data) {
		t.Fatalf("Entries(0): %d entries, %v; want the three saved", len(es), err)
	}
}
