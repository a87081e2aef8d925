package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
)

// diskFree points each node's free space at a file the test writes
// (--unsafe-disk-free-file, test-only) and sets --min-free-bytes.
type diskFree struct {
	t     *testing.T
	files []string
}

const testMinFree = 1 << 20

func withDiskFree(t *testing.T, c *cluster) *diskFree {
	d := &diskFree{t: t}
	for i := range c.addrs {
		f := filepath.Join(c.dir, fmt.Sprintf("free%d", i+1))
		d.files = append(d.files, f)
		c.flags[i] = append(c.flags[i], "--unsafe-disk-free-file", f, "--min-free-bytes", fmt.Sprint(testMinFree))
		d.set(i, 1<<40)
	}
	return d
}

func (d *diskFree) set(i int, free uint64) {
	if err := os.WriteFile(d.files[i], []byte(fmt.Sprint(free)), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A master whose disk is below --min-free-bytes refuses appends with
// RESOURCE_EXHAUSTED / NO_SPACE and applies nothing, but stays up: it
// serves reads and tails, its lease renewals and a trim get through, and
// it takes appends again once space is back. An acceptor below the
// threshold declines to vote for appends without stopping; the others
// choose them and it learns them.
func TestFullDiskRefusesAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newStoppedCluster(t, 3)
	d := withDiskFree(t, c)
	for i := range c.addrs {
		c.start(i)
	}
	cl := c.client(t)
	ctx := context.Background()
	appendValues(t, cl, 0, 10)
	m := c.master(t)

	d.set(m, 1000)
	_, err := cl.Append(ctx, []byte("refused"))
	free, min, ok := api.AsNoSpace(err)
	if !errors.Is(err, client.ErrNoSpace) || !ok || free != 1000 || min != testMinFree || status.Code(errors.Unwrap(err)) != codes.ResourceExhausted {
		t.Fatalf("append on a full master: %v; want RESOURCE_EXHAUSTED, NO_SPACE, 1000 bytes free of %d", err, testMinFree)
	}
	for _, what := range []string{"trim", "--min-free-bytes", "add disk", "nothing was appended"} {
		if !strings.Contains(err.Error(), what) {
			t.Errorf("the refusal does not say %q: %v", what, err)
		}
	}
	// Through another node (a forward) and through the CLI: the same answer.
	other := (m + 1) % 3
	out, errOut, code := runCLI(t, "", "append", "--endpoints", c.addrs[other], "refused too")
	if code == 0 || out != "" || !strings.Contains(errOut, "NO_SPACE") && !strings.Contains(errOut, "no space") {
		t.Fatalf("CLI append through node %d on a full master: exit %d, stdout %q, stderr %q", other+1, code, out, errOut)
	}

	// The master stays up and master: its lease renewals get chosen (the
	// applied instance moves although no append does), reads and status
	// answer, and a trim gets through.
	st0, err := cl.Status(ctx, c.addrs[m])
	if err != nil {
		t.Fatal(err)
	}
	if st0.DiskFreeBytes != 1000 || st0.MinFreeBytes != testMinFree || st0.DiskUsedBytes == 0 {
		t.Errorf("status: disk used %d, free %d, min %d; want used > 0, free 1000, min %d", st0.DiskUsedBytes, st0.DiskFreeBytes, st0.MinFreeBytes, testMinFree)
	}
	waitFor(t, "a lease renewal chosen while the disk is full", func() bool {
		st, err := cl.Status(ctx, c.addrs[m])
		return err == nil && st.Role == "master" && st.ChosenInstance > st0.ChosenInstance+1
	})
	if first, err := cl.Trim(ctx, 3); err != nil || first != 3 {
		t.Fatalf("trim on a full master: %d, %v", first, err)
	}
	r, err := cl.Read(ctx, 3, 100, false)
	if err != nil || len(r.Entries) != 7 || r.EndIndex != 10 {
		t.Fatalf("read on a full master: %+v, %v; want v3..v9 and nothing else", r, err)
	}
	if c.exited(m) {
		t.Fatalf("the master stopped")
	}

	// Space is back: appends work again, and nothing refused was applied.
	d.set(m, 1<<40)
	var res client.AppendResult
	waitFor(t, "an append once space is back", func() bool {
		res, err = cl.Append(ctx, []byte("v10"))
		return err == nil
	})
	if res.First != 10 {
		t.Fatalf("the append after space came back landed at %d, want 10 (a refused append was applied)", res.First)
	}

	// An acceptor below the threshold declines to vote but stays up, and
	// learns what the others chose.
	acc := (m + 1) % 3
	d.set(acc, 1000)
	appendValues(t, cl, 11, 5)
	waitFor(t, "the full acceptor learns v11..v15", func() bool {
		st, err := cl.Status(ctx, c.addrs[acc])
		return err == nil && st.EndIndex == 16
	})
	if c.exited(acc) {
		t.Fatal("the full acceptor stopped")
	}
	b, _ := os.ReadFile(c.logPath(acc))
	if !bytes.Contains(b, []byte(`msg="declining accepts: low disk space"`)) {
		t.Errorf("node %d's log does not say it declined Accepts:\n%s", acc+1, b)
	}
	// Both acceptors full: appends slow down (each declines an instance
	// for node.DeclineFor) but the log does not stop.
	d.set((m+2)%3, 1000)
	appendValues(t, cl, 16, 1)
	for i := range c.addrs {
		if c.exited(i) {
			t.Errorf("node %d stopped", i+1)
		}
	}
}

// runCLI runs the paxosd command and returns its stdout, stderr and exit
// code.
func runCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("paxosd %q did not finish within 60s", args)
	}
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// mountTmpfs mounts a tmpfs of size bytes at dir, or skips the test.
func mountTmpfs(t *testing.T, dir string, size int) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): %v: %s", err, out)
	}
}

// An append whose node stops with it in flight (its storage failed on a
// full disk) is reported by the CLI as applied, once, at the index where
// it is: the CLI tags it with a (client ID, seq) pair and retries the
// unknown outcome with the same pair on the other nodes; it never says
// "duplicate" of its own retry, nor fails an append that was committed.
// The node on the small tmpfs runs with --min-free-bytes 0, so that its
// writes fail as they would without the check. Needs mount (root).
func TestUnknownOutcomeRetriedOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	for _, tc := range []struct {
		name   string
		full   int  // the node on the small disk
		master bool // it is made master; else the CLI goes through it to the master
	}{
		{"master on a full disk", 0, true},
		{"acceptor on a full disk forwarding", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newStoppedCluster(t, 3)
			mountTmpfs(t, c.dataDir(tc.full), 2<<20)
			t.Cleanup(func() {
				c.stopAll()
				exec.Command("umount", c.dataDir(tc.full)).Run()
			})
			c.flags[tc.full] = []string{"--min-free-bytes", "0"}
			for i := range c.addrs {
				c.start(i)
			}
			cl := c.client(t)
			ctx := context.Background()
			if tc.master {
				tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				if _, _, err := cl.TransferMaster(tctx, uint64(tc.full+1)); err != nil {
					t.Fatalf("making node %d master: %v", tc.full+1, err)
				}
				cancel()
			} else if c.master(t) == tc.full {
				tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				if _, _, err := cl.TransferMaster(tctx, uint64((tc.full+1)%3+1)); err != nil {
					t.Fatal(err)
				}
				cancel()
			}
			// The full node first: the CLI's first attempt goes through it.
			eps := []string{c.addrs[tc.full], c.addrs[(tc.full+1)%3], c.addrs[(tc.full+2)%3]}
			want := map[string]uint64{}
			// 2 MiB fills within a few of these; an acceptor that lags (a
			// loaded machine) may fill only after the last of them, so up to
			// 40, and then it is waited for.
			for k := 0; k < 40 && !c.exited(tc.full); k++ {
				v := fmt.Sprintf("%d-%s", k, strings.Repeat("C", 300_000))
				out, errOut, code := runCLI(t, v+"\n", "append", "--endpoints", strings.Join(eps, ","), "--timeout", "40s", "-w", "json")
				if code != 0 || strings.Contains(errOut, "duplicate") || strings.Count(out, "\n") != 1 {
					t.Fatalf("append %d: exit %d, stdout %q, stderr %q; want its one index and nothing on stderr", k, code, out, errOut)
				}
				var line struct{ Index uint64 }
				if err := json.Unmarshal([]byte(out), &line); err != nil {
					t.Fatal(err)
				}
				want[v[:strings.IndexByte(v, '-')]] = line.Index
			}
			waitFor(t, fmt.Sprintf("node %d runs out of space", tc.full+1), func() bool { return c.exited(tc.full) })
			if b, _ := os.ReadFile(c.logPath(tc.full)); !bytes.Contains(b, []byte("no space left on device")) {
				t.Fatalf("node %d stopped, but not for want of space:\n%s", tc.full+1, b)
			}
			// Each value once, at the index its command printed.
			live := c.addrs[(tc.full+1)%3]
			var end uint64
			for _, idx := range want {
				end = max(end, idx+1)
			}
			var got []string
			waitFor(t, "the live node has every entry", func() bool {
				got = readLocal(t, live)
				return uint64(len(got)) >= end
			})
			seen := map[string]int{}
			for i, v := range got {
				id := v[:strings.IndexByte(v, '-')]
				seen[id]++
				if idx, ok := want[id]; ok && idx != uint64(i) {
					t.Errorf("append %s printed index %d, but it is at %d", id, idx, i)
				}
			}
			for id := range want {
				if seen[id] != 1 {
					t.Errorf("append %s is in the log %d times, want once", id, seen[id])
				}
			}
			if len(got) != len(want) {
				t.Errorf("the log holds %d entries, the commands printed %d", len(got), len(want))
			}
		})
	}
}

// The same on a real full disk: the master's data directory is a small
// tmpfs. Appends fill it until the master refuses them with NO_SPACE; it
// stays up and serves reads; a trim gives the space back (the deleted
// ranges are compacted, the files go) and appends work again. Every
// acknowledged append is in the log. Needs mount (root).
func TestFullTmpfsRefusesAppendsUntilTrim(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newStoppedCluster(t, 3)
	mountTmpfs(t, c.dataDir(0), 6<<20)
	t.Cleanup(func() {
		c.stopAll()
		exec.Command("umount", c.dataDir(0)).Run()
	})
	c.flags[0] = []string{"--min-free-bytes", fmt.Sprint(3 << 20)}
	for i := range c.addrs {
		c.start(i)
	}
	cl := c.client(t)
	ctx := context.Background()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if _, _, err := cl.TransferMaster(tctx, 1); err != nil {
		t.Fatalf("making node 1 master: %v", err)
	}
	cancel()
	var acked []string
	value := func(k int) []byte { return []byte(fmt.Sprintf("%d-%s", k, strings.Repeat("C", 300_000))) }
	var err error
	for k := 0; k < 40; k++ {
		if _, err = cl.Append(ctx, value(k)); err != nil {
			break
		}
		acked = append(acked, string(value(k)))
	}
	if !errors.Is(err, client.ErrNoSpace) || len(acked) == 0 {
		t.Fatalf("after %d appends: %v; want NO_SPACE once the tmpfs is nearly full", len(acked), err)
	}
	if c.exited(0) {
		t.Fatal("node 1 stopped on a full disk")
	}
	st, err := cl.Status(ctx, c.addrs[0])
	if err != nil || st.Role != "master" || st.DiskFreeBytes >= 3<<20 || st.EndIndex != uint64(len(acked)) {
		t.Fatalf("status of the full master: %+v, %v", st, err)
	}
	if r, err := cl.Read(ctx, 0, 1, false); err != nil || len(r.Entries) != 1 {
		t.Fatalf("read on the full master: %v", err)
	}
	t.Logf("%d appends of 300 KB, then NO_SPACE with %d bytes free, %d used by the data directory", len(acked), st.DiskFreeBytes, st.DiskUsedBytes)
	if _, err := cl.Trim(ctx, uint64(len(acked))); err != nil {
		t.Fatalf("trim on the full master: %v", err)
	}
	waitFor(t, "an append once the trim gave the space back", func() bool {
		_, err = cl.Append(ctx, value(len(acked)))
		return err == nil
	})
	if st, err := cl.Status(ctx, c.addrs[0]); err == nil {
		t.Logf("after the trim: %d bytes free, %d used", st.DiskFreeBytes, st.DiskUsedBytes)
	}
	r, err := cl.Read(ctx, uint64(len(acked)), 10, false)
	if err != nil || len(r.Entries) != 1 || r.Entries[0].Index != uint64(len(acked)) || string(r.Entries[0].Value) != string(value(len(acked))) {
		t.Fatalf("the log after space came back: %+v, %v; want exactly the new append at %d", r, err, len(acked))
	}
}
