package storage

import (
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// TestDedupDeltas: the rows of each Save go to disk as one delta, folded
// into the row table every foldEvery Saves; Load and Backup give the table
// as it is after the last Save, across reopens at every point of the fold
// cycle, installs (which drop the deltas) and deleted rows. It fails when
// Load ignores the deltas, when a fold loses the rows changed since the
// last one, or when an install leaves a delta behind.
func TestDedupDeltas(t *testing.T) {
	defer func(f uint64, r int) { foldEvery, foldRows = f, r }(foldEvery, foldRows)
	for _, c := range []struct {
		name  string
		every uint64
		rows  int
	}{{"fold by deltas", 4, 1024}, {"fold by rows", 1000, 5}} {
		t.Run(c.name, func(t *testing.T) {
			foldEvery, foldRows = c.every, c.rows
			testDedupDeltas(t)
		})
	}
}

func testDedupDeltas(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[uint64]core.DedupEntry{}
	row := func(client, seq uint64) core.DedupEntry {
		return core.DedupEntry{ClientID: client, LastUsed: seq * 10,
			Recent: []core.SeqIndexes{{Seq: seq, First: seq * 3, Last: seq*3 + 1, Sum: uint32(seq)}}}
	}
	check := func(step int) {
		t.Helper()
		want := slices.Collect(maps.Values(model))
		slices.SortFunc(want, func(a, b core.DedupEntry) int { return int(int64(a.ClientID - b.ClientID)) })
		got := mustLoad(t, s).Dedup
		if len(got) != len(want) || (len(got) > 0 && !same(got, want)) {
			t.Fatalf("step %d: Load's dedup table\n%+v\nwant\n%+v", step, got, want)
		}
		b, err := s.Backup()
		if err != nil {
			t.Fatal(err)
		}
		defer b.Release()
		var paged []core.DedupEntry
		after := uint64(0)
		for {
			rows, more, err := b.Dedup(after, 2)
			if err != nil {
				t.Fatal(err)
			}
			paged = append(paged, rows...)
			if !more {
				break
			}
			after = rows[len(rows)-1].ClientID
		}
		if b.Rows != len(want) || len(paged) != len(want) || (len(paged) > 0 && !same(paged, want)) {
			t.Fatalf("step %d: Backup's dedup table (%d rows)\n%+v\nwant\n%+v", step, b.Rows, paged, want)
		}
	}
	seq := uint64(0)
	for step := 0; step < 60; step++ {
		var rd instance.Ready
		switch {
		case step == 25 || step == 41:
			// An install replaces the table; rows of the same Ready go over it.
			st := core.ApplyState{Applied: uint64(100 * step)}
			snap := core.Snapshot{State: st, Dedup: []core.DedupEntry{row(1, 1000+uint64(step)), row(7, 2000)}}
			rd = instance.Ready{Install: &snap, Base: &snap, State: &st}
			model = map[uint64]core.DedupEntry{}
			for _, d := range snap.Dedup {
				model[d.ClientID] = d
			}
		case step%7 == 3:
			// A Ready with no dedup rows writes no delta.
		}
		for range rng.IntN(4) {
			c := uint64(rng.IntN(8)) + 1
			seq++
			if rng.IntN(5) == 0 {
				rd.Dedup = append(rd.Dedup, core.DedupEntry{ClientID: c, Deleted: true})
				delete(model, c)
				continue
			}
			d := row(c, seq)
			rd.Dedup = append(rd.Dedup, d)
			model[c] = d
		}
		save(t, s, rd)
		if s.dd.next-s.dd.first >= foldEvery || len(s.dd.changed) >= foldRows {
			t.Fatalf("step %d: %d deltas on disk holding %d rows; want under foldEvery (%d) and foldRows (%d)", step, s.dd.next-s.dd.first, len(s.dd.changed), foldEvery, foldRows)
		}
		check(step)
		if step%3 == 0 {
			s.Close()
			s = openT(t, dir, Options{})
			check(step)
		}
	}
	// The deltas on disk are exactly [first, next).
	for n := uint64(0); n < s.dd.next+2; n++ {
		if on := has(t, s, key(prefixDelta, n)); on != (n >= s.dd.first && n < s.dd.next) {
			t.Fatalf("delta %d on disk: %v; the store counts [%d, %d)", n, on, s.dd.first, s.dd.next)
		}
	}
}

// TestDedupDeltaGap: a delta missing between two others (no Save deletes
// one alone: a fold deletes them all, an install too) is damage, and Open
// refuses the directory naming the delta after the hole, rather than load a
// table that lacks the missing rows. It fails when liveDedup applies the
// deltas it finds without checking that they follow each other.
func TestDedupDeltaGap(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	for c := uint64(1); c <= 3; c++ {
		save(t, s, instance.Ready{Dedup: []core.DedupEntry{{ClientID: c, LastUsed: c}}})
	}
	if s.dd.first != 0 || s.dd.next != 3 {
		t.Fatalf("deltas [%d, %d), want [0, 3)", s.dd.first, s.dd.next)
	}
	if err := s.db.Delete(key(prefixDelta, 1), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(dir, testMeta, Options{})
	if err == nil {
		s2.Close()
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "y/2") {
		t.Fatalf("Open with delta 1 of 0..2 missing: %v, want ErrCorrupt naming y/2", err)
	}
}

// reopenFromFormat marks the directory of s, at dir, as of the older format
// version, closes s and opens the directory again, which must bring it to
// formatVersion.
func reopenFromFormat(t *testing.T, s *Store, dir string, version byte) *Store {
	t.Helper()
	k := key(prefixMeta, metaIdentity)
	if err := s.db.Put(k, seal(k, append([]byte{version}, encodeIdentity(testMeta)[1:]...)), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, dir, Options{})
	if v, err := s.db.Get(k, nil); err != nil || v[4] != formatVersion {
		t.Fatalf("identity after the upgrade from format %d: %x %v", version, v, err)
	}
	return s
}

// TestUpgradeFormat3: a directory of format 3 (the dedup table in d/ rows
// only) opens as format 4 with its table whole, and the deltas the next
// Saves write go over it.
func TestUpgradeFormat3(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	row := func(c, used uint64) core.DedupEntry {
		return core.DedupEntry{ClientID: c, LastUsed: used, Recent: []core.SeqIndexes{{Seq: used, First: used, Last: used}}}
	}
	for _, d := range []core.DedupEntry{row(1, 1), row(2, 2)} {
		k := key(prefixDedup, d.ClientID)
		if err := s.db.Put(k, seal(k, encodeDedup(d)), nil); err != nil {
			t.Fatal(err)
		}
	}
	s = reopenFromFormat(t, s, dir, 3)
	if d := mustLoad(t, s); !same(d.Dedup, []core.DedupEntry{row(1, 1), row(2, 2)}) {
		t.Fatalf("the upgraded table: %+v", d.Dedup)
	}
	save(t, s, instance.Ready{Dedup: []core.DedupEntry{row(2, 5), row(3, 6), {ClientID: 1, Deleted: true}}})
	s.Close()
	s = openT(t, dir, Options{})
	if d := mustLoad(t, s); !same(d.Dedup, []core.DedupEntry{row(2, 5), row(3, 6)}) {
		t.Fatalf("the table after a delta over the upgraded rows: %+v", d.Dedup)
	}
}

// TestDeltaEncoding: a delta decodes to the rows it was encoded from
// (deleted, empty, full, the largest client ID), and every cut of it, or
// a byte more, is a bad record.
func TestDeltaEncoding(t *testing.T) {
	full := core.DedupEntry{ClientID: 5, LastUsed: math.MaxUint64}
	for i := range uint64(core.DedupWindow) {
		full.Recent = append(full.Recent, core.SeqIndexes{Seq: i + 1, First: i * 4, Last: i*4 + 3, Sum: uint32(i)})
	}
	rows := []core.DedupEntry{
		{ClientID: 9, Deleted: true},
		{ClientID: math.MaxUint64, LastUsed: 1},
		full,
		{ClientID: 9, LastUsed: 2, Recent: []core.SeqIndexes{{Seq: 7, First: 1, Last: 0}}},
	}
	b := appendDelta(nil, changesOf(rows))
	got, err := decodeDelta(b)
	if err != nil || !same(got, rows) {
		t.Fatalf("decoded %+v, %v\nwant %+v", got, err, rows)
	}
	for n := range len(b) {
		if _, err := decodeDelta(b[:n]); !errors.Is(err, errRecord) {
			t.Fatalf("%d of %d bytes: %v", n, len(b), err)
		}
	}
	if _, err := decodeDelta(append(b, 0)); !errors.Is(err, errRecord) {
		t.Fatalf("a byte more: %v", err)
	}
}

// changesOf is rows as a delta holds them.
func changesOf(rows []core.DedupEntry) []rowChange {
	changes := make([]rowChange, len(rows))
	for i, d := range rows {
		changes[i].client = d.ClientID
		if !d.Deleted {
			changes[i].row = encodeDedup(d)
		}
	}
	return changes
}

// TestDeltaLastRowOfAClient: a Ready holds a row for each append it
// applied; a client that appended three times in it is written once, with
// its last row.
func TestDeltaLastRowOfAClient(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	row := func(client, seq uint64) core.DedupEntry {
		return core.DedupEntry{ClientID: client, Recent: []core.SeqIndexes{{Seq: seq, First: seq, Last: seq}}}
	}
	save(t, s, instance.Ready{Dedup: []core.DedupEntry{row(5, 1), row(6, 1), row(5, 2), row(5, 3)}})
	v, err := s.db.Get(key(prefixDelta, s.dd.first), nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := unseal(key(prefixDelta, s.dd.first), v)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := decodeDelta(payload)
	if err != nil {
		t.Fatal(err)
	}
	if want := []core.DedupEntry{row(6, 1), row(5, 3)}; !same(rows, want) {
		t.Fatalf("the delta holds %+v; want each client once, with its last row: %+v", rows, want)
	}
	if got := mustLoad(t, s).Dedup; !same(got, []core.DedupEntry{row(5, 3), row(6, 1)}) {
		t.Fatalf("Load: %+v", got)
	}
}
