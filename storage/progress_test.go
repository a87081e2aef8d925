package storage

import (
	"bytes"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// progressRun saves n Readys on top of st, each appending 10 entries of
// size bytes at log time st.LogTime+step, and returns the state after them.
func progressRun(t *testing.T, s *Store, st core.ApplyState, n int, size int, step uint64) core.ApplyState {
	t.Helper()
	for range n {
		var rd instance.Ready
		for range 10 {
			rd.Entries = append(rd.Entries, core.Entry{Index: st.NextIndex, Data: bytes.Repeat([]byte{'x'}, size)})
			st.NextIndex++
		}
		st.Applied++
		st.LogTime += step
		next := st
		rd.State = &next
		save(t, s, rd)
	}
	return st
}

// The progress rows measure the log by log time and by bytes, survive a
// restart, and go with a trim.
func TestProgressRows(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	// 100 Saves of 10 entries of 100 bytes, log time 1000, 2000, ...
	st := progressRun(t, s, core.ApplyState{}, 100, 100, 1000)
	check := func(s *Store, firstRow uint64) {
		t.Helper()
		// Entries below 510 were applied by log time 51000 (the Save
		// that moved it there ended the log at 510); the row after it
		// is newer.
		if b, err := s.RetainAge(51000); err != nil || b != 510 {
			t.Fatalf("RetainAge(51000) = %d, %v; want 510", b, err)
		}
		if b, err := s.RetainAge(51999); err != nil || b != 510 {
			t.Fatalf("RetainAge(51999) = %d, %v; want 510", b, err)
		}
		if b, err := s.RetainAge(999); err != nil || b != 0 {
			t.Fatalf("RetainAge(999) = %d, %v; want 0 (nothing that old)", b, err)
		}
		if b, err := s.RetainAge(1 << 40); err != nil || b != 1000 {
			t.Fatalf("RetainAge(far future) = %d, %v; want 1000", b, err)
		}
		// [800, 1000) holds 20,000 bytes.
		b, held, err := s.RetainBytes(20000)
		if err != nil || b != 800 {
			t.Fatalf("RetainBytes(20000) = %d, %v; want 800", b, err)
		}
		// Measured from the first row at or above the first index, or
		// between the rows around it.
		if want := 100 * (1000 - firstRow); held != want {
			t.Fatalf("held %d bytes, want %d", held, want)
		}
		if b, _, err := s.RetainBytes(19999); err != nil || b != 801 {
			t.Fatalf("RetainBytes(19999) = %d, %v; want 801", b, err)
		}
	}
	check(s, 10)
	s.Close()
	s = openT(t, dir, Options{})
	check(s, 10)

	// A trim to 505: the rows below 500 go (the one at 500 measures
	// the first entry), the rest still measure.
	st.FirstIndex = 505
	save(t, s, instance.Ready{State: &st, Base: &core.Snapshot{State: st}})
	if n := countKeys(t, s, prefixProgress, 0, 500); n != 0 {
		t.Fatalf("%d progress rows below the first index after a trim", n)
	}
	if n := countKeys(t, s, prefixProgress, 500, 501); n != 1 {
		t.Fatal("the row at 500, below the first index 505, is gone")
	}
	check(s, 505)
	if b, err := s.RetainAge(10000); err != nil || b != 0 {
		t.Fatalf("RetainAge below the first index = %d, %v; want 0", b, err)
	}

	// Without log time moving, a row per MiB of entries.
	before := countKeys(t, s, prefixProgress, 0, 1<<62)
	st = progressRun(t, s, st, 30, 10000, 0) // 3 MB
	if n := countKeys(t, s, prefixProgress, 0, 1<<62) - before; n < 2 || n > 3 {
		t.Fatalf("%d rows for 3 MB of entries at one log time, want 2 or 3", n)
	}
}
