package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/journal"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/storage/lossyfs"
)

// journalOf writes records of the given sizes with goleveldb's own journal
// writer, flushing after each as goleveldb does after each batch, and
// returns the file and the end of each record in it.
func journalOf(t testing.TB, sizes ...int) ([]byte, []int) {
	t.Helper()
	var buf bytes.Buffer
	w := journal.NewWriter(&buf)
	var ends []int
	for i, n := range sizes {
		rw, err := w.Next()
		if err != nil {
			t.Fatal(err)
		}
		rec := make([]byte, n)
		for j := range rec {
			rec[j] = byte(i*31+j) | 1 // never zero
		}
		if _, err := rw.Write(rec); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, buf.Len())
	}
	return buf.Bytes(), ends
}

// readJournal counts the records goleveldb's strict reader reads from data.
func readJournal(data []byte) (int, error) {
	r := journal.NewReader(bytes.NewReader(data), nil, true, true)
	for n := 0; ; n++ {
		rr, err := r.Next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		if _, err := io.ReadAll(rr); err != nil {
			return n, err
		}
	}
}

// chunk is one chunk of type typ holding payload, with its checksum right.
func chunk(typ byte, payload []byte) []byte {
	c := make([]byte, journalHeader, journalHeader+len(payload))
	binary.LittleEndian.PutUint16(c[4:], uint16(len(payload)))
	c[6] = typ
	c = append(c, payload...)
	binary.LittleEndian.PutUint32(c, journalCRC(c[6:]))
	return c
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func zeros(n int) []byte { return make([]byte, n) }

// zeroed returns data with [from, to) overwritten by zeros.
func zeroed(data []byte, from, to int) []byte {
	c := bytes.Clone(data)
	clear(c[from:min(to, len(c))])
	return c
}

// flipped returns data with the byte at off changed.
func flipped(data []byte, off int) []byte {
	c := bytes.Clone(data)
	c[off] ^= 0x5a
	return c
}

// TestTornTail is the rule for a journal's tail: zeros or a torn record
// after the last complete record, with no valid chunk after them, are cut at
// the end of that record; damage with a valid chunk after it is refused.
func TestTornTail(t *testing.T) {
	three, ends := journalOf(t, 100, 200, 3000)          // ends in the middle of block 0
	multi, mends := journalOf(t, 100, 100<<10)           // the last record spans four blocks
	exact, _ := journalOf(t, journalBlock-journalHeader) // ends on a block boundary
	padded, _ := journalOf(t, journalBlock-journalHeader-3)
	spanning, sends := journalOf(t, 100, 40000, 100) // the middle record crosses block 0's end
	garbage := make([]byte, 300)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	bogus := chunk(chunkFull, []byte("twenty bytes of data"))
	bogus[0] ^= 1 // a header that parses, whose checksum does not match

	cuts := []struct {
		name    string
		data    []byte
		cut     int // where the good records end
		records int // how many there are
	}{
		{"1 zero byte appended", cat(three, zeros(1)), len(three), 3},
		{"6 zero bytes appended", cat(three, zeros(6)), len(three), 3},
		{"7 zero bytes appended (a zero header)", cat(three, zeros(7)), len(three), 3},
		{"100 zero bytes appended", cat(three, zeros(100)), len(three), 3},
		{"40000 zero bytes appended, over a block boundary", cat(three, zeros(40000)), len(three), 3},
		{"zeros from a block boundary", cat(exact, zeros(100)), journalBlock, 1},
		{"zeros over a block's padding and on", cat(padded, zeros(3+40000)), journalBlock - 3, 1},
		{"zeros over the last record's last block", zeroed(multi, 3*journalBlock+10, len(multi)), mends[0], 1},
		{"zeros over most of the last record", zeroed(multi, mends[0]+500, len(multi)), mends[0], 1},
		{"zeros over the last record and more", cat(zeroed(three, ends[1]+3, len(three)), zeros(5000)), ends[1], 2},
		{"a partial header", three[:ends[1]+4], ends[1], 2},
		{"a partial payload", three[:ends[2]-100], ends[1], 2},
		{"a record cut at a block boundary", multi[:2*journalBlock], mends[0], 1},
		{"the last chunk's checksum fails", flipped(three, ends[2]-10), ends[1], 2},
		{"the last record's last chunk's checksum fails", flipped(multi, len(multi)-10), mends[0], 1},
		{"garbage appended", cat(three, garbage), len(three), 3},
		{"a header with a bad checksum appended", cat(three, bogus), len(three), 3},
	}
	for _, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			tail, ok := tornTail(c.data)
			if !ok || tail.cut != c.cut {
				t.Fatalf("tornTail = %+v, %t; want a cut at %d of %d bytes", tail, ok, c.cut, len(c.data))
			}
			if tail.damage < tail.cut || tail.damage > len(c.data) || tail.what == "" {
				t.Fatalf("tornTail = %+v: the damage must lie in the tail and be named", tail)
			}
			if n, err := readJournal(c.data[:tail.cut]); err != nil || n != c.records {
				t.Fatalf("the cut journal reads as %d records, %v; want %d", n, err, c.records)
			}
		})
	}

	refusals := []struct {
		name string
		data []byte
	}{
		{"no damage", three},
		{"no damage, a block boundary", exact},
		{"a checksum failing in the middle", flipped(three, ends[0]+10)},
		{"a checksum failing in the first block of four", flipped(multi, 50)},
		{"zeros followed by a record", zeroed(three, ends[0], ends[1])},
		{"zeros over a block boundary followed by a record", zeroed(spanning, sends[0], sends[1])},
		{"zeros followed by a record a block later", cat(three, zeros(40000), chunk(chunkFull, []byte("acknowledged")))},
		{"garbage followed by a record at any offset", cat(three, garbage[:13], three[ends[0]:ends[1]])},
		{"a torn record followed by a record", cat(three[:ends[2]-100], three[ends[0]:ends[1]])},
		{"a sound chunk out of sequence", cat(three, chunk(chunkMiddle, []byte("x")))},
		{"a record's first chunk, its later chunks sound", flipped(multi, mends[0]+20)},
		{"a record's first chunk followed by a new record", cat(multi[:journalBlock], multi[:journalBlock])},
	}
	for _, c := range refusals {
		t.Run("refuse "+c.name, func(t *testing.T) {
			if tail, ok := tornTail(c.data); ok {
				t.Fatalf("tornTail = %+v: cut, want refused", tail)
			}
		})
	}
}

// BenchmarkTornTailGarbage is the worst case of the scan for a valid chunk:
// a tail of random bytes, each of which may start a chunk.
func BenchmarkTornTailGarbage(b *testing.B) {
	data, _ := journalOf(b, 100)
	garbage := make([]byte, 8<<20)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	data = cat(data, garbage)
	b.SetBytes(int64(len(garbage)))
	for b.Loop() {
		if _, ok := tornTail(data); !ok {
			b.Fatal("refused")
		}
	}
}

// acked is what a store holds after history: every Save acknowledged.
type acked struct {
	d       instance.Durable
	chosen  []core.InstanceValue
	entries []core.Entry
}

func readAcked(t *testing.T, s *Store) acked {
	t.Helper()
	ch, err := s.Chosen(0, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	es, err := s.Entries(0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return acked{mustLoad(t, s), ch, es}
}

// unsyncedSave is a Ready that only applies a chosen value, which Save
// writes without an fsync, larger than a journal block as a catch-up
// Ready is.
func unsyncedSave(t *testing.T, s *Store) {
	t.Helper()
	big := bytes.Repeat([]byte("z"), 100<<10)
	rd := instance.Ready{
		Chosen:  []core.InstanceValue{{Instance: 4, Value: core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{big}}}}}},
		Entries: []core.Entry{{Index: 4, Data: big}},
		State:   &core.ApplyState{Applied: 5, NextIndex: 5, LeaseHolder: 1, LeaseVersion: 1},
	}
	if rd.MustSync() {
		t.Fatal("the unsynced Save must not need an fsync")
	}
	save(t, s, rd)
}

// TestOpenCutsUnsyncedTail: a store whose newest journal ends in zeros or a
// torn record after its acknowledged Saves opens, logs the one line that
// says what it cut, and holds every acknowledged Save.
func TestOpenCutsUnsyncedTail(t *testing.T) {
	build := func(t *testing.T, unsynced bool) (dir, log string, want acked) {
		dir = t.TempDir()
		s := openT(t, dir, Options{})
		history(t, s)
		want = readAcked(t, s)
		if !same(want.d, wantDurable) {
			t.Fatalf("history: %+v", want.d)
		}
		if unsynced {
			unsyncedSave(t, s)
		}
		s.Close()
		return dir, findFile(t, dir, ".log"), want
	}
	reopen := func(t *testing.T, dir string, want acked) string {
		t.Helper()
		var logged []string
		s, err := Open(dir, testMeta, Options{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
		if err != nil {
			t.Fatalf("a journal ending in an unsynced tail must open: %v", err)
		}
		defer s.Close()
		if got := readAcked(t, s); !same(got, want) {
			t.Fatalf("after the cut:\n got %+v\nwant %+v", got, want)
		}
		if len(logged) != 1 {
			t.Fatalf("want one log line, got %q", logged)
		}
		t.Log(logged[0])
		return logged[0]
	}
	for _, n := range []int{7, 100, 40000} {
		t.Run(fmt.Sprintf("%d zeros appended", n), func(t *testing.T) {
			dir, log, want := build(t, false)
			data, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(log, cat(data, zeros(n)), 0o644); err != nil {
				t.Fatal(err)
			}
			line := reopen(t, dir, want)
			if prefix := fmt.Sprintf("storage: cut %d bytes at offset %d of %s: zeros", n, len(data), log); !strings.HasPrefix(line, prefix) {
				t.Fatalf("log line %q does not start %q", line, prefix)
			}
			if !strings.Contains(line, "never acknowledged") {
				t.Fatalf("log line %q does not say why the cut loses nothing", line)
			}
		})
	}
	for _, n := range []int{100, 50 << 10} {
		t.Run(fmt.Sprintf("the last record's last %d bytes zeroed", n), func(t *testing.T) {
			dir, log, want := build(t, true)
			data, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(log, zeroed(data, len(data)-n, len(data)), 0o644); err != nil {
				t.Fatal(err)
			}
			line := reopen(t, dir, want) // the unsynced Save is gone, the acknowledged ones are there
			if !strings.HasPrefix(line, "storage: cut ") || !strings.Contains(line, log) {
				t.Fatalf("log line %q", line)
			}
		})
	}
	t.Run("zeros followed by a valid record are refused", func(t *testing.T) {
		dir, log, _ := build(t, true)
		data, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		// Zeros over the acknowledged Saves' records, the unsynced Save's
		// record after them.
		if err := os.WriteFile(log, zeroed(data, 40, 200), 0o644); err != nil {
			t.Fatal(err)
		}
		var logged []string
		_, err = Open(dir, testMeta, Options{Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
		if !errors.Is(err, ErrCorrupt) || len(logged) != 0 {
			t.Fatalf("zeros in the middle of the journal: %v, logged %q; want ErrCorrupt and nothing cut", err, logged)
		}
		if after, _ := os.ReadFile(log); len(after) != len(data) {
			t.Fatalf("a refused journal was changed: %d bytes, was %d", len(after), len(data))
		}
	})
}

// rewrite replaces fd's contents on a lossyfs by what change makes of them,
// durably.
func rewrite(t *testing.T, fs *lossyfs.FS, fd lstorage.FileDesc, change func([]byte) []byte) {
	t.Helper()
	r, err := fs.Open(fd)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	w, err := fs.Create(fd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(change(data)); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Close()
}

// TestOpenStorageCutsUnsyncedTail: OpenStorage follows the same rule.
func TestOpenStorageCutsUnsyncedTail(t *testing.T) {
	fs := lossyfs.New("zeros")
	s, err := OpenStorage(fs, testMeta, smallOpts)
	if err != nil {
		t.Fatal(err)
	}
	history(t, s)
	want := readAcked(t, s)
	s.Close()
	fds, err := fs.List(lstorage.TypeJournal)
	if err != nil || len(fds) == 0 {
		t.Fatalf("journals: %v %v", fds, err)
	}
	newest := fds[len(fds)-1]
	rewrite(t, fs, newest, func(b []byte) []byte { return cat(b, zeros(100)) })

	var logged []string
	o := smallOpts
	o.Logf = func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }
	s, err = OpenStorage(fs, testMeta, o)
	if err != nil {
		t.Fatalf("a journal ending in zeros must open: %v", err)
	}
	got := readAcked(t, s)
	s.Close()
	if !same(got, want) {
		t.Fatalf("after the cut:\n got %+v\nwant %+v", got, want)
	}
	if len(logged) != 1 || !strings.HasPrefix(logged[0], "storage: cut 100 bytes at offset ") || !strings.Contains(logged[0], "lossyfs:zeros/"+fileName(newest)) {
		t.Fatalf("log: %q", logged)
	}
}

// TestRepairJournalOnlyNewest: damage in any journal but the newest, or in
// another file, is not cut, whatever it looks like.
func TestRepairJournalOnlyNewest(t *testing.T) {
	fs := lossyfs.New("two")
	good, _ := journalOf(t, 100, 200)
	older := lstorage.FileDesc{Type: lstorage.TypeJournal, Num: 3}
	newer := lstorage.FileDesc{Type: lstorage.TypeJournal, Num: 5}
	manifest := lstorage.FileDesc{Type: lstorage.TypeManifest, Num: 4}
	for _, fd := range []lstorage.FileDesc{older, newer, manifest} {
		w, err := fs.Create(fd)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(cat(good, zeros(100)))
		w.Sync()
		w.Close()
	}
	js := storageJournals{stor: fs, name: "two"}
	damage := func(fd lstorage.FileDesc) error {
		return fmt.Errorf("open: %w", &lerrors.ErrCorrupted{Fd: fd, Err: errors.New("zero header (100 bytes)")})
	}
	for _, fd := range []lstorage.FileDesc{older, manifest} {
		if msg, ok := repairJournal(js, damage(fd)); ok {
			t.Fatalf("damage in %s was cut: %s", fileName(fd), msg)
		}
	}
	if _, ok := repairJournal(js, errors.New("not goleveldb's corruption")); ok {
		t.Fatal("an error that is no corruption was repaired")
	}
	for _, fd := range []lstorage.FileDesc{older, manifest} {
		if got := readAll(t, fs, fd); len(got) != len(good)+100 {
			t.Fatalf("%s changed: %d bytes", fileName(fd), len(got))
		}
	}
	msg, ok := repairJournal(js, damage(newer))
	if !ok || len(readAll(t, fs, newer)) != len(good) {
		t.Fatalf("the newest journal was not cut: %q", msg)
	}
}

func readAll(t *testing.T, fs *lossyfs.FS, fd lstorage.FileDesc) []byte {
	t.Helper()
	r, err := fs.Open(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
