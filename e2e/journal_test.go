package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// newestJournal is the highest-numbered goleveldb journal (NNNNNN.log) in dir.
func newestJournal(t *testing.T, dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	best, name := int64(-1), ""
	for _, e := range ents {
		if num, ok := strings.CutSuffix(e.Name(), ".log"); ok {
			if n, err := strconv.ParseInt(num, 10, 64); err == nil && n > best {
				best, name = n, e.Name()
			}
		}
	}
	if name == "" {
		t.Fatalf("no journal in %s", dir)
	}
	return filepath.Join(dir, name)
}

// cutLine is the event the server logs when storage cuts a damaged journal
// tail (a "storage notice" whose detail begins "storage: cut").
var cutLine = regexp.MustCompile(`(?m)^.*msg="storage notice".*detail="storage: cut.*$`)

// TestZeroedJournalTail: a node is SIGKILLed and its newest journal gets
// zero bytes at its end, as a file system can leave after a crash (the
// size was written, the data was not). It must start again, log that it
// cut the tail, rejoin, and serve every acknowledged entry with local
// reads. Damage followed by valid data is not a tail: the node must refuse
// to start, saying the data directory is corrupt.
func TestZeroedJournalTail(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	appendZeros := func(n int) func(t *testing.T, path string) {
		return func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(make([]byte, n)); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	zeroMiddle := func(t *testing.T, path string) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < 4096 {
			t.Fatalf("%s holds %d bytes: too few to damage its middle", path, len(data))
		}
		clear(data[len(data)/2 : len(data)/2+100])
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		starts bool
	}{
		{"100-zero-bytes", appendZeros(100), true},
		{"40000-zero-bytes", appendZeros(40000), true},
		{"zeros-then-valid-records", zeroMiddle, false},
	} {
		t.Run(tc.name, func(t *testing.T) { zeroedTail(t, tc.damage, tc.starts) })
	}
}

func zeroedTail(t *testing.T, damage func(t *testing.T, path string), starts bool) {
	c := newCluster(t, 3)
	m := c.master(t)
	d := (m + 1) % 3
	cl := c.client(t)
	var acked []string // by index
	add := func(n int) {
		for range n {
			v := fmt.Sprintf("v%d", len(acked))
			res, err := cl.Append(context.Background(), []byte(v))
			if err != nil || res.First != uint64(len(acked)) {
				t.Fatalf("append %q: %+v, %v", v, res, err)
			}
			acked = append(acked, v)
		}
	}
	add(300) // one journal record each on every node
	waitSameEnd(t, c, []int{0, 1, 2}, uint64(len(acked)), 30*time.Second)
	c.kill(d)
	j := newestJournal(t, c.dataDir(d))
	fi, err := os.Stat(j)
	if err != nil {
		t.Fatal(err)
	}
	damage(t, j)
	fi2, _ := os.Stat(j)
	t.Logf("node %d SIGKILLed; damaged its newest journal %s (%d bytes, now %d)", d+1, filepath.Base(j), fi.Size(), fi2.Size())
	add(100) // while it is down

	c.start(d)
	deadline := time.Now().Add(60 * time.Second)
	if !starts {
		for !c.exited(d) {
			st, err := cl.Status(context.Background(), c.addrs[d])
			if err == nil || time.Now().After(deadline) {
				t.Fatalf("node %d started with damage followed by valid records in its journal (status %v, %v); it must refuse", d+1, st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if log, _ := os.ReadFile(c.logPath(d)); !strings.Contains(string(log), "data directory is corrupt") {
			t.Fatalf("node %d refused to start without saying its data directory is corrupt:\n%s", d+1, log)
		}
		return
	}
	for {
		log, _ := os.ReadFile(c.logPath(d))
		if line := cutLine.Find(log); line != nil {
			t.Logf("node %d restarted and logged: %s", d+1, line)
			break
		}
		if c.exited(d) || time.Now().After(deadline) {
			t.Fatalf("node %d did not start, or did not log a storage notice \"storage: cut\":\n%s", d+1, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// It rejoins: catches up, then follows a new append.
	waitSameEnd(t, c, []int{0, 1, 2}, uint64(len(acked)), 60*time.Second)
	add(1)
	waitSameEnd(t, c, []int{0, 1, 2}, uint64(len(acked)), 30*time.Second)
	if got := readLocal(t, c.addrs[d]); !slices.Equal(got, acked) {
		t.Fatalf("node %d's log after the restart (%d entries) is not the %d acknowledged ones", d+1, len(got), len(acked))
	}
}
