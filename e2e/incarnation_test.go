package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/client"
)

// A member whose data directory was lost and created anew must not vote
// with empty state. Nodes A=1, B=2, C=3; C is killed and A+B acknowledge 20
// appends; B is killed, its directory deleted and B started again with its
// original command; A is killed. Without the incarnation check, the empty B
// and C form a quorum, take new appends at the indexes of the 20, and the 20
// are lost when A comes back. With it, C (which knew B's old directory)
// refuses B, and B exits with the reason; no append is acknowledged by B+C;
// once A is back, every acknowledged entry is at its index on A and C, and
// appends go on.
func TestLostDataDirectoryIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const a, b, cc = 0, 1, 2
	c := newCluster(t, 3)
	c.master(t)
	var hist checker.History
	base := time.Now()
	appendOne := func(cl *client.Client, v string, d time.Duration) error {
		op := checker.Op{Kind: checker.Append, Value: v, Invoke: int64(time.Since(base))}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		res, err := cl.Append(ctx, []byte(v))
		cancel()
		op.Complete = int64(time.Since(base))
		op.Status, op.Index = checker.OK, res.First
		if err != nil {
			op.Status, op.Index = checker.Unknown, 0
		}
		hist = append(hist, op)
		return err
	}
	cl := c.client(t)
	// Every node has heard from every other (and so remembers its
	// incarnation, synced), and one append has reached all three.
	deadline := time.Now().Add(30 * time.Second)
	for _, i := range []int{a, b, cc} {
		for _, j := range []int{a, b, cc} {
			// Node i recorded node j's incarnation (synced): it took a
			// batch from j's directory. A link up says only that a
			// stream opened.
			want := fmt.Sprintf(`msg="peer incarnation recorded" node=%d peer=%d `, i+1, j+1)
			for i != j {
				if log, _ := os.ReadFile(c.logPath(i)); strings.Contains(string(log), want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("node %d never recorded node %d's incarnation", i+1, j+1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	if err := appendOne(cl, "w0", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	c.converge(t, 1)

	c.kill(cc)
	var acked []checker.Op
	for k := range 20 {
		if err := appendOne(cl, fmt.Sprintf("ab%d", k), 30*time.Second); err != nil {
			t.Fatalf("append %d with A and B up: %v", k, err)
		}
		acked = append(acked, hist[len(hist)-1])
	}
	t.Logf("A and B acknowledged 20 appends at indexes %d..%d", acked[0].Index, acked[19].Index)

	c.kill(b)
	if err := os.RemoveAll(c.dataDir(b)); err != nil {
		t.Fatal(err)
	}
	c.start(b)
	c.kill(a)
	c.start(cc)

	// B and C must not acknowledge anything: C knew B's old directory.
	bc, err := client.New([]string{c.addrs[b], c.addrs[cc]}, client.Options{CallTimeout: 2 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	for k := range 3 {
		if err := appendOne(bc, fmt.Sprintf("bc%d", k), 5*time.Second); err == nil {
			t.Fatalf("B, on an empty directory, and C acknowledged append bc%d at index %d", k, hist[len(hist)-1].Index)
		}
	}
	// B says why and exits non-zero.
	deadline = time.Now().Add(60 * time.Second)
	for !c.exited(b) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(c.logPath(b))
			t.Fatalf("node 2 still runs on an empty directory; its log:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(c.logPath(b))
	want := "node 2's data directory was created anew"
	if code := c.procs[b].ProcessState.ExitCode(); code == 0 || !strings.Contains(string(log), "paxosd: "+want) ||
		!strings.Contains(string(log), "but peer 3 knew node 2 with incarnation") {
		t.Fatalf("node 2 exited with code %d; its log lacks %q:\n%s", code, want, log)
	}
	if clog, _ := os.ReadFile(c.logPath(cc)); !strings.Contains(string(clog), "rejected a batch from node 2: it carries incarnation") {
		t.Errorf("node 3 did not log the refusal; its log:\n%s", clog)
	}

	// A comes back: A and C hold every acknowledged entry and go on.
	c.start(a)
	ac, err := client.New([]string{c.addrs[a], c.addrs[cc]}, client.Options{CallTimeout: 2 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	for k := range 10 {
		if err := appendOne(ac, fmt.Sprintf("ac%d", k), 30*time.Second); err != nil {
			t.Fatalf("append %d with A and C up: %v", k, err)
		}
	}
	end := hist[len(hist)-1].Index + 1
	waitSameEnd(t, c, []int{a, cc}, end, 60*time.Second)
	for _, i := range []int{a, cc} {
		got := readRange(t, c.addrs[i], 0, end)
		for _, op := range acked {
			if got[op.Index] != op.Value {
				t.Fatalf("node %d holds %q at index %d, acknowledged as %q", i+1, got[op.Index], op.Index, op.Value)
			}
		}
		if res := checker.Check(hist, got); !res.OK() {
			t.Fatalf("node %d: %s", i+1, res)
		}
	}
}
