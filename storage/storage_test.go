package storage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/syndtr/goleveldb/leveldb"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

var testMeta = Meta{ClusterID: 7, NodeID: 1, K: 64}

func openT(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, testMeta, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func save(t testing.TB, s *Store, rd instance.Ready) {
	t.Helper()
	if err := s.Save(&rd); err != nil {
		t.Fatal(err)
	}
}

func userValue(entries ...string) core.Value {
	c := core.Command{Kind: core.CmdUser, ClientID: 9, Seq: 1, Origin: 1, Req: 5}
	for _, e := range entries {
		c.Entries = append(c.Entries, []byte(e))
	}
	return core.Value{Commands: []core.Command{c}}
}

func mustLoad(t testing.TB, s *Store) instance.Durable {
	t.Helper()
	d, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func has(t testing.TB, s *Store, k []byte) bool {
	t.Helper()
	ok, err := s.db.Has(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func same(a, b any) bool {
	return reflect.DeepEqual(fmt.Sprintf("%+v", a), fmt.Sprintf("%+v", b))
}

// history is a short run of Readys that exercises every record kind.
func history(t testing.TB, s *Store) {
	t.Helper()
	v0, v1, v2, v3 := userValue("a", "b"), userValue("c"), userValue("d"), core.Value{Commands: []core.Command{{Kind: core.CmdNoop}}}
	// An acceptor promise and three accepts.
	save(t, s, instance.Ready{Promised: 65, Accepted: []core.InstanceValue{{Instance: 0, Ballot: 65, Value: v0}, {Instance: 1, Ballot: 65, Value: v1}, {Instance: 2, Ballot: 65, Value: v2}}})
	// Instances 0 and 1 applied.
	save(t, s, instance.Ready{
		Chosen:  []core.InstanceValue{{Instance: 0, Value: v0}, {Instance: 1, Value: v1}},
		Entries: []core.Entry{{Index: 0, Data: []byte("a")}, {Index: 1, Data: []byte("b")}, {Index: 2, Data: []byte("c")}},
		Dedup:   []core.DedupEntry{{ClientID: 9, Recent: []core.SeqIndexes{{Seq: 1, First: 0, Last: 1}}}, {ClientID: 11, Recent: []core.SeqIndexes{{Seq: 4, First: 2, Last: 2}}}},
		State:   &core.ApplyState{Applied: 2, NextIndex: 3, LeaseHolder: 1, LeaseVersion: 1},
	})
	// A higher promise; instance 3 accepted and, with 2, applied in the same Ready.
	save(t, s, instance.Ready{
		Promised: 130,
		Accepted: []core.InstanceValue{{Instance: 3, Ballot: 130, Value: v3}, {Instance: 4, Ballot: 130, Value: v3}},
		Chosen:   []core.InstanceValue{{Instance: 2, Value: v2}, {Instance: 3, Value: v3}},
		Entries:  []core.Entry{{Index: 3, Data: []byte("d")}},
		Dedup:    []core.DedupEntry{{ClientID: 9, Recent: []core.SeqIndexes{{Seq: 2, First: 3, Last: 3}}}},
		State:    &core.ApplyState{Applied: 4, NextIndex: 4, LeaseHolder: 1, LeaseVersion: 1},
	})
}

var wantDurable = instance.Durable{
	Promised: 130,
	Accepted: []core.InstanceValue{{Instance: 4, Ballot: 130, Value: core.Value{Commands: []core.Command{{Kind: core.CmdNoop}}}}},
	State:    core.ApplyState{Applied: 4, NextIndex: 4, LeaseHolder: 1, LeaseVersion: 1},
	Dedup:    []core.DedupEntry{{ClientID: 9, Recent: []core.SeqIndexes{{Seq: 2, First: 3, Last: 3}}}, {ClientID: 11, Recent: []core.SeqIndexes{{Seq: 4, First: 2, Last: 2}}}},
}

func TestSaveLoadRoundTrip(t *testing.T) {
	// A Save deletes the accepted values below Applied by key, or by a walk
	// when there are more than acceptedDeletesByKey: both ways.
	for _, byKey := range []uint64{acceptedDeletesByKey, 0} {
		t.Run(fmt.Sprintf("deletes-by-key=%d", byKey), func(t *testing.T) {
			defer func(n uint64) { acceptedDeletesByKey = n }(acceptedDeletesByKey)
			acceptedDeletesByKey = byKey
			s := openT(t, t.TempDir(), Options{})
			if d := mustLoad(t, s); !same(d, instance.Durable{}) {
				t.Fatalf("fresh store loads %+v", d)
			}
			v0 := userValue("a", "b")
			save(t, s, instance.Ready{Promised: 65, Accepted: []core.InstanceValue{{Instance: 0, Ballot: 65, Value: v0}, {Instance: 1, Ballot: 65, Value: v0}}})
			if d := mustLoad(t, s); d.Promised != 65 || len(d.Accepted) != 2 || !same(d.Accepted[0].Value, v0) || d.Accepted[1].Ballot != 65 {
				t.Fatalf("after accept: %+v", d)
			}

			s = openT(t, t.TempDir(), Options{})
			history(t, s)
			d := mustLoad(t, s)
			if !same(d, wantDurable) {
				t.Fatalf("Load:\n got %+v\nwant %+v", d, wantDurable)
			}
			if !reflect.DeepEqual(s.State(), wantDurable.State) {
				t.Fatalf("State %+v", s.State())
			}
			for i := uint64(0); i < 4; i++ {
				if has(t, s, key(prefixAccepted, i)) {
					t.Fatalf("accepted record %d below Applied still on disk", i)
				}
			}
			ch, err := s.Chosen(0, 100, 0)
			if err != nil || len(ch) != 4 || !same(ch[0].Value, userValue("a", "b")) || ch[3].Instance != 3 {
				t.Fatalf("Chosen: %+v %v", ch, err)
			}
			es, err := s.Entries(0, 0, 0)
			if err != nil || len(es) != 4 || string(es[3].Data) != "d" || es[3].Index != 3 {
				t.Fatalf("Entries: %+v %v", es, err)
			}
		})
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	history(t, s)
	before := mustLoad(t, s)
	ch1, _ := s.Chosen(0, 100, 0)
	es1, _ := s.Entries(0, 0, 0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Load after Close: %v", err)
	}

	s = openT(t, dir, Options{})
	if s.Meta() != testMeta || !reflect.DeepEqual(s.State(), wantDurable.State) {
		t.Fatalf("reopened: meta %+v state %+v", s.Meta(), s.State())
	}
	if after := mustLoad(t, s); !same(after, before) {
		t.Fatalf("reopen changed the state:\n%+v\n%+v", before, after)
	}
	ch2, _ := s.Chosen(0, 100, 0)
	es2, _ := s.Entries(0, 0, 0)
	if !same(ch1, ch2) || !same(es1, es2) {
		t.Fatal("reopen changed chosen values or entries")
	}
}

// TestLargeSave: a batch larger than the write buffer takes goleveldb's
// transaction path (written straight to synced tables, no journal); it must
// be as durable and atomic as a journaled one.
func TestLargeSave(t *testing.T) {
	dir := t.TempDir()
	o := Options{WriteBufferBytes: 64 << 10}
	s := openT(t, dir, o)
	history(t, s)
	big := bytes.Repeat([]byte("y"), 300<<10)
	save(t, s, instance.Ready{
		Chosen:  []core.InstanceValue{{Instance: 4, Value: core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{big}}}}}},
		Entries: []core.Entry{{Index: 4, Data: big}},
		State:   &core.ApplyState{Applied: 5, NextIndex: 5, LeaseHolder: 1, LeaseVersion: 1},
	})
	s.Close()
	s = openT(t, dir, o)
	if st := s.State(); st.Applied != 5 || st.NextIndex != 5 {
		t.Fatalf("state after reopen %+v", st)
	}
	es, err := s.Entries(4, 1, 0)
	if err != nil || len(es) != 1 || !bytes.Equal(es[0].Data, big) {
		t.Fatalf("large entry after reopen: %d %v", len(es), err)
	}
	mustLoad(t, s)
}

func TestBounds(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	var chosen []core.InstanceValue
	var entries []core.Entry
	for i := uint64(0); i < 10; i++ {
		chosen = append(chosen, core.InstanceValue{Instance: i, Value: userValue(fmt.Sprintf("%010d", i))})
		entries = append(entries, core.Entry{Index: i, Data: []byte(fmt.Sprintf("%010d", i))})
	}
	// The entries in three blocks: [0,3), [3,4) and [4,10).
	save(t, s, instance.Ready{Chosen: chosen, Entries: entries[:3], State: &core.ApplyState{Applied: 10, NextIndex: 3}})
	save(t, s, instance.Ready{Entries: entries[3:4], State: &core.ApplyState{Applied: 10, NextIndex: 4}})
	save(t, s, instance.Ready{Entries: entries[4:], State: &core.ApplyState{Applied: 10, NextIndex: 10}})
	vsize := chosen[0].Value.Size()

	chosenCases := []struct {
		from, to   uint64
		max, want  int
		wantFirst  uint64
		wantNoData bool
	}{
		{0, 10, 0, 10, 0, false},
		{2, 5, 0, 3, 2, false},
		{0, 10, 2*vsize + vsize/2, 2, 0, false},
		{0, 10, 3 * vsize, 3, 0, false},
		{4, 10, 1, 1, 4, false}, // at least one
		{10, 20, 0, 0, 0, true},
		{5, 5, 0, 0, 0, true},
	}
	for _, c := range chosenCases {
		got, err := s.Chosen(c.from, c.to, c.max)
		if err != nil || len(got) != c.want || (!c.wantNoData && got[0].Instance != c.wantFirst) {
			t.Errorf("Chosen(%d,%d,%d) = %d values, %v; want %d", c.from, c.to, c.max, len(got), err, c.want)
		}
		for i, iv := range got {
			if iv.Instance != c.from+uint64(i) || !same(iv.Value, chosen[iv.Instance].Value) {
				t.Errorf("Chosen(%d,%d,%d)[%d] = %+v", c.from, c.to, c.max, i, iv)
			}
		}
	}
	// A hole: instance 12 without 10 and 11. Chosen stops before the hole.
	save(t, s, instance.Ready{Chosen: []core.InstanceValue{{Instance: 12, Value: userValue("x")}}})
	if got, err := s.Chosen(8, 20, 0); err != nil || len(got) != 2 {
		t.Errorf("Chosen across a hole: %d values, %v", len(got), err)
	}
	if got, err := s.Chosen(10, 20, 0); err != nil || len(got) != 0 {
		t.Errorf("Chosen starting at a hole: %d values, %v", len(got), err)
	}

	entryCases := []struct {
		from            uint64
		count, max      int
		want            int
		wantFirstOrNone uint64
	}{
		{0, 0, 0, 10, 0},
		{0, 3, 0, 3, 0},
		{7, 100, 0, 3, 7},
		{0, 0, 25, 2, 0},
		{0, 0, 30, 3, 0},
		{3, 0, 5, 1, 3}, // at least one
		{0, 4, 25, 2, 0},
		{10, 5, 100, 0, 0},
		{1000, 5, 100, 0, 0},
	}
	for _, c := range entryCases {
		got, err := s.Entries(c.from, c.count, c.max)
		if err != nil || len(got) != c.want || (c.want > 0 && got[0].Index != c.wantFirstOrNone) {
			t.Errorf("Entries(%d,%d,%d) = %d entries, %v; want %d", c.from, c.count, c.max, len(got), err, c.want)
		}
		for i, e := range got {
			if e.Index != c.from+uint64(i) || !bytes.Equal(e.Data, entries[e.Index].Data) {
				t.Errorf("Entries(%d,%d,%d)[%d] = %+v", c.from, c.count, c.max, i, e)
			}
		}
	}

	// Trim below 4.
	save(t, s, instance.Ready{State: &core.ApplyState{Applied: 10, NextIndex: 10, FirstIndex: 4}})
	for _, from := range []uint64{0, 3} {
		_, err := s.Entries(from, 10, 0)
		var te *TrimmedError
		if !errors.Is(err, ErrTrimmed) || !errors.As(err, &te) || te.First != 4 {
			t.Errorf("Entries(%d) after trim: %v", from, err)
		}
	}
	if got, err := s.Entries(4, 0, 0); err != nil || len(got) != 6 || got[0].Index != 4 {
		t.Errorf("Entries(4) after trim: %d, %v", len(got), err)
	}
	if n := entriesOnDisk(t, s, 0, 4); n != 0 {
		t.Errorf("%d entries below the first index still on disk after the trim", n)
	}
}

func TestTrimChunks(t *testing.T) {
	defer func(c uint64) { trimChunk = c }(trimChunk)
	trimChunk = 5
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	// One block per entry: the trim deletes whole blocks.
	for i := uint64(0); i < 30; i++ {
		save(t, s, instance.Ready{Entries: []core.Entry{{Index: i, Data: []byte{byte(i)}}}, State: &core.ApplyState{NextIndex: i + 1}})
	}
	// Trim to 23 in the Ready that also applies entries 30 and 31.
	save(t, s, instance.Ready{
		Entries: []core.Entry{{Index: 30, Data: []byte{30}}, {Index: 31, Data: []byte{31}}},
		State:   &core.ApplyState{NextIndex: 32, FirstIndex: 23},
	})
	onDisk := func() int { return entriesOnDisk(t, s, 0, 32) }
	if got := onDisk(); got != 32-5 {
		t.Fatalf("after the trimming Save: %d entries on disk, want %d (one chunk deleted)", got, 32-5)
	}
	if _, err := s.Entries(5, 1, 0); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("entry below the first index but not yet deleted is visible: %v", err)
	}
	save(t, s, instance.Ready{}) // an empty Ready continues the deletion
	if got := onDisk(); got != 32-10 {
		t.Fatalf("after one more Save: %d on disk", got)
	}
	// Restart: the cursor resumes.
	s.Close()
	s = openT(t, dir, Options{})
	if s.trimCursor != 10 {
		t.Fatalf("trim cursor after reopen %d, want 10", s.trimCursor)
	}
	for range 3 {
		save(t, s, instance.Ready{})
	}
	if got := onDisk(); got != 32-23 {
		t.Fatalf("after the trim finished: %d on disk, want %d", got, 32-23)
	}
	if s.trimCursor != 23 {
		t.Fatalf("trim cursor %d", s.trimCursor)
	}
	if got, err := s.Entries(23, 0, 0); err != nil || len(got) != 9 {
		t.Fatalf("Entries(23): %d %v", len(got), err)
	}
}

// TestConcurrentReadsDuringTrim reads while Saves append and trim: a reader
// must never see a hole, only entries or a TrimmedError.
func TestConcurrentReadsDuringTrim(t *testing.T) {
	defer withTrimChunk(3)()
	s := openT(t, t.TempDir(), Options{})
	readWhile(t, 4, func() error {
		st := s.State()
		es, err := s.Entries(st.FirstIndex, 50, 0)
		if err != nil && !errors.Is(err, ErrTrimmed) {
			return err
		}
		for i, e := range es {
			if e.Index != es[0].Index+uint64(i) || e.Data[0] != byte(e.Index) {
				return fmt.Errorf("bad entry %+v", e)
			}
		}
		_, err = s.Chosen(st.Applied-min(st.Applied, 2), st.Applied, 1000)
		return err
	}, func() {
		st := core.ApplyState{}
		for i := uint64(0); i < 200; i++ {
			rd := instance.Ready{Chosen: []core.InstanceValue{{Instance: i, Value: userValue("x")}}}
			for j := 0; j < 4; j++ {
				rd.Entries = append(rd.Entries, core.Entry{Index: st.NextIndex, Data: []byte{byte(st.NextIndex)}})
				st.NextIndex++
			}
			st.Applied = i + 1
			if i%5 == 4 {
				st.FirstIndex = st.NextIndex - 6
				rd.Base = &core.Snapshot{State: st} // as the core sets it with every trim
			}
			rd.State = &st
			save(t, s, rd)
		}
	})
}

// readWhile runs read in readers goroutines, over and over, while write
// runs, and fails the test with the first error a read returned.
func readWhile(t *testing.T, readers int, read func() error, write func()) {
	t.Helper()
	stop := make(chan struct{})
	errc := make(chan error, readers)
	var wg sync.WaitGroup
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := read(); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	write()
	close(stop)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
}

func TestForeign(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	history(t, s)
	s.Close()
	for _, m := range []Meta{
		{ClusterID: 8, NodeID: 1, K: 64},
		{ClusterID: 7, NodeID: 2, K: 64},
		{ClusterID: 7, NodeID: 1, K: 16},
	} {
		_, err := Open(dir, m, Options{})
		if !errors.Is(err, ErrForeign) {
			t.Fatalf("Open with %+v: %v", m, err)
		}
		for _, want := range []string{dir, "belongs to cluster 7 node 1", "point --data-dir at this node's own directory or at an empty one"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
	// The directory was not touched: the right node still opens it intact.
	s = openT(t, dir, Options{})
	if d := mustLoad(t, s); !same(d, wantDurable) {
		t.Fatalf("after refused opens: %+v", d)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		fi, _ := e.Info()
		names = append(names, fmt.Sprintf("%s:%d", e.Name(), fi.Size()))
	}
	return names
}

func TestNotAStore(t *testing.T) {
	t.Run("random files", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello"), 0o644)
		os.Mkdir(filepath.Join(dir, "photos"), 0o755)
		before := listDir(t, dir)
		_, err := Open(dir, testMeta, Options{})
		if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "not a paxosd data directory") || !strings.Contains(err.Error(), "notes.txt") {
			t.Fatalf("Open: %v", err)
		}
		if after := listDir(t, dir); !slices.Equal(before, after) {
			t.Fatalf("directory changed: %v -> %v", before, after)
		}
	})
	t.Run("other leveldb", func(t *testing.T) {
		dir := t.TempDir()
		db, err := leveldb.OpenFile(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Put([]byte("user:1"), []byte("alice"), nil)
		db.Close()
		_, err = Open(dir, testMeta, Options{})
		if !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "without paxosd metadata") {
			t.Fatalf("Open: %v", err)
		}
		db, err = leveldb.OpenFile(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, err := db.Get([]byte("user:1"), nil)
		db.Close()
		if string(v) != "alice" {
			t.Fatalf("the foreign database lost its data: %q %v", v, err)
		}
	})
	t.Run("empty leveldb from a crashed first open", func(t *testing.T) {
		dir := t.TempDir()
		db, err := leveldb.OpenFile(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		s := openT(t, dir, Options{})
		history(t, s)
	})
	t.Run("a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		os.WriteFile(f, nil, 0o644)
		if _, err := Open(f, testMeta, Options{}); err == nil {
			t.Fatal("opened a file")
		}
	})
	t.Run("new and empty directories", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "a", "b")
		s := openT(t, dir, Options{})
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("created %v %v", fi.Mode(), err)
		}
		s.Close()
		s = openT(t, t.TempDir(), Options{})
		history(t, s)
	})
	t.Run("locked", func(t *testing.T) {
		dir := t.TempDir()
		openT(t, dir, Options{})
		if _, err := Open(dir, testMeta, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second Open of an open store: %v", err)
		}
	})
}

func findFile(t *testing.T, dir, suffix string) string {
	t.Helper()
	var best string
	var size int64 = -1
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, _ := e.Info(); strings.HasSuffix(e.Name(), suffix) && fi.Size() > size {
			best, size = filepath.Join(dir, e.Name()), fi.Size()
		}
	}
	if best == "" {
		t.Fatalf("no %s file in %s: %v", suffix, dir, listDir(t, dir))
	}
	return best
}

func flip(t *testing.T, path string, off int64, n int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := off; i < off+int64(n) && i < int64(len(data)); i++ {
		data[i] ^= 0x5a
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	ents, _ := os.ReadDir(from)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(to, e.Name()), data, 0o644)
	}
	return to
}

// bulk saves n applied instances with one 1 KiB entry each.
func bulk(t testing.TB, s *Store, n uint64) {
	st := s.State()
	for i := uint64(0); i < n; i++ {
		data := bytes.Repeat([]byte{byte(st.NextIndex)}, 1024)
		rd := instance.Ready{
			Accepted: []core.InstanceValue{{Instance: st.Applied + 1, Ballot: 65, Value: userValue("next")}},
			Chosen:   []core.InstanceValue{{Instance: st.Applied, Value: core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{data}}}}}},
			Entries:  []core.Entry{{Index: st.NextIndex, Data: data}},
		}
		st.Applied++
		st.NextIndex++
		rd.State = &st
		save(t, s, rd)
	}
}

func TestCorruptJournal(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	history(t, s)
	bulk(t, s, 50) // more than one 32 KiB journal block
	s.Close()
	log := findFile(t, dir, ".log")

	pristine := copyDir(t, dir)
	flip(t, log, 40, 1) // the second record (the first Save) and the rest of its block
	damaged := copyDir(t, dir)
	_, err := Open(dir, testMeta, Options{})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a directory with a damaged journal: %v", err)
	}
	for _, want := range []string{dir, filepath.Base(log), "must not vote", "restore it", "replace the node"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Log(err)

	// Why the strict flags matter: goleveldb's defaults open the same
	// directory and silently drop the damaged block.
	count := func(dir string) int {
		db, err := leveldb.OpenFile(dir, nil)
		if err != nil {
			t.Fatalf("non-strict goleveldb refused (%v): the strictness test would prove nothing", err)
		}
		defer db.Close()
		it := db.NewIterator(nil, nil)
		defer it.Release()
		n := 0
		for it.Next() {
			n++
		}
		return n
	}
	if p, d := count(pristine), count(damaged); d >= p {
		t.Fatalf("non-strict goleveldb kept all %d keys (pristine %d): the test does not damage what it thinks", d, p)
	} else {
		t.Logf("non-strict goleveldb opens the damaged copy and silently loses %d of %d keys", p-d, p)
	}
}

func TestCorruptTable(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{WriteBufferBytes: 64 << 10})
	bulk(t, s, 400) // ~800 KiB: several tables
	s.Close()
	s = openT(t, dir, Options{WriteBufferBytes: 64 << 10}) // flushes the journal into a table
	s.Close()
	table := findFile(t, dir, ".ldb")
	fi, _ := os.Stat(table)
	flip(t, table, fi.Size()/2, 16)

	// Damage must surface as ErrCorrupt somewhere between Open and a full
	// read; success with missing data is the failure.
	s, err := Open(dir, testMeta, Options{WriteBufferBytes: 64 << 10})
	if err == nil {
		defer s.Close()
		_, err = s.Load()
		if err == nil {
			_, err = s.Chosen(0, 400, 0)
		}
		if err == nil {
			_, err = s.Entries(0, 0, 0)
		}
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged table %s: got %v, want ErrCorrupt", table, err)
	}
	if !strings.Contains(err.Error(), filepath.Base(table)) && !strings.Contains(err.Error(), "record ") {
		t.Errorf("error does not name the file: %v", err)
	}
	t.Log(err)
	if s != nil {
		if _, err := s.Chosen(0, 1, 0); !errors.Is(err, ErrFailed) {
			t.Errorf("after corruption the store still serves: %v", err)
		}
	}
}

func TestRecordChecksum(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	history(t, s)
	k := key(prefixBlock, 0) // entries 0 to 2
	v, _ := s.db.Get(k, nil)
	v[len(v)-1] ^= 1
	s.db.Put(k, v, nil)
	_, err := s.Entries(0, 0, 0)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "l/0") {
		t.Fatalf("Entries over a damaged record: %v", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrFailed) {
		t.Fatalf("store still usable: %v", err)
	}
	// A record moved under another key fails too: the CRC covers the key.
	s = openT(t, t.TempDir(), Options{})
	history(t, s)
	v, _ = s.db.Get(key(prefixChosen, 1), nil)
	s.db.Put(key(prefixChosen, 2), v, nil)
	if _, err := s.Chosen(0, 4, 0); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "c/2") {
		t.Fatalf("Chosen over a misplaced record: %v", err)
	}
}

func TestTornJournalTail(t *testing.T) {
	// build returns the store's directory, its journal, and the journal's
	// length before the last Save: an unsynced one.
	build := func(t *testing.T) (string, string, int64) {
		dir := t.TempDir()
		s := openT(t, dir, Options{})
		history(t, s)
		fi, err := os.Stat(findFile(t, dir, ".log"))
		if err != nil {
			t.Fatal(err)
		}
		// The last Save is a batch of several journal blocks, as a
		// catch-up Ready is.
		big := bytes.Repeat([]byte("z"), 200<<10)
		save(t, s, instance.Ready{
			Chosen:  []core.InstanceValue{{Instance: 4, Value: core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{big}}}}}},
			Entries: []core.Entry{{Index: 4, Data: big}},
			State:   &core.ApplyState{Applied: 5, NextIndex: 5, LeaseHolder: 1, LeaseVersion: 1},
		})
		s.Close()
		return dir, findFile(t, dir, ".log"), fi.Size()
	}
	reopen := func(t *testing.T, dir string) (*Store, []string, error) {
		var logged []string
		s, err := Open(dir, testMeta, Options{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
		return s, logged, err
	}
	t.Run("truncated", func(t *testing.T) {
		for _, cut := range []int64{1, 3, 50 << 10, 150 << 10} {
			dir, log, size0 := build(t)
			fi, _ := os.Stat(log)
			if err := os.Truncate(log, fi.Size()-cut); err != nil {
				t.Fatal(err)
			}
			s, logged, err := reopen(t, dir)
			if err != nil {
				t.Fatalf("cut %d: a torn tail must open: %v", cut, err)
			}
			if d := mustLoad(t, s); !same(d, wantDurable) {
				t.Fatalf("cut %d: state after dropping the torn Save: %+v", cut, d)
			}
			if want := fmt.Sprintf("storage: cut %d bytes at offset %d of %s: ", fi.Size()-cut-size0, size0, log); len(logged) != 1 || !strings.HasPrefix(logged[0], want) {
				t.Fatalf("cut %d: repair not reported: %q", cut, logged)
			}
			s.Close()
		}
	})
	t.Run("damaged last record", func(t *testing.T) {
		// Torn by a power loss: the last record's last page never arrived
		// whole. Nothing valid follows, and the record was not synced.
		dir, log, size0 := build(t)
		fi, _ := os.Stat(log)
		flip(t, log, fi.Size()-100, 1)
		s, logged, err := reopen(t, dir)
		if err != nil {
			t.Fatalf("a checksum mismatch in the last record, nothing valid after it, must be cut: %v", err)
		}
		defer s.Close()
		if d := mustLoad(t, s); !same(d, wantDurable) {
			t.Fatalf("state after dropping the torn Save: %+v", d)
		}
		if want := fmt.Sprintf("storage: cut %d bytes at offset %d of %s: a chunk whose checksum does not match", fi.Size()-size0, size0, log); len(logged) != 1 || !strings.HasPrefix(logged[0], want) {
			t.Fatalf("repair not reported as %q: %q", want, logged)
		}
	})
	t.Run("truncated and damaged before", func(t *testing.T) {
		dir, log, _ := build(t)
		fi, _ := os.Stat(log)
		os.Truncate(log, fi.Size()-10)
		flip(t, log, 40, 1)
		if _, err := Open(dir, testMeta, Options{}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("damage before a torn tail must not be repaired: %v", err)
		}
	})
}

var errInjected = errors.New("fsync: input/output error")

func TestFailedWrite(t *testing.T) {
	check := func(t *testing.T, s *Store, cause error) {
		t.Helper()
		rd := instance.Ready{Promised: 200}
		err := s.Save(&rd)
		if !errors.Is(err, ErrFailed) || !errors.Is(err, cause) {
			t.Fatalf("failing Save: %v", err)
		}
		s.write = func(*leveldb.Batch, bool) error { return nil } // the disk "recovers"
		if err2 := s.Save(&rd); !errors.Is(err2, ErrFailed) || err2.Error() != err.Error() {
			t.Fatalf("Save after failure: %v", err2)
		}
		if _, err2 := s.Load(); !errors.Is(err2, ErrFailed) {
			t.Fatalf("Load after failure: %v", err2)
		}
		if _, err2 := s.Chosen(0, 2, 0); !errors.Is(err2, ErrFailed) {
			t.Fatalf("Chosen after failure: %v", err2)
		}
		if _, err2 := s.Entries(0, 2, 0); !errors.Is(err2, ErrFailed) {
			t.Fatalf("Entries after failure: %v", err2)
		}
		if !reflect.DeepEqual(s.State(), wantDurable.State) {
			t.Fatalf("state moved: %+v", s.State())
		}
	}
	t.Run("injected", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, Options{})
		history(t, s)
		s.write = func(*leveldb.Batch, bool) error { return errInjected }
		check(t, s, errInjected)
		s.Close()
		// Nothing of the failed Save reached the disk.
		s = openT(t, dir, Options{})
		if d := mustLoad(t, s); d.Promised != 130 {
			t.Fatalf("promise after the failed Save: %d", d.Promised)
		}
	})
	t.Run("db closed underneath", func(t *testing.T) {
		s := openT(t, t.TempDir(), Options{})
		history(t, s)
		s.db.Close()
		check(t, s, leveldb.ErrClosed)
	})
}

// The crash test: a child process saves Readys of a deterministic history
// and reports each completed Save; the parent SIGKILLs it, reopens the
// directory, and checks every reported Save is there and the state is whole.

const crashEnv = "PAXOSD_STORAGE_CRASH_DIR"

func crashBallot(i uint64) idgen.Ballot { return idgen.Ballot((i/7+1)*64 + 1) }

// entryData is the data of user entry n; every 40th is 100 KiB, so some
// Saves span several journal blocks.
func entryData(n uint64) []byte {
	if n%40 == 39 {
		return bytes.Repeat([]byte{byte(n)}, 100<<10)
	}
	return []byte(fmt.Sprintf("entry-%d", n))
}

func crashValue(i, first uint64) core.Value {
	c := core.Command{Kind: core.CmdUser, ClientID: 1 + i%5, Seq: i, Origin: 1, Req: i}
	for j := uint64(0); j < 1+i%3; j++ {
		c.Entries = append(c.Entries, entryData(first+j))
	}
	v := core.Value{Commands: []core.Command{c}}
	if i%10 == 9 {
		v.Commands = append(v.Commands, core.Command{Kind: core.CmdTrim, Before: first + uint64(len(c.Entries)) - 5})
	}
	return v
}

// crashStep is the Ready that applies instance i on top of st.
func crashStep(i uint64, st core.ApplyState) (instance.Ready, core.ApplyState) {
	v := crashValue(i, st.NextIndex)
	rd := instance.Ready{
		Promised: crashBallot(i),
		Accepted: []core.InstanceValue{{Instance: i, Ballot: crashBallot(i), Value: v}, {Instance: i + 1, Ballot: crashBallot(i), Value: crashValue(i+1, 0)}},
		Chosen:   []core.InstanceValue{{Instance: i, Value: v}},
	}
	first := st.NextIndex
	for _, c := range v.Commands {
		switch c.Kind {
		case core.CmdUser:
			for _, e := range c.Entries {
				rd.Entries = append(rd.Entries, core.Entry{Index: st.NextIndex, Data: e})
				st.NextIndex++
			}
			rd.Dedup = append(rd.Dedup, core.DedupEntry{ClientID: c.ClientID, Recent: []core.SeqIndexes{{Seq: c.Seq, First: first, Last: st.NextIndex - 1}}})
		case core.CmdTrim:
			if b := min(c.Before, st.NextIndex); b > st.FirstIndex {
				st.FirstIndex = b
				rd.Base = &core.Snapshot{} // its State is set below, as the core sets it with every trim
			}
		}
	}
	st.Applied = i + 1
	stCopy := st
	rd.State = &stCopy
	if rd.Base != nil {
		rd.Base.State = st
	}
	return rd, st
}

func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("runs as the child of TestCrashRecovery")
	}
	trimChunk = 4
	s, err := Open(dir, testMeta, Options{})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	d, err := s.Load()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	st := d.State
	for i := st.Applied; i < st.Applied+100000; i++ {
		var rd instance.Ready
		rd, st = crashStep(i, st)
		if err := s.Save(&rd); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Printf("saved %d\n", i+1) // unbuffered: one write after Save returned
	}
	os.Exit(3)
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	var reported uint64
	for round := 0; round < 8; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAt := 10 + rng.IntN(60)
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			line := sc.Text()
			n, ok := strings.CutPrefix(line, "saved ")
			if !ok {
				t.Fatalf("child: %s", line)
			}
			v, err := strconv.ParseUint(n, 10, 64)
			if err != nil || v <= reported && lines > 0 {
				t.Fatalf("child reported %q after %d", line, reported)
			}
			reported = v
			lines++
			if lines == killAt {
				// Land the kill anywhere in a Save, not only at its start.
				pid := cmd.Process.Pid
				time.AfterFunc(time.Duration(rng.IntN(3000))*time.Microsecond, func() { syscall.Kill(pid, syscall.SIGKILL) })
			}
		}
		cmd.Wait()
		if lines < killAt {
			t.Fatalf("round %d: child stopped after %d Saves before the kill", round, lines)
		}

		s := openT(t, dir, Options{})
		d := mustLoad(t, s)
		st := d.State
		if st.Applied < reported || st.Applied > reported+1 {
			t.Fatalf("round %d: %d Saves reported complete, store has %d", round, reported, st.Applied)
		}
		// Replay the history to what the store says and compare everything.
		var want core.ApplyState
		dedup := map[uint64]core.DedupEntry{}
		for i := uint64(0); i < st.Applied; i++ {
			var rd instance.Ready
			rd, want = crashStep(i, want)
			for _, e := range rd.Dedup {
				dedup[e.ClientID] = e
			}
		}
		if !reflect.DeepEqual(st, want) {
			t.Fatalf("round %d: state %+v, replay gives %+v", round, st, want)
		}
		if d.Promised != crashBallot(st.Applied-1) {
			t.Fatalf("round %d: promise %d", round, d.Promised)
		}
		if len(d.Accepted) != 1 || d.Accepted[0].Instance != st.Applied {
			t.Fatalf("round %d: accepted %+v (applied %d)", round, d.Accepted, st.Applied)
		}
		if len(d.Dedup) != len(dedup) {
			t.Fatalf("round %d: %d dedup rows, want %d", round, len(d.Dedup), len(dedup))
		}
		for _, e := range d.Dedup {
			if !reflect.DeepEqual(dedup[e.ClientID], e) {
				t.Fatalf("round %d: dedup %+v, want %+v", round, e, dedup[e.ClientID])
			}
		}
		// Chosen values: dense from the base, each the right one.
		next := d.Base
		replay := core.ApplyState{}
		for i := uint64(0); i < next; i++ {
			_, replay = crashStep(i, replay)
		}
		for next < st.Applied {
			got, err := s.Chosen(next, st.Applied, 64<<10)
			if err != nil || len(got) == 0 {
				t.Fatalf("round %d: Chosen(%d): %d values, %v", round, next, len(got), err)
			}
			for _, iv := range got {
				rd, ns := crashStep(iv.Instance, replay)
				replay = ns
				if iv.Instance != next || !same(iv.Value, rd.Chosen[0].Value) {
					t.Fatalf("round %d: chosen %d wrong", round, iv.Instance)
				}
				next++
			}
		}
		// User entries: dense from the first index, each the right one.
		for n := st.FirstIndex; n < st.NextIndex; {
			got, err := s.Entries(n, 100, 256<<10)
			if err != nil || len(got) == 0 {
				t.Fatalf("round %d: Entries(%d): %d, %v", round, n, len(got), err)
			}
			for _, e := range got {
				if e.Index != n || !bytes.Equal(e.Data, entryData(n)) {
					t.Fatalf("round %d: entry %d wrong", round, n)
				}
				n++
			}
		}
		t.Logf("round %d: killed after %d Saves (%d reported in all), store at instance %d, entries [%d,%d), trim cursor %d",
			round, lines, reported, st.Applied, st.FirstIndex, st.NextIndex, s.trimCursor)
		reported = st.Applied // the next child resumes from here
		s.Close()
	}
}

func FuzzDecodeRecord(f *testing.F) {
	st := core.ApplyState{Applied: 5, NextIndex: 9, FirstIndex: 2, LeaseHolder: 1, LeaseVersion: 3}
	seeds := []struct{ k, p []byte }{
		{key(prefixMeta, metaIdentity), encodeIdentity(testMeta)},
		{key(prefixMeta, metaPromise), encodeUint(130)},
		{key(prefixMeta, metaState), encodeState(st)},
		{key(prefixMeta, metaTrim), encodeUint(7)},
		{key(prefixAccepted, 3), appendAccepted(nil, core.InstanceValue{Instance: 3, Ballot: 65, Value: userValue("a", "b")})},
		{key(prefixChosen, 3), core.AppendValue(nil, userValue("x"))},
		{key(prefixChosen, 4), appendChosen(nil, userValue("x", "y"), logRef{first: 4, counts: []uint64{2}})},
		{key(prefixChosen, 5), appendChosen(nil, core.Value{Commands: []core.Command{userCmd(1, "a"), {Kind: core.CmdNoop}, userCmd(2, "b", "c")}}, logRef{first: 1<<64 - 4, counts: []uint64{1, 0, 2}})},
		{key(prefixChosen, 6), append(appendUvarints([]byte{chosenRef}, 1, 2, 1<<63, 1<<63), core.AppendValue(nil, core.Value{Commands: []core.Command{userCmd(1), userCmd(2)}})...)},
		{key(prefixEntryV2, 4), []byte("data")},
		{key(prefixBlock, 4), blockPayload([]core.Entry{{Data: []byte("data")}, {}, {Data: []byte("x")}})},
		{key(prefixDedup, 9), encodeDedup(core.DedupEntry{ClientID: 9, Recent: []core.SeqIndexes{{Seq: 2, First: 3, Last: 4}}})},
		{key(prefixDelta, 2), appendDelta(nil, []rowChange{{row: core.DedupEntry{ClientID: 9, Recent: []core.SeqIndexes{{Seq: 2, First: 3, Last: 4}}}}, {row: core.DedupEntry{ClientID: 4, Deleted: true}}})},
		{key(prefixDelta, 3), appendDelta(nil, []rowChange{{row: core.DedupEntry{ClientID: 9, LastUsed: 7, Recent: []core.SeqIndexes{{Seq: 5, First: 6, Last: 6}}}, patch: true, drop: 1}})},
		{key(prefixMeta, metaBase), encodeState(st)},
		{key(prefixMeta, metaChosen), encodeUint(5)},
		{key(prefixBase, 9), encodeDedup(core.DedupEntry{ClientID: 9, LastUsed: 4, Recent: []core.SeqIndexes{{Seq: 2, First: 3, Last: 4}, {Seq: 3, First: 5, Last: 5}}})},
	}
	for _, s := range seeds {
		f.Add(s.k, seal(s.k, s.p))
		f.Add(s.k, s.p)
	}
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		if _, err := decodeRecord(k, v); err == nil && len(v) < 4 {
			t.Fatal("decoded a value shorter than its checksum")
		}
		_, _ = decodePayload(k, v)
		if len(k) == keyLen {
			// Reach the decoders past the checksum.
			if _, err := decodeRecord(k, seal(k, v)); err != nil && !errors.Is(err, errRecord) {
				t.Fatalf("decoder error not wrapping errRecord: %v", err)
			}
		}
		if p, _, ok := parseKey(k); ok && p == prefixDelta {
			// A delta that decodes encodes back to one that decodes the same.
			if rows, err := decodeDelta(v); err == nil {
				if again, err := decodeDelta(appendDelta(nil, rows)); err != nil || !reflect.DeepEqual(again, rows) {
					t.Fatalf("delta %x: decoded %+v, then again %+v, %v", v, rows, again, err)
				}
			}
		}
		if tail, ok := tornTail(v); ok && (tail.cut < 0 || tail.cut > tail.damage || tail.damage > len(v)) {
			t.Fatalf("tornTail %+v of %d bytes", tail, len(v))
		}
	})
}

// BenchmarkSave is the acceptor's hot path: a promise and one accepted
// record of 100 bytes in one synced write.
func BenchmarkSave(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	v := core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{bytes.Repeat([]byte("x"), 100)}}}}
	rd := instance.Ready{Promised: 65, Accepted: []core.InstanceValue{{Ballot: 65, Value: v}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rd.Accepted[0].Instance = uint64(i)
		if err := s.Save(&rd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSaveApplied is a learner's Save at 64 clients: one chosen value
// of 8 appends of 100 bytes, from clients in turn, with their entries and
// dedup rows (each keeps its client's last 32 seqs). It reports the bytes
// of the batch per append.
func BenchmarkSaveApplied(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	rows := map[uint64]core.DedupEntry{}
	data := bytes.Repeat([]byte("x"), 100)
	var st core.ApplyState
	batchBytes := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var rd instance.Ready
		var v core.Value
		for j := range 8 {
			c := uint64((i*8+j)%64) + 1
			v.Commands = append(v.Commands, core.Command{Kind: core.CmdUser, ClientID: c, Seq: rows[c].Seq() + 1, Entries: [][]byte{data}})
			rd.Entries = append(rd.Entries, core.Entry{Index: st.NextIndex, Data: data})
			d := rows[c]
			d.ClientID = c
			d = grow(d, core.SeqIndexes{Seq: d.Seq() + 1, First: st.NextIndex, Last: st.NextIndex, Sum: 7}, st.NextIndex)
			rows[c] = d
			rd.Dedup = append(rd.Dedup, d)
			st.NextIndex++
		}
		rd.Chosen = []core.InstanceValue{{Instance: st.Applied, Value: v}}
		st.Applied++
		stc := st
		rd.State = &stc
		if err := s.Save(&rd); err != nil {
			b.Fatal(err)
		}
		batchBytes += len(s.batch.Dump())
	}
	b.ReportMetric(float64(batchBytes)/float64(b.N*8), "B/append")
}
