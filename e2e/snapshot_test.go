package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paxosd/paxosd/client"
)

// paxosd runs the paxosd binary to completion and returns its stdout,
// stderr and error.
func paxosd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// snapshotStatus is paxosd snapshot status -w json.
type snapshotStatus struct {
	Applied    uint64 `json:"applied"`
	FirstIndex uint64 `json:"first_index"`
	NextIndex  uint64 `json:"next_index"`
	Entries    uint64 `json:"entries"`
	DedupRows  uint64 `json:"dedup_rows"`
	SHA256     string `json:"sha256"`
}

// A cluster restored from a snapshot serves the same log: the entries the
// snapshot holds (after a trim, so the source had a base; while appends went
// on during the save), the same first and next index, and the dedup table:
// a retried (client ID, seq) from before the save is a duplicate with its
// original indexes. PAXOSD_SNAPSHOT_ENTRIES sets how many entries the
// snapshot holds, at least (default 3000; docs/benchmarks.md has a run with
// 1,000,000).
func TestSnapshotSaveRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	n := 3000
	if s := os.Getenv("PAXOSD_SNAPSHOT_ENTRIES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 100 {
			t.Fatalf("PAXOSD_SNAPSHOT_ENTRIES=%q: want a number of entries, at least 100", s)
		}
	}
	c := newCluster(t, 3)
	m := c.master(t)
	cl := c.client(t)
	ctx := context.Background()
	appendN := func(from, k int) {
		const batch = 1000
		for i := from; i < from+k; i += batch {
			vals := make([][]byte, 0, batch)
			for j := i; j < min(i+batch, from+k); j++ {
				vals = append(vals, []byte(fmt.Sprintf("v%d", j)))
			}
			if _, err := cl.Append(ctx, vals...); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(0, n/2)
	if _, err := cl.Trim(ctx, uint64(n/4)); err != nil {
		t.Fatal(err)
	}
	// Exactly-once appends of two clients, then more entries.
	const clientA, clientB = 1<<40 + 7, 1<<41 + 9
	orig := map[uint64]client.AppendResult{}
	for seq := uint64(1); seq <= 5; seq++ {
		for _, id := range []uint64{clientA, clientB} {
			r, err := cl.AppendSeq(ctx, id, seq, []byte(fmt.Sprintf("once-%d-%d", id, seq)))
			if err != nil || r.Duplicate {
				t.Fatalf("append of client %d seq %d: %+v, %v", id, seq, r, err)
			}
			orig[id*100+seq] = r
		}
	}
	appendN(n/2, n-n/2+n/4) // the snapshot holds n entries and more

	// Appends go on while the master saves.
	dir := t.TempDir()
	file := filepath.Join(dir, "backup.snap")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := cl.Append(ctx, []byte(fmt.Sprintf("during-%d", i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	start := time.Now()
	out, errOut, err := paxosd(t, "snapshot", "save", "--endpoints", c.addrs[m], file)
	saveTime := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("snapshot save: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(errOut, "snapshot save:") || !strings.Contains(out, "sha256") {
		t.Fatalf("snapshot save printed no progress or summary:\n%s%s", out, errOut)
	}
	saved := out
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("%s.tmp left behind: %v", file, err)
	}
	out, errOut, err = paxosd(t, "snapshot", "status", "-w", "json", file)
	if err != nil {
		t.Fatalf("snapshot status: %v\n%s%s", err, out, errOut)
	}
	var st snapshotStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("snapshot status -w json: %v: %q", err, out)
	}
	if !strings.Contains(saved, "sha256 "+st.SHA256) {
		t.Fatalf("save printed %q; status says sha256 %s", saved, st.SHA256)
	}
	for _, w := range []string{"simple", "table"} {
		out, errOut, err := paxosd(t, "snapshot", "status", file, "-w", w)
		if err != nil || !strings.Contains(out, st.SHA256) || !strings.Contains(out, fmt.Sprint(st.NextIndex)) {
			t.Fatalf("snapshot status -w %s: %v\n%s%s", w, err, out, errOut)
		}
	}
	if st.FirstIndex != uint64(n/4) || st.NextIndex < uint64(n+n/4+10) || st.Entries != st.NextIndex-st.FirstIndex || st.DedupRows < 2 || st.Applied == 0 {
		t.Fatalf("snapshot status: %+v", st)
	}
	// The source's log over the snapshot's range (its entries never change).
	want := readPages(t, c.addrs[m], st.FirstIndex, st.NextIndex)
	c.stopAll()

	// Damaged copies are refused by status and restore, and restore
	// creates nothing.
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		// One bit of an entry's data.
		"flipped": func() []byte {
			b := bytes.Clone(good)
			b[bytes.Index(b, []byte(fmt.Sprintf("v%d", n/2)))+1] ^= 1
			return b
		}(),
		"truncated": good[:len(good)-100],
	} {
		bad := filepath.Join(dir, name+".snap")
		if err := os.WriteFile(bad, b, 0o600); err != nil {
			t.Fatal(err)
		}
		wantErr := map[string]string{"flipped": "checksum mismatch", "truncated": "ends too early"}[name]
		if out, errOut, err := paxosd(t, "snapshot", "status", bad); err == nil || !strings.Contains(errOut, wantErr) {
			t.Errorf("status of a %s file: %v, stdout %q, stderr %q; want an error saying %q", name, err, out, errOut, wantErr)
		}
		dd := filepath.Join(dir, "restore-"+name)
		if out, errOut, err := paxosd(t, "snapshot", "restore", "--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir", dd, bad); err == nil || !strings.Contains(errOut, wantErr) {
			t.Errorf("restore of a %s file: %v, stdout %q, stderr %q; want an error saying %q", name, err, out, errOut, wantErr)
		}
		for _, p := range []string{dd, dd + ".restoring"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("restore of a %s file left %s: %v", name, p, err)
			}
		}
	}

	// Restore into three new directories of a new cluster.
	r := newStoppedCluster(t, 3, "--cluster", "restored")
	start = time.Now()
	for i := range r.addrs {
		// FILE first, as the help shows it (flags before it work too).
		out, errOut, err := paxosd(t, "snapshot", "restore", file, "--id", fmt.Sprint(i+1), "--peers", r.peers,
			"--data-dir", r.dataDir(i), "--cluster", "restored")
		if err != nil {
			t.Fatalf("restore node %d: %v\n%s%s", i+1, err, out, errOut)
		}
	}
	restoreTime := time.Since(start)
	// A non-empty directory is refused.
	if _, errOut, err := paxosd(t, "snapshot", "restore", "--id", "1", "--peers", r.peers, "--data-dir", r.dataDir(0), file); err == nil || !strings.Contains(errOut, "not empty") {
		t.Fatalf("restore into a restored directory: %v %s", err, errOut)
	}
	t.Logf("%d entries (%d bytes): save %v, restore of 3 directories %v", st.Entries, len(good), saveTime.Round(time.Millisecond), restoreTime.Round(time.Millisecond))
	for i := range r.addrs {
		r.start(i)
	}
	r.master(t)
	rc := r.client(t)
	var incs []uint64
	for i, a := range r.addrs {
		s, err := rc.Status(ctx, a)
		if err != nil || s.FirstIndex != st.FirstIndex || s.EndIndex != st.NextIndex || s.ChosenInstance < st.Applied {
			t.Fatalf("restored node %d: %+v, %v; the snapshot: %+v", i+1, s, err, st)
		}
		if got := readPages(t, a, st.FirstIndex, st.NextIndex); !slices.Equal(got, want) {
			t.Fatalf("restored node %d's log differs from the source's", i+1)
		}
		incs = append(incs, s.Incarnation)
	}
	if incs[0] == incs[1] || incs[1] == incs[2] || incs[0] == incs[2] {
		t.Fatalf("restored directories share an incarnation: %x", incs)
	}
	// Retries across the restore are duplicates with the original indexes;
	// the next seq is new and lands at the end.
	for _, id := range []uint64{clientA, clientB} {
		r5, err := rc.AppendSeq(ctx, id, 5, []byte(fmt.Sprintf("once-%d-%d", id, 5)))
		if o := orig[id*100+5]; err != nil || !r5.Duplicate || r5.First != o.First || r5.Last != o.Last {
			t.Fatalf("retry of client %d seq 5 after the restore: %+v, %v; originally %+v", id, r5, err, o)
		}
	}
	r6, err := rc.AppendSeq(ctx, clientA, 6, []byte("once-6"))
	if err != nil || r6.Duplicate || r6.First != st.NextIndex {
		t.Fatalf("client seq 6 after the restore: %+v, %v; want index %d", r6, err, st.NextIndex)
	}
	// Every node applies it.
	for i, a := range r.addrs {
		waitEnd(t, rc, a, st.NextIndex+1, i)
	}
}

// waitEnd waits until the node at addr reports end index end.
func waitEnd(t *testing.T, cl *client.Client, addr string, end uint64, i int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := cl.Status(context.Background(), addr)
		if err == nil && s.EndIndex == end {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d: end index not %d within 30s: %+v, %v", i+1, end, s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readPages reads entries [from, to) from addr with local reads of at most
// 10,000 entries.
func readPages(t *testing.T, addr string, from, to uint64) []string {
	var out []string
	for next := from; next < to; next += 10000 {
		out = append(out, readRange(t, addr, next, min(next+10000, to))...)
	}
	return out
}
