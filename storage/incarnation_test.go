package storage

import (
	"strings"
	"sync"
	"testing"

	"github.com/syndtr/goleveldb/leveldb"
)

// A new directory gets a non-zero incarnation that survives a reopen; two
// new directories get different ones.
func TestIncarnation(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	inc := s.Incarnation()
	if inc == 0 {
		t.Fatal("a new directory has incarnation 0")
	}
	if !has(t, s, key(prefixMeta, metaIncarnation)) {
		t.Fatal("the incarnation is not on disk")
	}
	s.Close()
	if s = openT(t, dir, Options{}); s.Incarnation() != inc {
		t.Fatalf("reopened with incarnation %016x, created with %016x", s.Incarnation(), inc)
	}
	if other := openT(t, t.TempDir(), Options{}); other.Incarnation() == inc {
		t.Fatalf("two new directories share incarnation %016x", inc)
	}
}

// A directory an older build created (no incarnation record) gets one at
// its next Open, logged once, and keeps it from then on.
func TestIncarnationOfOlderDirectory(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	b := new(leveldb.Batch)
	b.Delete(key(prefixMeta, metaIncarnation))
	if err := s.db.Write(b, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	var mu sync.Mutex
	var lines []string
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, format)
	}
	s = openT(t, dir, Options{Logf: logf})
	inc := s.Incarnation()
	if inc == 0 || len(lines) != 1 || !strings.Contains(lines[0], "had no incarnation") {
		t.Fatalf("incarnation %016x, log %q", inc, lines)
	}
	s.Close()
	if s = openT(t, dir, Options{Logf: logf}); s.Incarnation() != inc || len(lines) != 1 {
		t.Fatalf("second open: incarnation %016x (was %016x), log %q", s.Incarnation(), inc, lines)
	}
}

// The peers' incarnations persist across a reopen.
func TestPeerIncarnations(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	if got, err := s.PeerIncarnations(); err != nil || len(got) != 0 {
		t.Fatalf("new directory: %v, %v", got, err)
	}
	want := map[uint64]uint64{2: 0xfeedface, 3: 1<<63 + 5}
	for id, inc := range want {
		if err := s.SetPeerIncarnation(id, inc); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openT(t, dir, Options{})
	got, err := s.PeerIncarnations()
	if err != nil || !same(got, want) {
		t.Fatalf("after reopen: %v, %v; want %v", got, err, want)
	}
}
