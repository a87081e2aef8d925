package storage

import (
	"cmp"
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
// cycle, installs (which drop the deltas), deleted rows and rows written
// as patches of the row an earlier delta holds (seqs out of order, windows
// dropped whole). It fails when
// Load ignores the deltas, when a fold loses the rows changed since the
// last one, or when an install leaves a delta behind.
func TestDedupDeltas(t *testing.T) {
	defer func(f uint64, r int) { foldEvery, foldRows = f, r }(foldEvery, foldRows)
	for _, c := range []struct {
		name  string
		every uint64
		rows  int
	}{{"fold by deltas", 4, 1024}, {"fold by rows", 1000, 5}, {"long runs of patches", 64, 1024}} {
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
	// next is client c's row after its next append, as the learner makes
	// it: usually past its highest seq (sometimes far past, dropping the
	// whole window), sometimes a seq it skipped within the window.
	next := func(c uint64, used uint64) core.DedupEntry {
		d := model[c]
		d.ClientID = c
		high := d.Seq()
		seq := high + 1 + uint64(rng.IntN(3))
		switch k := rng.IntN(10); {
		case k == 0:
			seq = high + core.DedupWindow + uint64(rng.IntN(5))
		case k < 4 && high > 2:
			if s := high - 1 - uint64(rng.IntN(int(min(high-1, core.DedupWindow-1)))); !slices.ContainsFunc(d.Recent, func(r core.SeqIndexes) bool { return r.Seq == s }) {
				seq = s
			}
		}
		return grow(d, core.SeqIndexes{Seq: seq, First: seq * 3, Last: seq*3 + 1, Sum: uint32(seq)}, used)
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
	for step := 0; step < 300; step++ {
		var rd instance.Ready
		switch {
		case step == 25 || step == 41:
			// An install replaces the table; rows of the same Ready go over it.
			st := core.ApplyState{Applied: uint64(100 * step)}
			snap := core.Snapshot{State: st, Dedup: []core.DedupEntry{next(1, 1000+uint64(step)), next(7, 2000)}}
			rd = instance.Ready{Install: &snap, Base: &snap, State: &st}
			model = map[uint64]core.DedupEntry{}
			for _, d := range snap.Dedup {
				model[d.ClientID] = d
			}
		case step%7 == 3:
			// A Ready with no dedup rows writes no delta.
		}
		for range rng.IntN(6) {
			c := uint64(rng.IntN(8)) + 1
			if rng.IntN(12) == 0 {
				rd.Dedup = append(rd.Dedup, core.DedupEntry{ClientID: c, Deleted: true})
				delete(model, c)
				continue
			}
			d := next(c, uint64(step))
			rd.Dedup = append(rd.Dedup, d)
			model[c] = d
		}
		save(t, s, rd)
		if s.dd.next-s.dd.first >= foldEvery || len(s.dd.changed) >= foldRows {
			t.Fatalf("step %d: %d deltas on disk holding %d rows; want under foldEvery (%d) and foldRows (%d)", step, s.dd.next-s.dd.first, len(s.dd.changed), foldEvery, foldRows)
		}
		check(step)
		if step%7 == 0 {
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
	openRefuses(t, dir, "y/2")
}

// openRefuses opens dir, which must fail with ErrCorrupt naming the key.
func openRefuses(t *testing.T, dir, key string) {
	t.Helper()
	s, err := Open(dir, testMeta, Options{})
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), key) {
		t.Fatalf("Open: %v, want ErrCorrupt naming %s", err, key)
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

// TestUpgradeFormat5: a directory of format 5 (its deltas hold whole rows)
// opens as format 6, and the next Save writes a patch over the row a format
// 5 delta holds.
func TestUpgradeFormat5(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	d := grow(core.DedupEntry{ClientID: 3}, core.SeqIndexes{Seq: 1, First: 10, Last: 11}, 1)
	k := key(prefixDelta, 0)
	if err := s.db.Put(k, seal(k, appendDelta(nil, changesOf([]core.DedupEntry{d}))), nil); err != nil {
		t.Fatal(err)
	}
	s = reopenFromFormat(t, s, dir, 5)
	d = grow(d, core.SeqIndexes{Seq: 2, First: 12, Last: 12}, 2)
	save(t, s, instance.Ready{Dedup: []core.DedupEntry{d}})
	v, err := s.db.Get(key(prefixDelta, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rows, err := decodeDelta(v[4:]); err != nil || len(rows) != 1 || !rows[0].patch {
		t.Fatalf("the delta after the upgrade: %+v, %v; want a patch", rows, err)
	}
	s.Close()
	s = openT(t, dir, Options{})
	if got := mustLoad(t, s).Dedup; !same(got, []core.DedupEntry{d}) {
		t.Fatalf("Load: %+v\nwant %+v", got, d)
	}
}

// TestDeltaEncoding: a delta decodes to the rows it was encoded from
// (deleted, empty, full, the largest client ID, patches), and every cut of
// it, or a byte more, is a bad record.
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
	changes := append(changesOf(rows),
		rowChange{row: core.DedupEntry{ClientID: 5, LastUsed: 3, Recent: full.Recent[:2]}, patch: true, drop: core.DedupWindow},
		rowChange{row: core.DedupEntry{ClientID: math.MaxUint64}, patch: true})
	b := appendDelta(nil, changes)
	if len(b) > deltaSize(changes) {
		t.Fatalf("%d bytes, deltaSize says at most %d", len(b), deltaSize(changes))
	}
	got, err := decodeDelta(b)
	if err != nil || !same(got, changes) {
		t.Fatalf("decoded %+v, %v\nwant %+v", got, err, changes)
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

// changesOf is rows as a delta holds them whole.
func changesOf(rows []core.DedupEntry) []rowChange {
	changes := make([]rowChange, len(rows))
	for i, d := range rows {
		changes[i] = rowChange{row: d}
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
	if want := changesOf([]core.DedupEntry{row(6, 1), row(5, 3)}); !same(rows, want) {
		t.Fatalf("the delta holds %+v; want each client once, with its last row: %+v", rows, want)
	}
	if got := mustLoad(t, s).Dedup; !same(got, []core.DedupEntry{row(5, 3), row(6, 1)}) {
		t.Fatalf("Load: %+v", got)
	}
}

// grow is d with seq s applied at log time used, as the learner makes a
// row: s merged in by seq, the seqs DedupWindow or more below the highest
// dropped, in a new slice.
func grow(d core.DedupEntry, s core.SeqIndexes, used uint64) core.DedupEntry {
	recent := append(slices.Clone(d.Recent), s)
	slices.SortFunc(recent, func(a, b core.SeqIndexes) int { return cmp.Compare(a.Seq, b.Seq) })
	high := recent[len(recent)-1].Seq
	for len(recent) > 0 && recent[0].Seq+core.DedupWindow <= high {
		recent = recent[1:]
	}
	return core.DedupEntry{ClientID: d.ClientID, LastUsed: used, Recent: recent}
}

// TestDedupPatch: a client whose row an earlier delta holds has its next
// row written as a patch of it, a few bytes where the row is hundreds, and
// the store loads the row whole. It fails when every row is written whole.
func TestDedupPatch(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	d := core.DedupEntry{ClientID: 5}
	for seq := uint64(1); seq <= core.DedupWindow; seq++ {
		d = grow(d, core.SeqIndexes{Seq: seq, First: 1000 * seq, Last: 1000 * seq, Sum: uint32(seq)}, seq)
	}
	save(t, s, instance.Ready{Dedup: []core.DedupEntry{d}})
	d = grow(d, core.SeqIndexes{Seq: 40, First: 40000, Last: 40000, Sum: 40}, 40)
	save(t, s, instance.Ready{Dedup: []core.DedupEntry{d}})
	k := key(prefixDelta, s.dd.next-1)
	v, err := s.db.Get(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := unseal(k, v)
	if err != nil {
		t.Fatal(err)
	}
	if whole := dedupSize(d); len(payload) > 20 || whole < 200 {
		t.Fatalf("the delta of one append is %d bytes, the row %d; want a patch of at most 20", len(payload), whole)
	}
	s.Close()
	s = openT(t, dir, Options{})
	if got := mustLoad(t, s).Dedup; !same(got, []core.DedupEntry{d}) {
		t.Fatalf("Load: %+v\nwant %+v", got, d)
	}
}

// TestPatchRow: patchRow either declines or gives a patch that applyPatch
// turns back into the row it was made for, over random pairs of rows and
// over every append as the learner makes rows; it declines a row that
// changed a kept seq.
func TestPatchRow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	seqs := func() []core.SeqIndexes {
		var r []core.SeqIndexes
		for s := uint64(rng.IntN(4)); len(r) < rng.IntN(core.DedupWindow+1); s += 1 + uint64(rng.IntN(2)) {
			r = append(r, core.SeqIndexes{Seq: s, First: s, Last: s, Sum: uint32(rng.IntN(2))})
		}
		return r
	}
	try := func(prev, next core.DedupEntry) bool {
		t.Helper()
		c, ok := patchRow(prev, next)
		if !ok {
			return false
		}
		got, err := applyPatch(prev, c)
		if err != nil || !same(got, next) {
			t.Fatalf("patch of %+v\nto %+v\nis %+v, which gives %+v, %v", prev, next, c, got, err)
		}
		return true
	}
	for range 5000 {
		try(core.DedupEntry{ClientID: 1, Recent: seqs()}, core.DedupEntry{ClientID: 1, LastUsed: 9, Recent: seqs()})
	}
	d := core.DedupEntry{ClientID: 1}
	for i := range uint64(2000) {
		seq := d.Seq() + 1 + uint64(rng.IntN(3))
		if rng.IntN(3) == 0 && d.Seq() > core.DedupWindow {
			seq = d.Seq() - uint64(rng.IntN(core.DedupWindow))
		}
		if slices.ContainsFunc(d.Recent, func(r core.SeqIndexes) bool { return r.Seq == seq }) {
			continue
		}
		next := grow(d, core.SeqIndexes{Seq: seq, First: i, Last: i}, i)
		if !try(d, next) {
			t.Fatalf("no patch from %+v\nto %+v", d, next)
		}
		d = next
	}
	changed := slices.Clone(d.Recent)
	changed[len(changed)/2].Sum++
	if try(d, core.DedupEntry{ClientID: 1, Recent: changed}) {
		t.Fatal("a patch for a row whose kept seq changed")
	}
}

// TestDedupBadPatch: a patch that does not fit the row the deltas before
// it left (of a client no earlier delta holds, or one deleted; dropping more
// seqs than the row has; adding a seq it has) is damage: Open refuses the
// directory, naming the delta.
func TestDedupBadPatch(t *testing.T) {
	row := core.DedupEntry{ClientID: 5, Recent: []core.SeqIndexes{{Seq: 1}, {Seq: 2}}}
	patch := func(drop uint64, seqs ...uint64) rowChange {
		c := rowChange{row: core.DedupEntry{ClientID: 5}, patch: true, drop: drop}
		for _, s := range seqs {
			c.row.Recent = append(c.row.Recent, core.SeqIndexes{Seq: s})
		}
		return c
	}
	for _, c := range []struct {
		name   string
		before []rowChange
		bad    rowChange
	}{
		{"no row before", nil, patch(0, 3)},
		{"a deleted row", []rowChange{{row: core.DedupEntry{ClientID: 5, Deleted: true}}}, patch(0, 3)},
		{"dropping more than the row has", []rowChange{{row: row}}, patch(3, 4)},
		{"adding a seq it has", []rowChange{{row: row}}, patch(0, 2)},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			for n, rows := range [][]rowChange{c.before, {c.bad}} {
				if rows == nil {
					continue
				}
				k := key(prefixDelta, uint64(n))
				if err := s.db.Put(k, seal(k, appendDelta(nil, rows)), nil); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			openRefuses(t, dir, "y/1")
		})
	}
}
