package storage

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
)

// baseEntry is the data of user entry n in these tests: 10 bytes, so an
// entry counts 20 bytes in a SnapChunk's Size.
func baseEntry(n uint64) []byte { return []byte(fmt.Sprintf("entry-%04d", n)) }

// baseRun saves instances [st.Applied, st.Applied+n) on top of st, each
// chosen with two user entries and a dedup row of client 1+i%5, and returns
// the state after them.
func baseRun(t testing.TB, s *Store, st core.ApplyState, n uint64) core.ApplyState {
	t.Helper()
	for i, end := st.Applied, st.Applied+n; i < end; i++ {
		rd := instance.Ready{Chosen: []core.InstanceValue{{Instance: i, Value: userValue(fmt.Sprint(i))}}}
		first := st.NextIndex
		for range 2 {
			rd.Entries = append(rd.Entries, core.Entry{Index: st.NextIndex, Data: baseEntry(st.NextIndex)})
			st.NextIndex++
		}
		rd.Dedup = []core.DedupEntry{{ClientID: 1 + i%5, LastUsed: i, Recent: []core.SeqIndexes{{Seq: i, First: first, Last: st.NextIndex - 1}}}}
		next := st
		next.Applied = i + 1
		rd.State = &next
		save(t, s, rd)
		st = next
	}
	return st
}

// entriesOnDisk counts the user entries with an index in [from, to) in the
// blocks on disk.
func entriesOnDisk(t testing.TB, s *Store, from, to uint64) int {
	t.Helper()
	it := s.db.NewIterator(prefixRange(prefixBlock), nil)
	defer it.Release()
	n := 0
	for it.Next() {
		first, count, err := s.blockAt(it)
		if err != nil {
			t.Fatal(err)
		}
		if lo, hi := max(first, from), min(first+count, to); lo < hi {
			n += int(hi - lo)
		}
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return n
}

// countKeys counts the keys with prefix p in [from, to) on disk.
func countKeys(t testing.TB, s *Store, p byte, from, to uint64) int {
	t.Helper()
	it := s.db.NewIterator(&util.Range{Start: key(p, from), Limit: key(p, to)}, nil)
	defer it.Release()
	n := 0
	for it.Next() {
		n++
	}
	if err := it.Error(); err != nil {
		t.Fatal(err)
	}
	return n
}

func snapshot(t testing.TB, s *Store, base, index, after uint64, maxCount, maxBytes int) core.SnapChunk {
	t.Helper()
	ch, err := s.Snapshot(base, index, after, maxCount, maxBytes)
	if err != nil {
		t.Fatalf("Snapshot(%d, %d, %d, %d, %d): %v", base, index, after, maxCount, maxBytes, err)
	}
	return ch
}

func clients(rows []core.DedupEntry) []uint64 {
	var ids []uint64
	for _, r := range rows {
		ids = append(ids, r.ClientID)
	}
	return ids
}

// checkEntries checks es are the entries from first on, in order, with
// baseEntry data.
func checkEntries(t testing.TB, what string, es []core.Entry, first uint64, n int) {
	t.Helper()
	if len(es) != n {
		t.Fatalf("%s: %d entries, want %d", what, len(es), n)
	}
	for i, e := range es {
		if e.Index != first+uint64(i) || !bytes.Equal(e.Data, baseEntry(e.Index)) {
			t.Fatalf("%s: entry %d is %d %q", what, i, e.Index, e.Data)
		}
	}
}

// TestBaseTrimAndSnapshot: a trim with a base makes the store serve the
// base in chunks and delete, a chunk per Save, the chosen values below it
// and the entries below the first index, resuming after a restart.
func TestBaseTrimAndSnapshot(t *testing.T) {
	defer withTrimChunk(7)()
	dir := t.TempDir()
	s := openT(t, dir, Options{})

	// A store that never saved a base serves the zero one.
	if ch := snapshot(t, s, 0, 0, 0, 0, 0); !ch.Done || !reflect.DeepEqual(ch.State, core.ApplyState{}) || len(ch.Entries)+len(ch.Dedup) != 0 {
		t.Fatalf("zero base: %+v", ch)
	}

	st := baseRun(t, s, core.ApplyState{}, 50) // instances [0,50), entries [0,100)
	if ch := snapshot(t, s, 0, 0, 0, 0, 0); !ch.Done || len(ch.Entries) != 0 {
		t.Fatalf("before any base, the log is not the base: %+v", ch)
	}
	// Instance 50 is a trim to 60: it makes the base.
	st.Applied, st.FirstIndex = 51, 60
	base := core.Snapshot{State: st, Dedup: mustLoad(t, s).Dedup}
	if len(base.Dedup) != 5 {
		t.Fatalf("%d dedup rows", len(base.Dedup))
	}
	trim := core.Value{Commands: []core.Command{{Kind: core.CmdTrim, Before: 60}}}
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 50, Value: trim}}, State: &st, Base: &base})
	if s.baseApplied != 51 {
		t.Fatalf("base applied %d", s.baseApplied)
	}
	// One chunk of each deletion went with the trim, and no more.
	if c, e := countKeys(t, s, prefixChosen, 0, 51), entriesOnDisk(t, s, 0, 60); c != 50-7 || e != 60-14 {
		t.Fatalf("after the trimming Save: %d chosen values below the base, %d entries below the first index; want %d and %d", c, e, 50-7, 60-14)
	}
	if has(t, s, key(prefixChosen, 50)) {
		t.Fatal("the trim's own chosen value, below the base, was written")
	}
	st = baseRun(t, s, st, 4) // instances [51,55) on top: entries [100,108)

	checkSnapshot := func(t *testing.T, s *Store) {
		t.Helper()
		ch := snapshot(t, s, 51, 0, 0, 0, 0)
		if !reflect.DeepEqual(ch.State, base.State) || ch.Done || len(ch.Dedup) != 0 {
			t.Fatalf("entries chunk: state %+v done %v dedup %d", ch.State, ch.Done, len(ch.Dedup))
		}
		checkEntries(t, "from 0: from the first index to the base's end (not the live one)", ch.Entries, 60, 40)
		checkEntries(t, "maxCount 7", snapshot(t, s, 51, 75, 0, 7, 0).Entries, 75, 7)
		empty := (&core.SnapChunk{}).Size()
		checkEntries(t, "maxBytes for 3", snapshot(t, s, 51, 75, 0, 0, empty+3*20).Entries, 75, 3)
		checkEntries(t, "maxBytes just under 3", snapshot(t, s, 51, 75, 0, 0, empty+3*20-1).Entries, 75, 2)
		checkEntries(t, "maxBytes 1: at least one", snapshot(t, s, 51, 75, 0, 0, 1).Entries, 75, 1)
		checkEntries(t, "both limits", snapshot(t, s, 51, 98, 0, 5, 1000).Entries, 98, 2)
		if ch := snapshot(t, s, 51, 75, 3, 0, 0); len(ch.Dedup) != 0 || ch.Done {
			t.Fatalf("dedup rows before the entries are done: %+v", ch)
		}

		// The dedup phase: from the base's NextIndex on.
		ch = snapshot(t, s, 51, 100, 0, 0, 0)
		if len(ch.Entries) != 0 || !ch.Done || !same(ch.Dedup, base.Dedup) || !reflect.DeepEqual(ch.State, base.State) {
			t.Fatalf("all rows: %+v", ch)
		}
		var got []uint64
		after := uint64(0)
		for range 10 {
			ch = snapshot(t, s, 51, 100, after, 2, 0)
			if len(ch.Dedup) == 0 || len(ch.Dedup) > 2 {
				t.Fatalf("after %d: %d rows", after, len(ch.Dedup))
			}
			got = append(got, clients(ch.Dedup)...)
			after = ch.Dedup[len(ch.Dedup)-1].ClientID
			if ch.Done != (after == 5) {
				t.Fatalf("after %d: Done %v", after, ch.Done)
			}
			if ch.Done {
				break
			}
		}
		if !same(got, []uint64{1, 2, 3, 4, 5}) {
			t.Fatalf("rows in chunks of 2: %v", got)
		}
		if ch = snapshot(t, s, 51, 100, 4, 0, 0); !same(clients(ch.Dedup), []uint64{5}) || !ch.Done {
			t.Fatalf("after 4: %+v", ch)
		}
		if ch = snapshot(t, s, 51, 100, 5, 0, 0); len(ch.Dedup) != 0 || !ch.Done {
			t.Fatalf("after the last row: %+v", ch)
		}
		if ch = snapshot(t, s, 51, 5000, 3, 0, empty+1); !same(clients(ch.Dedup), []uint64{4}) || ch.Done {
			t.Fatalf("maxBytes 1 past the end of the entries: %+v", ch)
		}
		oneSeqRow := core.SnapRowSize(core.DedupEntry{Recent: make([]core.SeqIndexes, 1)})
		if ch = snapshot(t, s, 51, 100, 3, 0, empty+2*oneSeqRow); !same(clients(ch.Dedup), []uint64{4, 5}) || !ch.Done {
			t.Fatalf("maxBytes for the last 2 rows: %+v", ch)
		}
		// Another base asked for: the rows start over, after is ignored.
		if ch = snapshot(t, s, 30, 100, 3, 0, 0); !same(clients(ch.Dedup), []uint64{1, 2, 3, 4, 5}) || !ch.Done {
			t.Fatalf("base mismatch: %+v", ch)
		}
	}
	checkSnapshot(t, s)

	// The four Saves after the trim continued both deletions, a chunk
	// each (7 chosen values, or 7 blocks of 2 entries, the last 2 blocks
	// below the first index); a restart resumes them.
	if s.chosenCursor != 35 || s.trimCursor != 60 {
		t.Fatalf("cursors %d %d, want 35 60", s.chosenCursor, s.trimCursor)
	}
	s.Close()
	s = openT(t, dir, Options{})
	if s.chosenCursor != 35 || s.trimCursor != 60 || s.baseApplied != 51 {
		t.Fatalf("after reopen: cursors %d %d, base %d", s.chosenCursor, s.trimCursor, s.baseApplied)
	}
	if d := mustLoad(t, s); d.Base != 51 || !reflect.DeepEqual(d.State, st) {
		t.Fatalf("Load after reopen: base %d state %+v", d.Base, d.State)
	}
	// 16 chosen values are left: 3 Saves.
	saves := 0
	for ; s.chosenCursor < 51 || s.trimCursor < 60; saves++ {
		if saves == 20 {
			t.Fatalf("deletion stuck: cursors %d %d", s.chosenCursor, s.trimCursor)
		}
		save(t, s, instance.Ready{})
	}
	if saves != 3 {
		t.Fatalf("%d Saves to delete 16 chosen values 7 at a time", saves)
	}
	if s.chosenCursor != 51 || s.trimCursor != 60 {
		t.Fatalf("cursors %d %d past their targets", s.chosenCursor, s.trimCursor)
	}
	if c, e := countKeys(t, s, prefixChosen, 0, 51), entriesOnDisk(t, s, 0, 60); c != 0 || e != 0 {
		t.Fatalf("%d chosen values below the base and %d entries below the first index left", c, e)
	}
	if got, err := s.Chosen(0, 51, 0); err != nil || len(got) != 0 {
		t.Fatalf("Chosen below the base: %d values, %v", len(got), err)
	}
	if got, err := s.Chosen(51, 100, 0); err != nil || len(got) != 4 || got[0].Instance != 51 || !same(got[3].Value, userValue("54")) {
		t.Fatalf("Chosen from the base: %+v, %v", got, err)
	}
	es, err := s.Entries(60, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "Entries from the first index", es, 60, 48)

	s.Close()
	s = openT(t, dir, Options{})
	if s.chosenCursor != 51 || s.trimCursor != 60 {
		t.Fatalf("cursors not persisted: %d %d", s.chosenCursor, s.trimCursor)
	}
	checkSnapshot(t, s)

	// A new base replaces the old one's rows whole.
	st.Applied, st.FirstIndex = st.Applied+1, 104
	base2 := core.Snapshot{State: st, Dedup: mustLoad(t, s).Dedup[1:3]}
	save(t, s, instance.Ready{State: &st, Base: &base2})
	ch := snapshot(t, s, st.Applied, 0, 0, 0, 0)
	checkEntries(t, "the new base's entries", ch.Entries, 104, 4)
	if ch = snapshot(t, s, st.Applied, 108, 0, 0, 0); !same(ch.Dedup, base2.Dedup) || !ch.Done {
		t.Fatalf("the new base's rows: %+v", ch)
	}
	if n := countKeys(t, s, prefixBase, 0, math.MaxUint64); n != 2 {
		t.Fatalf("%d base rows on disk, want 2", n)
	}
}

// TestSnapshotConsistent: chunks read while Saves replace the base are each
// of one base: the state, the entries and the rows agree.
func TestSnapshotConsistent(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	st := baseRun(t, s, core.ApplyState{}, 5)
	readWhile(t, 2, func() error {
		for _, index := range []uint64{0, 1 << 40} {
			ch, err := s.Snapshot(0, index, 0, 0, 0)
			if err != nil {
				return err
			}
			if ch.State.NextIndex > ch.State.FirstIndex && index == 0 &&
				(len(ch.Entries) != int(ch.State.NextIndex-ch.State.FirstIndex) || ch.Entries[0].Index != ch.State.FirstIndex) {
				return fmt.Errorf("base %+v with %d entries: %+v", ch.State, len(ch.Entries), ch.Entries)
			}
			for _, d := range ch.Dedup {
				if d.LastUsed != ch.State.Applied {
					return fmt.Errorf("base %+v with the row %+v of another base", ch.State, d)
				}
			}
		}
		return nil
	}, func() {
		for range 500 {
			st = baseRun(t, s, st, 1)
			st.FirstIndex = st.NextIndex - 3
			var rows []core.DedupEntry
			for c := uint64(1); c <= 1+st.Applied%40; c++ {
				rows = append(rows, core.DedupEntry{ClientID: c, LastUsed: st.Applied})
			}
			save(t, s, instance.Ready{State: &st, Base: &core.Snapshot{State: st, Dedup: rows}})
		}
	})
}

// TestInstall: installing a peer's base replaces the apply state and the
// whole dedup table; the staged entries become the log; the store reopens
// with no chosen value below the base.
func TestInstall(t *testing.T) {
	defer withTrimChunk(3)()
	installed := core.ApplyState{Applied: 50, NextIndex: 110, FirstIndex: 100, LeaseHolder: 2, LeaseVersion: 9, LogTime: 1234}
	rows := []core.DedupEntry{
		{ClientID: 11, LastUsed: 1200, Recent: []core.SeqIndexes{{Seq: 7, First: 100, Last: 101}}},
		{ClientID: 20, LastUsed: 1234, Recent: []core.SeqIndexes{{Seq: 3, First: 105, Last: 105}, {Seq: 4, First: 106, Last: 109}}},
	}
	var staged []core.Entry
	for n := uint64(100); n < 110; n++ {
		staged = append(staged, core.Entry{Index: n, Data: baseEntry(n)})
	}
	// prepare is a store with its own older state (applied 4, entries [0,4),
	// clients 9 and 11, an accepted value for instance 4) and the entries
	// of the base staged above its log, in two Saves as they arrive.
	prepare := func(t *testing.T) (*Store, string) {
		dir := t.TempDir()
		s := openT(t, dir, Options{})
		history(t, s)
		save(t, s, instance.Ready{Staged: staged[:6]})
		save(t, s, instance.Ready{Staged: staged[6:]})
		if d := mustLoad(t, s); !same(d, wantDurable) {
			t.Fatalf("staged entries changed the state: %+v", d)
		}
		if es, err := s.Entries(0, 0, 0); err != nil || len(es) != 4 {
			t.Fatalf("staged entries visible: %d %v", len(es), err)
		}
		return s, dir
	}
	check := func(t *testing.T, s *Store, state core.ApplyState, dedup []core.DedupEntry) {
		t.Helper()
		d := mustLoad(t, s)
		if !reflect.DeepEqual(d.State, state) || d.Base != 50 || !same(d.Dedup, dedup) || len(d.Accepted) != 0 {
			t.Fatalf("Load after the install:\n got %+v\nwant state %+v base 50 dedup %+v", d, state, dedup)
		}
		if !reflect.DeepEqual(s.State(), state) {
			t.Fatalf("State %+v", s.State())
		}
		es, err := s.Entries(100, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		checkEntries(t, "the installed log", es, 100, int(state.NextIndex-100))
		if _, err := s.Entries(3, 0, 0); !errors.Is(err, ErrTrimmed) {
			t.Fatalf("Entries below the installed first index: %v", err)
		}
		ch := snapshot(t, s, 50, 0, 0, 0, 0)
		checkEntries(t, "the installed base served on", ch.Entries, 100, 10)
		if ch = snapshot(t, s, 50, 110, 0, 0, 0); !same(ch.Dedup, rows) || !ch.Done || !reflect.DeepEqual(ch.State, installed) {
			t.Fatalf("the installed base's rows: %+v", ch)
		}
	}

	t.Run("exact", func(t *testing.T) {
		s, dir := prepare(t)
		st := installed
		snap := core.Snapshot{State: installed, Dedup: rows}
		save(t, s, instance.Ready{Install: &snap, Base: &snap, State: &st})
		check(t, s, installed, rows)
		if has(t, s, key(prefixDedup, 9)) || has(t, s, key(prefixAccepted, 4)) {
			t.Fatal("the old dedup row or accepted value is still on disk")
		}
		for range 3 {
			save(t, s, instance.Ready{})
		}
		if c, e := countKeys(t, s, prefixChosen, 0, 50), entriesOnDisk(t, s, 0, 100); c != 0 || e != 0 {
			t.Fatalf("%d old chosen values and %d old entries left", c, e)
		}
		// No chosen value at all is on disk now, and none need be.
		s.Close()
		s = openT(t, dir, Options{})
		check(t, s, installed, rows)
	})

	t.Run("records over it", func(t *testing.T) {
		// The Ready that installs also applies instance 50 on top: its
		// records go over the installed ones.
		s, dir := prepare(t)
		st := installed
		st.Applied, st.NextIndex = 51, 111
		snap := core.Snapshot{State: installed, Dedup: rows}
		row20 := core.DedupEntry{ClientID: 20, LastUsed: 1300, Recent: []core.SeqIndexes{{Seq: 5, First: 110, Last: 110}}}
		save(t, s, instance.Ready{
			Install: &snap, Base: &snap, State: &st,
			Chosen:  []core.InstanceValue{{Instance: 50, Value: userValue("x")}},
			Entries: []core.Entry{{Index: 110, Data: baseEntry(110)}},
			Dedup:   []core.DedupEntry{{ClientID: 11, Deleted: true}, row20},
		})
		check(t, s, st, []core.DedupEntry{row20})
		s.Close()
		s = openT(t, dir, Options{})
		check(t, s, st, []core.DedupEntry{row20})
		if got, err := s.Chosen(50, 60, 0); err != nil || len(got) != 1 || !same(got[0].Value, userValue("x")) {
			t.Fatalf("Chosen(50): %+v %v", got, err)
		}
	})
}

// TestTrimJump: a base and a first index ten million past a few hundred
// stored records are caught up with in a few Saves, not ten million deletes.
func TestTrimJump(t *testing.T) {
	defer withTrimChunk(100)()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	baseRun(t, s, core.ApplyState{}, 150) // 150 chosen values, 300 entries
	const jump = 10_000_000
	var staged []core.Entry
	for n := uint64(jump); n < jump+20; n++ {
		staged = append(staged, core.Entry{Index: n, Data: baseEntry(n)})
	}
	save(t, s, instance.Ready{Staged: staged})
	st := core.ApplyState{Applied: jump + 150, NextIndex: jump + 20, FirstIndex: jump}
	snap := core.Snapshot{State: st}
	save(t, s, instance.Ready{Install: &snap, Base: &snap, State: &st})
	saves := 1
	for ; s.chosenCursor < st.Applied || s.trimCursor < st.FirstIndex; saves++ {
		if saves == 10 {
			t.Fatalf("after %d Saves the cursors are at %d and %d", saves, s.chosenCursor, s.trimCursor)
		}
		save(t, s, instance.Ready{})
	}
	if saves > 3 {
		t.Fatalf("%d Saves to delete 300 entries 100 at a time", saves)
	}
	if c, e := countKeys(t, s, prefixChosen, 0, st.Applied), entriesOnDisk(t, s, 0, st.FirstIndex); c != 0 || e != 0 {
		t.Fatalf("%d chosen values and %d entries left below", c, e)
	}
	s.Close()
	s = openT(t, dir, Options{})
	if s.chosenCursor != st.Applied || s.trimCursor != st.FirstIndex {
		t.Fatalf("cursors after reopen %d %d", s.chosenCursor, s.trimCursor)
	}
	es, err := s.Entries(jump, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "entries after the jump", es, jump, 20)
}

func dirSize(t testing.TB, dir string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// TestTrimReclaimsDisk: a trim near the end of a long log gives back most of
// the disk once the deletions catch up and the compactions they start have
// run. Each subtest makes one of the two deletions the one that matters, so
// that the other's compaction cannot happen to reclaim the space for it:
// "chosen values" keeps almost the whole log (of empty entries) but takes
// the base past every instance; "entries" stores no chosen values; "log" is
// both at once.
func TestTrimReclaimsDisk(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("writes 150 MB; measures disk use only (skipped with -short and -race)")
	}
	t.Run("log", func(t *testing.T) { reclaim(t, 200, 200, reclaimN-1000, false) })
	t.Run("chosen values", func(t *testing.T) { reclaim(t, 400, 0, 10, false) })
	t.Run("entries", func(t *testing.T) { reclaim(t, -1, 400, reclaimN-1000, false) })
	// goleveldb's first commit after an open counted the tables it added
	// twice, so the table its journal flush wrote was never deleted until
	// the next open: a node that restarted and then trimmed (or installed a
	// base) kept its whole recent log. third_party/goleveldb carries the fix.
	t.Run("reopened", func(t *testing.T) { reclaim(t, 200, 200, reclaimN-1000, true) })
}

const reclaimN = 100_000

// reclaim saves reclaimN instances, each with a random value of valueData
// bytes (none if negative) and an entry of entryData bytes, trims to first with the base after
// the last instance, and checks the directory shrinks to under a quarter.
// With reopen, the data stays in goleveldb's journal (the default write
// buffer holds it all) until the store is closed and opened again before the
// trim, so that the open turns it into a table.
func reclaim(t *testing.T, valueData, entryData int, first uint64, reopen bool) {
	dir := t.TempDir()
	opts := Options{WriteBufferBytes: 4 << 20}
	if reopen {
		opts = Options{}
	}
	s := openT(t, dir, opts)
	const n, batch = reclaimN, 4000
	// Random data: goleveldb's tables are snappy-compressed.
	rng := rand.NewChaCha8([32]byte{1})
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	var st core.ApplyState
	var row core.DedupEntry
	for st.Applied < n {
		rd := instance.Ready{}
		for i := st.Applied; i < st.Applied+batch; i++ {
			if valueData >= 0 {
				v := core.Value{Commands: []core.Command{{Kind: core.CmdUser, ClientID: 1, Seq: i, Entries: [][]byte{random(valueData)}}}}
				rd.Chosen = append(rd.Chosen, core.InstanceValue{Instance: i, Value: v})
			}
			rd.Entries = append(rd.Entries, core.Entry{Index: i, Data: random(entryData)})
		}
		st.Applied += batch
		st.NextIndex = st.Applied
		next := st
		rd.State = &next
		row = core.DedupEntry{ClientID: 1, Recent: []core.SeqIndexes{{Seq: st.Applied - 1, First: st.Applied - 1, Last: st.Applied - 1}}}
		rd.Dedup = []core.DedupEntry{row}
		save(t, s, rd)
	}
	if reopen {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openT(t, dir, opts)
	}
	before := dirSize(t, dir)
	if before < 30<<20 {
		t.Fatalf("only %d bytes written: the test measures nothing", before)
	}
	// Instance n trims to first; instance n+1 is applied after it.
	st.Applied, st.FirstIndex = n+1, first
	base := core.Snapshot{State: st, Dedup: []core.DedupEntry{row}}
	save(t, s, instance.Ready{State: &st, Base: &base})
	st.Applied++
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: n + 1, Value: userValue("after")}}, State: &st})
	for saves := 0; s.chosenCursor < n+1 || s.trimmedTo < first; saves++ {
		if saves == 2*n/int(trimChunk) {
			t.Fatalf("deletion stuck at %d, %d", s.chosenCursor, s.trimCursor)
		}
		save(t, s, instance.Ready{})
	}
	// Keep saving, as a node does: a compaction waiting for the one before
	// it to end starts at the next Save.
	deadline := time.Now().Add(30 * time.Second)
	after := dirSize(t, dir)
	for after > before/4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		save(t, s, instance.Ready{})
		after = dirSize(t, dir)
	}
	t.Logf("%d bytes before the trim, %d after", before, after)
	if after > before/4 {
		t.Fatalf("the trim left %d of %d bytes on disk: %v", after, before, listDir(t, dir))
	}
	if got, err := s.Chosen(n+1, n+2, 0); err != nil || len(got) != 1 || !same(got[0].Value, userValue("after")) {
		t.Fatalf("the chosen value above the base went too: %v %v", got, err)
	}
	if got, err := s.Chosen(0, n+1, 0); err != nil || len(got) != 0 {
		t.Fatalf("chosen values below the base left: %d, %v", len(got), err)
	}
	if es, err := s.Entries(first, 0, 0); err != nil || len(es) != int(n-first) {
		t.Fatalf("the entries from the first index went too: %d %v", len(es), err)
	}
}

// TestRecordFormat pins the encodings of the apply state and a dedup row,
// now core's: the records already on disk must still decode, and the same.
func TestRecordFormat(t *testing.T) {
	st := core.ApplyState{Applied: 300, NextIndex: 5, FirstIndex: 2, LeaseHolder: 1, LeaseVersion: 3, LogTime: 1 << 40}
	row := core.DedupEntry{ClientID: 4, LastUsed: 1700, Recent: []core.SeqIndexes{{Seq: 7, First: 100, Last: 101, Sum: 0x01020304}, {Seq: 9, First: 200, Last: 300, Sum: 0xfffefdfc}}}
	for _, c := range []struct {
		name string
		got  []byte
		want string
	}{
		// The state ends with its membership: 00 for none.
		{"state", encodeState(st), "ac020502010380808080802000"},
		{"dedup row", encodeDedup(row), "a40d020764650102030409c801ac02fffefdfc"}, // format 2
	} {
		if h := fmt.Sprintf("%x", c.got); h != c.want {
			t.Errorf("%s encodes as %s, want %s", c.name, h, c.want)
		}
	}
	if got, err := decodeState(encodeState(st)); err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("state round trip: %+v %v", got, err)
	}
	// A state written before the membership was part of it.
	old, _ := hex.DecodeString("ac0205020103808080808020")
	if got, err := decodeState(old); err != nil || !reflect.DeepEqual(got, st) {
		t.Errorf("a state without its membership: %+v %v", got, err)
	}
	withMembers := st
	withMembers.Members = members.NewHistory(members.Config{Members: []members.Member{{ID: 1, Addr: "a", Role: members.Voter, Incarnation: 9}}, NextSlot: 1}, 0)
	if got, err := decodeState(encodeState(withMembers)); err != nil || !reflect.DeepEqual(got, withMembers) {
		t.Errorf("state with its membership round trip: %+v %v", got, err)
	}
	if got, err := decodeDedup(4, encodeDedup(row)); err != nil || !same(got, row) {
		t.Errorf("dedup row round trip: %+v %v", got, err)
	}
	// Storage's checks on top of core's.
	bad := st
	bad.FirstIndex = 6
	if _, err := decodeState(encodeState(bad)); !errors.Is(err, errRecord) {
		t.Errorf("first index above next index: %v", err)
	}
	long := core.DedupEntry{ClientID: 4}
	for i := range uint64(core.DedupWindow + 1) {
		long.Recent = append(long.Recent, core.SeqIndexes{Seq: i + 1, First: i, Last: i})
	}
	if _, err := decodeDedup(4, encodeDedup(long)); !errors.Is(err, errRecord) {
		t.Errorf("a row of %d seqs: %v", len(long.Recent), err)
	}
	if _, err := decodeDedup(4, encodeDedup(core.DedupEntry{Recent: row.Recent[1:]})[:3]); !errors.Is(err, errRecord) {
		t.Errorf("a truncated row: %v", err)
	}
}

// A directory of format 1, whose dedup rows lack the entries checksums, is
// refused, naming its format and the ones this build reads, and not touched.
func TestFormat1Refused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, testMeta, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := key(prefixMeta, metaIdentity)
	if err := s.db.Put(k, seal(k, appendUvarints([]byte{1}, testMeta.ClusterID, testMeta.NodeID, testMeta.K)), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for range 2 {
		_, err = Open(dir, testMeta, Options{})
		if err == nil || !strings.Contains(err.Error(), "format 1") || !strings.Contains(err.Error(), fmt.Sprintf("formats %d to %d", oldestFormat, formatVersion)) {
			t.Fatalf("opening a format-1 directory: %v, want a refusal naming format 1 and the ones this build reads", err)
		}
	}
}
