package storage

import (
	"errors"
	"maps"
	"path/filepath"
	"testing"
)

// A directory created with a join record keeps it, with the incarnation the
// joiner drew, and OpenJoined finds its cluster without being told; a
// directory created without one is refused by OpenJoined, and a missing or
// empty one is ErrNoStore and stays uncreated.
func TestJoinRecord(t *testing.T) {
	dir := t.TempDir()
	j := JoinRecord{Cluster: "prod", Genesis: map[uint64]string{1: "10.0.0.1:7001", 2: "10.0.0.2:7001", 3: "10.0.0.3:7001"}}
	s := openT(t, dir, Options{Incarnation: 0xfeed, Join: &j})
	if s.Incarnation() != 0xfeed {
		t.Fatalf("incarnation %x, want feed", s.Incarnation())
	}
	s.Close()
	s, err := OpenJoined(dir, testMeta.NodeID, testMeta.K, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := s.Joined()
	if !ok || got.Cluster != j.Cluster || !maps.Equal(got.Genesis, j.Genesis) || s.Meta() != testMeta || s.Incarnation() != 0xfeed {
		t.Fatalf("reopened: %+v %v meta %+v incarnation %x", got, ok, s.Meta(), s.Incarnation())
	}
	s.Close()
	if _, err := OpenJoined(dir, testMeta.NodeID+1, testMeta.K, Options{}); !errors.Is(err, ErrForeign) {
		t.Fatalf("another node's ID: %v, want ErrForeign", err)
	}

	plain := t.TempDir()
	openT(t, plain, Options{}).Close()
	if _, err := OpenJoined(plain, testMeta.NodeID, testMeta.K, Options{}); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("a directory that did not join: %v, want ErrNotJoined", err)
	}
	missing := filepath.Join(t.TempDir(), "x")
	if _, err := OpenJoined(missing, testMeta.NodeID, testMeta.K, Options{}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("a missing directory: %v, want ErrNoStore", err)
	}
	if _, err := OpenJoined(t.TempDir(), testMeta.NodeID, testMeta.K, Options{}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("an empty directory: %v, want ErrNoStore", err)
	}
}
