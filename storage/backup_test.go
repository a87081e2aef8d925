package storage

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// backupAll reads a whole backup view, in small pieces.
func backupAll(t *testing.T, b *Backup) ([]core.Entry, []core.DedupEntry) {
	t.Helper()
	var ents []core.Entry
	for next := b.State.FirstIndex; next < b.State.NextIndex; {
		es, err := b.Entries(next, 7, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			t.Fatalf("no entries at %d below %d", next, b.State.NextIndex)
		}
		ents = append(ents, es...)
		next += uint64(len(es))
	}
	var rows []core.DedupEntry
	for after, more := uint64(0), true; more; {
		rs, m, err := b.Dedup(after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range rs {
			after = d.ClientID
		}
		rows, more = append(rows, rs...), m
	}
	return ents, rows
}

// A backup view holds one point of the live state: a trim and appends saved
// while it is open change nothing it returns; a restore of it loads as that
// state, with the dedup table as the live and the base's, in a directory
// with its own incarnation.
func TestBackupAndRestore(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	st := baseRun(t, s, core.ApplyState{}, 40)
	// A trim at index 30: a base.
	st.FirstIndex = 30
	rows, err := s.liveDedup(s.db)
	if err != nil {
		t.Fatal(err)
	}
	save(t, s, instance.Ready{State: &st, Base: &core.Snapshot{State: st, Dedup: rows}})
	st = baseRun(t, s, st, 10)

	b, err := s.Backup()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if !reflect.DeepEqual(b.State, st) || b.Rows != 5 {
		t.Fatalf("backup state %+v with %d rows, want %+v with 5", b.State, b.Rows, st)
	}
	// Meanwhile: more appends and a trim past the view's first index.
	later := baseRun(t, s, st, 5)
	later.FirstIndex = 80
	save(t, s, instance.Ready{State: &later, Base: &core.Snapshot{State: later}})
	for range 3 {
		save(t, s, instance.Ready{}) // the deletion runs
	}

	ents, rows := backupAll(t, b)
	if len(ents) != int(st.NextIndex-st.FirstIndex) || ents[0].Index != 30 {
		t.Fatalf("backup holds %d entries from %d, want [%d,%d)", len(ents), ents[0].Index, st.FirstIndex, st.NextIndex)
	}
	for _, e := range ents {
		if string(e.Data) != string(baseEntry(e.Index)) {
			t.Fatalf("entry %d: %q", e.Index, e.Data)
		}
	}
	live, err := s.liveDedup(b.snap)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rows, live) || len(rows) != 5 {
		t.Fatalf("backup rows %+v, want %+v", rows, live)
	}

	// Restore it for node 3 of another cluster.
	dir := filepath.Join(t.TempDir(), "restored")
	meta := Meta{ClusterID: 99, NodeID: 3, K: 64}
	r, err := Restore(dir, meta, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := r.Entry(e.Data); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the directory exists before Finish: %v", err)
	}
	if err := r.Finish(rows); err != nil {
		t.Fatal(err)
	}
	rs, err := Open(dir, meta, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if rs.Incarnation() == s.Incarnation() || rs.Incarnation() == 0 {
		t.Fatalf("restored incarnation %x, source's %x", rs.Incarnation(), s.Incarnation())
	}
	d := mustLoad(t, rs)
	if !reflect.DeepEqual(d.State, st) || d.Base != st.Applied || !reflect.DeepEqual(d.Dedup, rows) || d.Promised != 0 || len(d.Accepted) != 0 {
		t.Fatalf("restored %+v", d)
	}
	got, err := rs.Entries(st.FirstIndex, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ents) {
		t.Fatalf("restored entries differ")
	}
	// Retention measures the restored entries: their bytes, and all of
	// them applied by the state's log time.
	var total uint64
	for _, e := range ents {
		total += uint64(len(e.Data))
	}
	if before, held, err := rs.RetainBytes(1 << 40); err != nil || held != total || before != st.FirstIndex {
		t.Fatalf("restored RetainBytes: before %d, held %d, %v; want %d, %d", before, held, err, st.FirstIndex, total)
	}
	if before, err := rs.RetainAge(st.LogTime); err != nil || before != st.NextIndex {
		t.Fatalf("restored RetainAge(%d) = %d, %v; want %d", st.LogTime, before, err, st.NextIndex)
	}
	// A peer behind it installs its base: the whole copy.
	ch := snapshot(t, rs, 0, 0, 0, 0, 0)
	if !reflect.DeepEqual(ch.State, st) || len(ch.Entries) != len(ents) {
		t.Fatalf("base of the restored directory: %+v with %d entries", ch.State, len(ch.Entries))
	}
}

// Restore refuses a non-empty directory and leaves it alone; a restore
// that stops half way leaves no directory behind.
func TestRestoreRefusesNonEmpty(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(dir, testMeta, core.ApplyState{}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("Restore into a non-empty directory: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x")); err != nil || string(b) != "keep" {
		t.Fatalf("the directory was touched: %q, %v", b, err)
	}

	dir = filepath.Join(t.TempDir(), "d")
	r, err := Restore(dir, testMeta, core.ApplyState{Applied: 3, FirstIndex: 1, NextIndex: 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Entry([]byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := r.Finish(nil); err == nil {
		t.Fatal("Finish with an entry missing succeeded")
	}
	r.Abort()
	for _, p := range []string{dir, dir + ".restoring"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s after an aborted restore: %v", p, err)
		}
	}
}

// A page of Backup.Dedup is its caller's to append to: the next page is
// the same after it. It fails when a page shares its spare capacity with
// the view's table.
func TestBackupDedupPageAppend(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	var rows []core.DedupEntry
	for c := uint64(1); c <= 4; c++ {
		rows = append(rows, core.DedupEntry{ClientID: c, LastUsed: c})
	}
	save(t, s, instance.Ready{Dedup: rows})
	b, err := s.Backup()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	page, more, err := b.Dedup(0, 2)
	if err != nil || !more || len(page) != 2 {
		t.Fatalf("first page: %+v, more %v, %v", page, more, err)
	}
	_ = append(page, core.DedupEntry{ClientID: 99})
	next, _, err := b.Dedup(2, 2)
	if err != nil || !same(next, rows[2:]) {
		t.Fatalf("second page after an append to the first: %+v, %v; want %+v", next, err, rows[2:])
	}
}
