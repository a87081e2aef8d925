package lossyfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"
)

var (
	journal1 = lstorage.FileDesc{Type: lstorage.TypeJournal, Num: 1}
	journal2 = lstorage.FileDesc{Type: lstorage.TypeJournal, Num: 2}
	table3   = lstorage.FileDesc{Type: lstorage.TypeTable, Num: 3}
	manifest = lstorage.FileDesc{Type: lstorage.TypeManifest, Num: 4}
	temp5    = lstorage.FileDesc{Type: lstorage.TypeTemp, Num: 5}
)

func create(t *testing.T, fs *FS, fd lstorage.FileDesc, data string, sync bool) lstorage.Writer {
	t.Helper()
	w, err := fs.Create(fd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := w.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// contents returns fd's contents, or "<none>" if it does not exist.
func contents(t *testing.T, fs *FS, fd lstorage.FileDesc) string {
	t.Helper()
	r, err := fs.Open(fd)
	if errors.Is(err, os.ErrNotExist) {
		return "<none>"
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSyncedPrefixSurvives(t *testing.T) {
	fs := New("t")
	w := create(t, fs, journal1, "abc", true)
	w.Write([]byte("def"))
	create(t, fs, journal2, "never synced", false)
	if got := contents(t, fs, journal1); got != "abcdef" {
		t.Fatalf("before the crash %q", got)
	}
	fs = fs.Crash()
	if got := contents(t, fs, journal1); got != "abc" {
		t.Fatalf("after Crash %q, want the synced prefix", got)
	}
	if got := contents(t, fs, journal2); got != "<none>" {
		t.Fatalf("a file never synced nor covered by a barrier survived: %q", got)
	}
	// The old handle is dead and cannot touch the new state.
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrPowerLost) {
		t.Fatalf("write on a handle from before the crash: %v", err)
	}
	if err := w.Sync(); !errors.Is(err, ErrPowerLost) {
		t.Fatalf("sync on a handle from before the crash: %v", err)
	}
	if got := contents(t, fs, journal1); got != "abc" {
		t.Fatalf("old handle changed the file: %q", got)
	}
}

func TestSyncForcesEarlierNames(t *testing.T) {
	fs := New("t")
	create(t, fs, journal1, "one", false) // unsynced, name pending
	create(t, fs, journal2, "two", true)  // its sync forces both creations, in order
	create(t, fs, table3, "three", false) // after: may vanish
	fs = fs.Crash()
	for fd, want := range map[lstorage.FileDesc]string{journal1: "", journal2: "two", table3: "<none>"} {
		if got := contents(t, fs, fd); got != want {
			t.Errorf("%s: %q, want %q", fd, got, want)
		}
	}
}

func TestBarriers(t *testing.T) {
	fs := New("t")
	create(t, fs, journal1, "j", true)
	create(t, fs, table3, "t", false)
	m := create(t, fs, manifest, "m", false)
	if _, err := fs.GetMeta(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("GetMeta of a fresh FS: %v", err)
	}
	m.Sync() // a MANIFEST sync syncs the directory: every name is durable
	if err := fs.Remove(journal1); err != nil {
		t.Fatal(err)
	}
	fs = fs.Crash()
	if got := contents(t, fs, table3); got != "" {
		t.Fatalf("table after a manifest sync: %q, want empty and present", got)
	}
	if got := contents(t, fs, journal1); got != "j" {
		t.Fatalf("a removal never synced must be undone: %q", got)
	}
	if err := fs.Remove(journal1); err != nil {
		t.Fatal(err)
	}
	if err := fs.SetMeta(manifest); err != nil { // a barrier too
		t.Fatal(err)
	}
	fs = fs.Crash()
	if got := contents(t, fs, journal1); got != "<none>" {
		t.Fatalf("removal before SetMeta undone: %q", got)
	}
	if fd, err := fs.GetMeta(); err != nil || fd != manifest {
		t.Fatalf("GetMeta after crash: %v %v", fd, err)
	}
}

func TestRenameAtomic(t *testing.T) {
	seen := map[string]bool{}
	for seed := uint64(0); seed < 50; seed++ {
		fs := New("t")
		create(t, fs, journal1, "old", true).Close()
		create(t, fs, temp5, "new", true).Close()
		if err := fs.Rename(temp5, journal1); err != nil {
			t.Fatal(err)
		}
		if got := contents(t, fs, journal1); got != "new" {
			t.Fatalf("after rename %q", got)
		}
		fs = fs.PowerLoss(rand.New(rand.NewPCG(seed, 1)))
		j, tmp := contents(t, fs, journal1), contents(t, fs, temp5)
		switch {
		case j == "old" && tmp == "new", j == "new" && tmp == "<none>":
			seen[j] = true
		default:
			t.Fatalf("seed %d: rename not atomic: journal %q, temp %q", seed, j, tmp)
		}
	}
	if !seen["old"] || !seen["new"] {
		t.Fatalf("PowerLoss never chose one side of the rename: %v", seen)
	}
}

func TestPowerLossKeepsPrefixes(t *testing.T) {
	kept := map[string]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		fs := New("t")
		w := create(t, fs, journal1, "0123", true)
		w.Write([]byte("456789"))
		fs = fs.PowerLoss(rand.New(rand.NewPCG(seed, 2)))
		got := contents(t, fs, journal1)
		if len(got) < 4 || got != "0123456789"[:len(got)] {
			t.Fatalf("seed %d: %q is not a prefix at least as long as the synced one", seed, got)
		}
		kept[got] = true
	}
	for _, want := range []string{"0123", "0123456789", "01234567"} {
		if !kept[want] {
			t.Errorf("PowerLoss never kept %q (kept %v)", want, kept)
		}
	}
}

// TestPowerLossZeroTails: with ZeroTail a power loss may also leave a
// file's unsynced bytes as zeros, whole or after a prefix of them, never
// touching the synced prefix and never growing the file past what was
// written; the zeros are then part of the file.
func TestPowerLossZeroTails(t *testing.T) {
	const synced, unsynced = "0123", "456789"
	kinds := map[string]bool{}
	var zeroed int64
	for seed := uint64(0); seed < 300; seed++ {
		fs := New("t")
		w := create(t, fs, journal1, synced, true)
		w.Write([]byte(unsynced))
		fs = fs.PowerLossTails(rand.New(rand.NewPCG(seed, 3)), ZeroTail)
		got := contents(t, fs, journal1)
		data := strings.TrimRight(got, "\x00")
		if len(got) > len(synced+unsynced) || len(data) < len(synced) || data != (synced + unsynced)[:len(data)] {
			t.Fatalf("seed %d: %q is not the synced prefix, a prefix of the rest and zeros", seed, got)
		}
		switch z := len(got) - len(data); {
		case z > 0 && len(data) == len(synced):
			kinds["only zeros"] = true
		case z > 0:
			kinds["data then zeros"] = true
		case len(got) == len(synced):
			kinds["none"] = true
		case len(got) == len(synced+unsynced):
			kinds["all"] = true
		default:
			kinds["a prefix"] = true
		}
		zeroed += fs.Stats().ZeroedBytes
		// The zeros are the file now: durable, as the rest of it.
		if after := contents(t, fs.Crash(), journal1); after != got {
			t.Fatalf("seed %d: a crash after the power loss changed %q to %q", seed, got, after)
		}
	}
	for _, k := range []string{"only zeros", "data then zeros", "none", "all", "a prefix"} {
		if !kinds[k] {
			t.Errorf("300 ZeroTail power losses never left %s (left %v)", k, kinds)
		}
	}
	if zeroed == 0 {
		t.Error("Stats.ZeroedBytes never counted a zero")
	}
}

func TestFaults(t *testing.T) {
	fs := New("t")
	w := create(t, fs, journal1, "abc", true)
	fs.FailWritesAfter(2)
	n, err := w.Write([]byte("defg"))
	if n != 2 || !errors.Is(err, ErrInjected) || !fs.Dead() {
		t.Fatalf("write across the limit: %d %v", n, err)
	}
	if err := w.Sync(); !errors.Is(err, ErrInjected) {
		t.Fatalf("sync on a dead disk: %v", err)
	}
	if _, err := fs.Create(journal2); !errors.Is(err, ErrInjected) {
		t.Fatalf("create on a dead disk: %v", err)
	}
	if err := fs.SetMeta(journal1); !errors.Is(err, ErrInjected) {
		t.Fatalf("setmeta on a dead disk: %v", err)
	}
	if got := contents(t, fs, journal1); got != "abcde" {
		t.Fatalf("reads still see the page cache: %q", got)
	}
	fs = fs.Crash()
	if fs.Dead() {
		t.Fatal("still dead after the crash")
	}
	if got := contents(t, fs, journal1); got != "abc" {
		t.Fatalf("after crash %q", got)
	}

	w = create(t, fs, journal2, "x", false)
	fs.FailSyncAfter(2)
	if err := w.Sync(); err != nil {
		t.Fatal("first sync:", err)
	}
	w.Write([]byte("y"))
	if err := w.Sync(); !errors.Is(err, ErrInjected) {
		t.Fatalf("second sync: %v", err)
	}
	fs = fs.Crash()
	if got := contents(t, fs, journal2); got != "x" {
		t.Fatalf("a failed sync made data durable: %q", got)
	}
}

// The process that ran before a crash cannot touch the disk after it.
func TestOldBootIsDead(t *testing.T) {
	old := New("t")
	create(t, old, journal1, "j", true)
	fs := old.Crash()
	if _, err := old.Create(journal2); !errors.Is(err, ErrPowerLost) {
		t.Fatalf("create through the old boot's FS: %v", err)
	}
	if err := old.Remove(journal1); !errors.Is(err, ErrPowerLost) {
		t.Fatalf("remove through the old boot's FS: %v", err)
	}
	if _, err := old.Lock(); !errors.Is(err, ErrPowerLost) {
		t.Fatalf("lock through the old boot's FS: %v", err)
	}
	if _, err := old.List(lstorage.TypeAll); !errors.Is(err, ErrPowerLost) {
		t.Fatalf("list through the old boot's FS: %v", err)
	}
	if got := contents(t, fs, journal1); got != "j" {
		t.Fatalf("after the old boot's calls: %q", got)
	}
}

// Removing a table is durable at once; removing anything else is a name
// change like the others.
func TestRemoveTable(t *testing.T) {
	fs := New("t")
	create(t, fs, table3, "t", true)
	create(t, fs, journal1, "j", true)
	fs.Remove(table3)
	fs.Remove(journal1)
	fs = fs.Crash()
	if got := contents(t, fs, table3); got != "<none>" {
		t.Fatalf("removed table came back: %q", got)
	}
	if got := contents(t, fs, journal1); got != "j" {
		t.Fatalf("removed journal: %q, want it back", got)
	}
	w := create(t, fs, table3, "t2", false) // created, never durable, removed
	create(t, fs, journal2, "k", true)      // forces the changes before it
	w.Close()
	fs.Remove(table3)
	fs = fs.Crash()
	if got := contents(t, fs, table3); got != "<none>" {
		t.Fatalf("table: %q", got)
	}
	if got := contents(t, fs, journal2); got != "k" {
		t.Fatalf("journal synced after the table's creation: %q", got)
	}
}

func TestLock(t *testing.T) {
	fs := New("t")
	l, err := fs.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Lock(); !errors.Is(err, lstorage.ErrLocked) {
		t.Fatalf("second lock: %v", err)
	}
	fs = fs.Crash() // the process died: the lock is gone
	l2, err := fs.Lock()
	if err != nil {
		t.Fatal("lock after crash:", err)
	}
	l.Unlock() // the dead process's unlock must not release the new lock
	if _, err := fs.Lock(); !errors.Is(err, lstorage.ErrLocked) {
		t.Fatalf("stale unlock released the lock: %v", err)
	}
	l2.Unlock()
	if _, err := fs.Lock(); err != nil {
		t.Fatal(err)
	}
}

func TestHold(t *testing.T) {
	fs := New("t")
	fs.Hold(lstorage.TypeTable)
	create(t, fs, journal1, "j", false) // other types pass
	done := make(chan error)
	go func() {
		_, err := fs.Create(table3)
		done <- err
	}()
	if !fs.WaitHeld(nil) {
		t.Fatal("WaitHeld returned false with a Create held")
	}
	fs = fs.Crash()
	if err := <-done; !errors.Is(err, ErrPowerLost) {
		t.Fatalf("held Create after a crash: %v", err)
	}
	if got := contents(t, fs, table3); got != "<none>" {
		t.Fatalf("held Create made a file: %q", got)
	}

	fs.Hold(lstorage.TypeTable)
	go func() {
		_, err := fs.Create(table3)
		done <- err
	}()
	fs.WaitHeld(nil)
	fs.Release()
	if err := <-done; err != nil {
		t.Fatalf("held Create after Release: %v", err)
	}
	closed := make(chan struct{})
	close(closed)
	fs.Hold(lstorage.TypeTable)
	if fs.WaitHeld(closed) {
		t.Fatal("WaitHeld with nothing held returned true")
	}
	fs.Release()
	if fs.WaitHeld(nil) {
		t.Fatal("WaitHeld without a Hold returned true")
	}
}

// A sequence of calls and a seed determine the state exactly.
func TestDeterministic(t *testing.T) {
	run := func() (uint64, string) {
		fs := New("t")
		rng := rand.New(rand.NewPCG(7, 7))
		for i := range 20 {
			fd := lstorage.FileDesc{Type: lstorage.TypeJournal, Num: int64(i % 5)}
			w := create(t, fs, fd, fmt.Sprint(i), i%3 == 0)
			w.Write([]byte("tail"))
			if i%7 == 6 {
				fs = fs.PowerLoss(rng)
			}
		}
		return fs.Hash(), fmt.Sprint(fs.Files())
	}
	h1, f1 := run()
	h2, f2 := run()
	if h1 != h2 || f1 != f2 {
		t.Fatalf("two equal runs differ: %x %s / %x %s", h1, f1, h2, f2)
	}
}

// goleveldb on the FS: a synced write survives any power loss, an unsynced
// one may not, and the database always opens again.
func TestGoleveldb(t *testing.T) {
	lost := 0
	for seed := uint64(1); seed <= 12; seed++ {
		fs := New("t")
		rng := rand.New(rand.NewPCG(seed, 3))
		want := map[string]string{}
		for round := range 6 {
			// No background compaction: nothing races the crash.
			db, err := leveldb.Open(fs, &opt.Options{WriteBuffer: 1 << 20, CompactionL0Trigger: 1 << 20,
				WriteL0SlowdownTrigger: 1 << 20, WriteL0PauseTrigger: 1 << 20, DisableSeeksCompaction: true})
			if err != nil {
				t.Fatalf("seed %d round %d: open after a power loss: %v", seed, round, err)
			}
			for k, v := range want {
				got, err := db.Get([]byte(k), nil)
				if err != nil || string(got) != v {
					t.Fatalf("seed %d round %d: synced key %s: %q %v, want %q", seed, round, k, got, err, v)
				}
			}
			for i := range 1 + rng.IntN(100) {
				k := fmt.Sprintf("k%03d", rng.IntN(300))
				v := fmt.Sprintf("%d.%d.%d-%s", seed, round, i, bytes.Repeat([]byte("v"), rng.IntN(2000)))
				sync := rng.IntN(3) == 0
				if err := db.Put([]byte(k), []byte(v), &opt.WriteOptions{Sync: sync}); err != nil {
					t.Fatal(err)
				}
				if sync {
					want[k] = v
				} else {
					delete(want, k) // the synced value may or may not be overwritten
				}
			}
			before := fs.Stats().LostBytes
			fs = fs.PowerLoss(rng)
			if fs.Stats().LostBytes > before {
				lost++
			}
			db.Close()
		}
	}
	if lost == 0 {
		t.Fatal("no power loss lost anything: the test proves nothing")
	}
}
