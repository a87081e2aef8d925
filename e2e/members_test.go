package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// cli runs a paxosd client command whose last argument is a member ID
// against the running nodes and returns its standard output and error
// together, and its error.
func (c *cluster) cli(args ...string) (string, error) {
	var eps []string
	for i, a := range c.addrs {
		if c.procs[i] != nil && !c.exited(i) {
			eps = append(eps, a)
		}
	}
	last := len(args) - 1
	args = append(append(args[:last:last], "--endpoints", strings.Join(eps, ",")), args[last])
	out, err := exec.Command(binary, args...).CombinedOutput()
	return string(out), err
}

// members asks the running nodes for the configuration.
func (c *cluster) members(t *testing.T) *paxosdpb.ListMembersResponse {
	var eps []string
	for i, a := range c.addrs {
		if c.procs[i] != nil && !c.exited(i) {
			eps = append(eps, a)
		}
	}
	cl, err := client.New(eps, client.Options{CallTimeout: 2 * time.Second, Retries: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cl.ListMembers(ctx)
	if err != nil {
		t.Fatalf("list members: %v", err)
	}
	return r
}

func roleOf(r *paxosdpb.ListMembersResponse, id int) string {
	for _, m := range r.Members {
		if m.Id == uint64(id) {
			return m.Role
		}
	}
	return ""
}

// waitRole waits until node id has role ("" for not a member) in the
// configuration the running nodes report.
func (c *cluster) waitRole(t *testing.T, id int, role string) *paxosdpb.ListMembersResponse {
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := c.members(t)
		if roleOf(r, id) == role {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d is not %q within 60s: %v%s", id, role, r.Members, logTails(c, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// promote promotes node id with the CLI, again while it is refused for
// lagging (or a change in progress), until it is a voter.
func (c *cluster) promote(t *testing.T, id int) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := c.cli("members", "promote", fmt.Sprint(id))
		if err == nil || roleOf(c.members(t), id) == "voter" {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(out, "behind") && !strings.Contains(out, "in progress") && !strings.Contains(out, "may or may not") {
			t.Fatalf("members promote %d: %v\n%s", id, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkAcked waits until nodes hold the same log, with every acknowledged
// append of h at its index, and checks h against it.
func checkAcked(t *testing.T, c *cluster, h *history, nodes []int) {
	var end uint64
	hist := h.snapshot()
	acked := 0
	for _, op := range hist {
		if op.Status == checker.OK {
			end = max(end, op.Index+1)
			acked++
		}
	}
	logs := sameLogs(t, c, nodes, end, 60*time.Second)
	for k, i := range nodes {
		for _, op := range hist {
			if op.Status == checker.OK && logs[k][op.Index] != op.Value {
				t.Fatalf("node %d holds %q at index %d, acknowledged as %q", i+1, logs[k][op.Index], op.Index, op.Value)
			}
		}
	}
	if res := checker.Check(hist, logs[0]); !res.OK() {
		t.Fatalf("history against the log: %s", res)
	}
	t.Logf("%d operations (%d acknowledged), %d entries on nodes %v", len(hist), acked, len(logs[0]), plus1(nodes))
}

// waitRemoved waits until node i has stopped by itself, non-zero, saying it
// was removed.
func (c *cluster) waitRemoved(t *testing.T, i int) {
	deadline := time.Now().Add(60 * time.Second)
	for !c.exited(i) {
		if time.Now().After(deadline) {
			t.Fatalf("node %d still runs 60s after its removal%s", i+1, logTails(c, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(c.logPath(i))
	want := "paxosd: node: removed from the cluster by a membership change; its data directory can be deleted"
	if code := c.procs[i].ProcessState.ExitCode(); code == 0 || !strings.Contains(string(log), want) {
		t.Fatalf("node %d exited with code %d; its log lacks %q:\n%s", i+1, code, want, log)
	}
}

// Grow 3 -> 5 under exactly-once load: two nodes join with --join and are
// promoted; the master is SIGKILLed while the second promotion is in
// progress and restarted a second later. Every acknowledged append is at its
// index on all five nodes.
func TestGrowThreeToFive(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	h := &history{base: time.Now()}
	stopLoad := handoverLoad(t, c, h, 4)
	defer stopLoad()
	waitAcked(t, h, 20)
	n4, n5 := c.addNode(), c.addNode()
	c.start(n4)
	c.start(n5)
	c.waitRole(t, n4+1, "follower")
	c.waitRole(t, n5+1, "follower")
	c.promote(t, n4+1)
	waitAcked(t, h, 20)

	// Promote 5 and kill the master while the change is pending: once 5 has
	// caught up (as the master sees it), so that the promotion goes through.
	m := c.master(t)
	mc, err := client.New([]string{c.addrs[m]}, client.Options{CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	lagAtMaster := func() (lag uint64, pending bool) {
		r, err := mc.ListMembers(context.Background())
		if err != nil {
			return 1 << 62, false
		}
		for _, mi := range r.Members {
			if mi.Id == uint64(n5+1) && mi.Known {
				lag = mi.Lag
			}
		}
		return lag, r.Pending != ""
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if lag, _ := lagAtMaster(); lag < 32 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d did not catch up within 30s", n5+1)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := mc.ChangeMembers(ctx, &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_PROMOTE, Id: uint64(n5 + 1)})
		t.Logf("promote %d with the master killed meanwhile: %v", n5+1, err)
	}()
	seen := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !seen; {
		_, seen = lagAtMaster()
	}
	t.Logf("killing master node %d (the change seen pending there: %v)", m+1, seen)
	c.kill(m)
	time.Sleep(time.Second)
	c.start(m)
	wg.Wait()
	c.promote(t, n5+1)
	r := c.waitRole(t, n5+1, "voter")
	if voters := strings.Count(fmt.Sprint(r.Members), `role:"voter"`); voters != 5 {
		t.Fatalf("%d voters after growing to 5: %v", voters, r.Members)
	}
	waitAcked(t, h, 20)
	// The new voters carry the cluster: stop two of the first three.
	c.stop(0)
	c.stop(1)
	waitAcked(t, h, 20)
	c.start(0)
	c.start(1)
	stopLoad()
	checkAcked(t, c, h, []int{0, 1, 2, n4, n5})
}

// Shrink 5 -> 3 under exactly-once load: remove a voter, then the master
// (which hands its lease over first). Each removed node stops by itself,
// non-zero, saying why; the three left hold every acknowledged append.
func TestShrinkFiveToThree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 5)
	h := &history{base: time.Now()}
	stopLoad := handoverLoad(t, c, h, 4)
	defer stopLoad()
	waitAcked(t, h, 20)
	m := c.master(t)
	x := (m + 1) % 5
	if out, err := c.cli("members", "remove", fmt.Sprint(x+1)); err != nil {
		t.Fatalf("members remove %d: %v\n%s", x+1, err, out)
	}
	c.waitRemoved(t, x)
	waitAcked(t, h, 20)
	m = c.master(t)
	out, err := c.cli("members", "remove", fmt.Sprint(m+1))
	if err != nil {
		t.Fatalf("members remove %d (the master): %v\n%s", m+1, err, out)
	}
	t.Logf("removing the master: %s", strings.TrimSpace(out))
	c.waitRemoved(t, m)
	waitAcked(t, h, 20)
	stopLoad()
	var left []int
	for i := range 5 {
		if i != x && i != m {
			left = append(left, i)
		}
	}
	r := c.members(t)
	if len(r.Members) != 3 {
		t.Fatalf("members after shrinking: %v", r.Members)
	}
	checkAcked(t, c, h, left)
}

// A member whose data directory was deleted is replaced by a node with the
// same ID on a new, empty directory: paxosd members replace removes it,
// waits for the node to join (--join) and catch up, and promotes it. It
// ends a voter with its new incarnation, and nothing acknowledged is lost.
func TestReplaceLostDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	h := &history{base: time.Now()}
	stopLoad := handoverLoad(t, c, h, 4)
	defer stopLoad()
	waitAcked(t, h, 50)
	v := (c.master(t) + 1) % 3
	c.kill(v)
	if err := os.RemoveAll(c.dataDir(v)); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, h, 20)

	var out bytes.Buffer
	var eps []string
	for i, a := range c.addrs {
		if i != v {
			eps = append(eps, a)
		}
	}
	replace := exec.Command(binary, "members", "replace", "--wait", "2m", "--endpoints", strings.Join(eps, ","), fmt.Sprint(v+1))
	replace.Stdout, replace.Stderr = &syncWriter{w: &out}, &syncWriter{w: &out}
	if err := replace.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- replace.Wait() }()
	defer replace.Process.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(syncString(&out), "waiting for node") {
		select {
		case err := <-done:
			t.Fatalf("members replace ended before it waited for the node (%v): %s", err, syncString(&out))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("members replace did not get to waiting: %s", syncString(&out))
		}
	}
	c.joins[v] = true
	c.start(v)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("members replace: %v\n%s", err, syncString(&out))
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("members replace still runs after 90s:\n%s%s", syncString(&out), logTails(c, 10))
	}
	t.Logf("members replace %d:\n%s", v+1, syncString(&out))
	r := c.waitRole(t, v+1, "voter")
	for _, m := range r.Members {
		if m.Id == uint64(v+1) && m.Incarnation == 0 {
			t.Fatalf("the replaced member has no incarnation: %v", m)
		}
	}
	waitAcked(t, h, 20)
	stopLoad()
	checkAcked(t, c, h, []int{0, 1, 2})
}

// A node that joins with --join only (no --peers) mirrors the log as a
// follower, and restarts with the same command while every member is down.
func TestJoinedFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	cl := c.client(t)
	appendValues(t, cl, 0, 200)
	f := c.addNode()
	c.start(f)
	c.waitRole(t, f+1, "follower")
	appendValues(t, cl, 200, 100)
	waitValues(t, c.addrs[f], 300)
	st, err := cl.Status(context.Background(), c.addrs[f])
	if err != nil || st.Role != "follower" {
		t.Fatalf("status of the joined node: %v, %v", st, err)
	}
	for i := range 3 {
		c.stop(i)
	}
	c.stop(f)
	c.start(f)
	deadline := time.Now().Add(30 * time.Second)
	for {
		fc, err := client.New([]string{c.addrs[f]}, client.Options{CallTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r, err := fc.Read(context.Background(), 0, 10000, true)
		fc.Close()
		if err == nil && len(r.Entries) == 300 {
			break
		}
		if time.Now().After(deadline) || c.exited(f) {
			log, _ := os.ReadFile(c.logPath(f))
			t.Fatalf("the joined follower, restarted alone, does not serve its log: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.procs[f].Process.Signal(syscall.SIGTERM)
}

// syncWriter makes a bytes.Buffer safe for a process's two output streams
// and the test reading it.
type syncWriter struct{ w *bytes.Buffer }

var syncMu sync.Mutex

func (s *syncWriter) Write(p []byte) (int, error) {
	syncMu.Lock()
	defer syncMu.Unlock()
	return s.w.Write(p)
}

func syncString(b *bytes.Buffer) string {
	syncMu.Lock()
	defer syncMu.Unlock()
	return b.String()
}
