// Package e2e runs real paxosd server processes on 127.0.0.1 and checks
// what clients saw with checker/.
package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
)

var binary string

// TestMain builds the server, or takes PAXOSD_E2E_BINARY: a paxosd built
// elsewhere, e.g. from an older commit to watch a test fail without a fix.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "paxosd-e2e-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "paxosd")
	if b := os.Getenv("PAXOSD_E2E_BINARY"); b != "" {
		binary = b
	} else {
		args := []string{"build", "-o", binary}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, "../cmd/paxosd")...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build paxosd: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cluster is a set of paxosd server processes on loopback.
type cluster struct {
	gossip []string // each node's --gossip-listen
	t      testing.TB
	dir    string
	addrs  []string
	peers  string
	procs  []*exec.Cmd
	done   []chan struct{} // closed when procs[i] has exited
	logs   []*os.File
	extra  []string // more server flags
	// flags are more server flags of one node (by index), after extra.
	flags map[int][]string
	// genesis is how many nodes the cluster was created with (--peers);
	// joins are the nodes that start with --join instead (addNode, or a
	// member replaced on a new directory).
	genesis int
	joins   map[int]bool
}

func newCluster(t testing.TB, n int, extra ...string) *cluster {
	c := newStoppedCluster(t, n, extra...)
	for i := range c.addrs {
		c.start(i)
	}
	return c
}

// newStoppedCluster is newCluster without starting any node.
func newStoppedCluster(t testing.TB, n int, extra ...string) *cluster {
	// Gossip ports come from the same batch as the API ports: a node's
	// OS-picked gossip port could otherwise take a port picked (and freed)
	// for another node that has not started yet.
	ports := testports.Addrs(t, 2*n)
	c := &cluster{t: t, dir: t.TempDir(), addrs: ports[:n:n], gossip: ports[n:], procs: make([]*exec.Cmd, n), done: make([]chan struct{}, n),
		logs: make([]*os.File, n), extra: extra, flags: map[int][]string{}, genesis: n, joins: map[int]bool{}}
	var parts []string
	for i, a := range c.addrs {
		parts = append(parts, fmt.Sprintf("%d=%s", i+1, a))
	}
	c.peers = strings.Join(parts, ",")
	t.Cleanup(func() {
		c.stopAll()
		for i := range c.addrs {
			b, _ := os.ReadFile(c.logPath(i))
			if strings.Contains(string(b), "DATA RACE") || strings.Contains(string(b), "panic:") {
				t.Errorf("node %d's log shows a data race or a panic:\n%s", i+1, b)
			}
		}
	})
	return c
}

// logPath is node i's log (every run of it, appended); dataDir its data directory.
func (c *cluster) logPath(i int) string { return filepath.Join(c.dir, fmt.Sprintf("node%d.log", i+1)) }
func (c *cluster) dataDir(i int) string { return filepath.Join(c.dir, fmt.Sprintf("data%d", i+1)) }

// args is the command line of node i.
func (c *cluster) args(i int) []string {
	args := []string{"server", "--id", fmt.Sprint(i + 1), "--peers", c.peers, "--data-dir", c.dataDir(i)}
	if c.joins[i] {
		args = []string{"server", "--id", fmt.Sprint(i + 1), "--listen", c.addrs[i], "--data-dir", c.dataDir(i),
			"--join", strings.Join(c.addrs[:c.genesis], ",")}
	}
	// Debug: the logs tell every phase 1, which failures are read by.
	args = append(args, "--gossip-listen", c.gossip[i], "--log-level", "debug")
	return append(append(args, c.extra...), c.flags[i]...)
}

// addNode adds a node that joins the cluster (--join) on a new port, without
// starting it, and returns its index (its ID is the index plus one).
func (c *cluster) addNode() int {
	i := len(c.addrs)
	ports := testports.Addrs(c.t, 2)
	c.addrs, c.gossip = append(c.addrs, ports[0]), append(c.gossip, ports[1])
	c.procs, c.done, c.logs = append(c.procs, nil), append(c.done, nil), append(c.logs, nil)
	c.joins[i] = true
	return i
}

func (c *cluster) start(i int) {
	logf, err := os.OpenFile(c.logPath(i), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(binary, c.args(i)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	c.procs[i], c.done[i], c.logs[i] = cmd, done, logf
}

// exited reports whether node i's process has ended (by itself, since the
// harness sets procs[i] to nil when it ends one).
func (c *cluster) exited(i int) bool {
	if c.procs[i] == nil {
		return false
	}
	select {
	case <-c.done[i]:
		return true
	default:
		return false
	}
}

func (c *cluster) kill(i int) {
	if p := c.procs[i]; p != nil {
		p.Process.Signal(syscall.SIGKILL)
		<-c.done[i]
		c.logs[i].Close()
		c.procs[i] = nil
	}
}

func (c *cluster) stop(i int) {
	if p := c.procs[i]; p != nil {
		p.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done[i]:
		case <-time.After(10 * time.Second):
			c.t.Errorf("node %d did not stop on SIGTERM within 10s", i+1)
			p.Process.Kill()
			<-c.done[i]
		}
		c.logs[i].Close()
		c.procs[i] = nil
	}
}

func (c *cluster) stopAll() {
	for i := range c.procs {
		c.stop(i)
	}
}

func (c *cluster) client(t testing.TB) *client.Client {
	cl, err := client.New(c.addrs, client.Options{CallTimeout: 2 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// master waits for a node that reports itself master and returns its index.
func (c *cluster) master(t testing.TB) int {
	cl := c.client(t)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, a := range c.addrs {
			if c.procs[i] == nil {
				continue
			}
			st, err := cl.Status(context.Background(), a)
			if err == nil && st.Role == "master" {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no master within 30s")
	return -1
}

// logOf reads node i's whole log with local reads.
func (c *cluster) logOf(t *testing.T, i int) []string { return readLocal(t, c.addrs[i]) }

// converge waits until every node's log has the same length as the longest.
func (c *cluster) converge(t *testing.T, want int) [][]string {
	deadline := time.Now().Add(60 * time.Second)
	for {
		logs := make([][]string, len(c.addrs))
		ok := true
		for i := range c.addrs {
			logs[i] = c.logOf(t, i)
			if len(logs[i]) < want {
				ok = false
			}
		}
		if ok {
			return logs
		}
		if time.Now().After(deadline) {
			var lens []int
			for _, l := range logs {
				lens = append(lens, len(l))
			}
			t.Fatalf("logs did not converge to %d entries within 60s: lengths %v", want, lens)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestKillMasterMidway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	c.master(t)
	const clients, perClient = 8, 250
	var (
		mu   sync.Mutex
		hist checker.History
		wg   sync.WaitGroup
		base = time.Now()
	)
	var appended sync.WaitGroup
	appended.Add(1)
	var total int
	var once sync.Once
	for k := 0; k < clients; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			cl := c.client(t)
			for j := 0; j < perClient; j++ {
				v := fmt.Sprintf("c%d-%d", k, j)
				op := checker.Op{Client: k, Kind: checker.Append, Value: v, Invoke: int64(time.Since(base))}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				res, err := cl.Append(ctx, []byte(v))
				cancel()
				op.Complete = int64(time.Since(base))
				if err != nil {
					op.Status = checker.Unknown
				} else {
					op.Index = res.First
				}
				mu.Lock()
				hist = append(hist, op)
				total++
				if total == clients*perClient/2 {
					once.Do(func() { appended.Done() })
				}
				mu.Unlock()
			}
		}(k)
	}
	appended.Wait()
	m := c.master(t)
	mu.Lock()
	done := total
	mu.Unlock()
	t.Logf("killing master node %d with SIGKILL after %d appends", m+1, done)
	c.kill(m)
	time.Sleep(time.Second)
	c.start(m)
	wg.Wait()

	check := func(phase string) {
		acked := 0
		for _, op := range hist {
			if op.Status == checker.OK {
				acked++
			}
		}
		logs := c.converge(t, acked)
		for i := 1; i < len(logs); i++ {
			if strings.Join(logs[i], "\n") != strings.Join(logs[0], "\n") {
				t.Fatalf("%s: node %d's log differs from node 1's (%d vs %d entries)", phase, i+1, len(logs[i]), len(logs[0]))
			}
		}
		res := checker.Check(hist, logs[0])
		t.Logf("%s: %s", phase, strings.SplitN(res.String(), "\n", 2)[0])
		if !res.OK() {
			t.Fatalf("%s: %s", phase, res)
		}
	}
	check("after the kill")
	c.stopAll()
	for i := range c.addrs {
		c.start(i)
	}
	c.master(t)
	check("after a full restart")
}

// A tail running through a SIGKILL of the master delivers every index
// exactly once, in order.
func TestTailThroughMasterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	m := c.master(t)
	const total = 600
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	got := make(chan client.Entry, total)
	tailErr := make(chan error, 1)
	// The tail streams from the master first: the kill breaks its stream.
	eps := []string{c.addrs[m]}
	for i, a := range c.addrs {
		if i != m {
			eps = append(eps, a)
		}
	}
	tc, err := client.New(eps, client.Options{CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	go func() {
		n := 0
		for e, err := range tc.Entries(ctx, 0) {
			if err != nil {
				tailErr <- err
				return
			}
			got <- e
			if n++; n == total {
				break
			}
		}
		tailErr <- nil
	}()
	cl := c.client(t)
	for i := 0; i < total; i++ {
		if i == total/3 {
			t.Logf("SIGKILL master node %d, which the tail streams from, after %d appends", m+1, i)
			c.kill(m)
		}
		if i == 2*total/3 {
			for j := range c.procs {
				if c.procs[j] == nil {
					c.start(j)
				}
			}
		}
		if _, err := cl.Append(ctx, []byte(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if err := <-tailErr; err != nil {
		t.Fatalf("tail: %v", err)
	}
	close(got)
	want := uint64(0)
	for e := range got {
		if e.Index != want || string(e.Value) != fmt.Sprintf("v%d", want) {
			t.Fatalf("tail delivered index %d (%q), want index %d (\"v%d\")", e.Index, e.Value, want, want)
		}
		want++
	}
	if want != total {
		t.Fatalf("tail delivered %d entries, want %d", want, total)
	}
}

// startFollower starts a follower process of member target with ID id.
func (c *cluster) startFollower(t *testing.T, id, target int, addr string) *exec.Cmd {
	logf, err := os.OpenFile(filepath.Join(c.dir, fmt.Sprintf("follower%d.log", id)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "server", "--id", fmt.Sprint(id), "--follow", fmt.Sprint(target), "--listen", addr,
		"--peers", c.peers, "--data-dir", filepath.Join(c.dir, fmt.Sprintf("follower%d", id)))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
	})
	return cmd
}

// readLocal reads a node's whole log with local reads.
func readLocal(t testing.TB, addr string) []string {
	out, err := tryReadLocal(t, addr)
	if err != nil {
		t.Fatalf("read %s: %v", addr, err)
	}
	return out
}

// tryReadLocal is readLocal that returns the error of a read.
func tryReadLocal(t testing.TB, addr string) ([]string, error) {
	cl, err := client.New([]string{addr}, client.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []string
	for {
		r, err := cl.Read(context.Background(), uint64(len(out)), 10000, true)
		if err != nil {
			return out, err
		}
		if len(r.Entries) == 0 {
			return out, nil
		}
		for _, e := range r.Entries {
			out = append(out, string(e.Value))
		}
	}
}

// A follower added to a running cluster mirrors the whole log, follows new
// appends, reports itself as a follower, and loses nothing when killed and
// restarted.
func TestFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	c.master(t)
	cl := c.client(t)
	followerAddr := testports.Addrs(t, 1)[0]
	mirrors := func(want int) { waitValues(t, followerAddr, want) }
	appendValues(t, cl, 0, 1000)
	f := c.startFollower(t, 10, 1, followerAddr)
	mirrors(1000)
	appendValues(t, cl, 1000, 500)
	mirrors(1500)

	fc, err := client.New([]string{followerAddr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	st, err := fc.Status(context.Background(), followerAddr)
	if err != nil || st.Role != "follower" {
		t.Fatalf("follower status: %+v, %v", st, err)
	}
	// Appends sent to the follower are forwarded to the master.
	if _, err := fc.Append(context.Background(), []byte("v1500")); err != nil {
		t.Fatalf("append through the follower: %v", err)
	}
	mirrors(1501)

	f.Process.Signal(syscall.SIGKILL)
	f.Wait()
	appendValues(t, cl, 1501, 499)
	c.startFollower(t, 10, 1, followerAddr)
	mirrors(2000)
}

// waitValues waits until the node at addr holds exactly "v0" to "v<n-1>" in
// its local log. A follower that has not heard from its cluster yet refuses
// local reads (api.NotConnectedError): that is waited out too.
func waitValues(t *testing.T, addr string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		var err error
		got, err = tryReadLocal(t, addr)
		if err != nil && !api.AsNotConnected(err) {
			t.Fatalf("read %s: %v", addr, err)
		}
		if err == nil && len(got) >= n {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != n {
		t.Fatalf("%s has %d entries, want %d", addr, len(got), n)
	}
	for i, v := range got {
		if v != fmt.Sprintf("v%d", i) {
			t.Fatalf("%s: index %d holds %q", addr, i, v)
		}
	}
}

// appendValues appends "v<from>" to "v<from+n-1>", 50 to an append.
func appendValues(t *testing.T, cl *client.Client, from, n int) {
	vals := make([][]byte, 0, 50)
	for i := from; i < from+n; i++ {
		vals = append(vals, []byte(fmt.Sprintf("v%d", i)))
		if len(vals) == 50 || i == from+n-1 {
			if _, err := cl.Append(context.Background(), vals...); err != nil {
				t.Fatal(err)
			}
			vals = vals[:0]
		}
	}
}

// A follower added after a trim fetches its member's base (the chosen values
// below the trim are gone), starts its log at the first index, and follows.
func TestFollowerAfterTrim(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	c.master(t)
	cl := c.client(t)
	appendValues(t, cl, 0, 2000)
	if first, err := cl.Trim(context.Background(), 1500); err != nil || first != 1500 {
		t.Fatalf("Trim(1500): %d, %v", first, err)
	}
	addr := testports.Addrs(t, 1)[0]
	c.startFollower(t, 10, 1, addr)
	fc, err := client.New([]string{addr}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	wait := func(end uint64) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			st, err := fc.Status(context.Background(), addr)
			if err == nil && st.EndIndex == end && st.FirstIndex == 1500 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("follower did not reach [1500,%d): %+v %v", end, st, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait(2000)
	if _, err := cl.Append(context.Background(), []byte("v2000")); err != nil {
		t.Fatal(err)
	}
	wait(2001)
	got := readRange(t, addr, 1500, 2001)
	for i, v := range got {
		if want := fmt.Sprintf("v%d", 1500+i); v != want {
			t.Fatalf("follower index %d holds %q, want %q", 1500+i, v, want)
		}
	}
}

// A node stopped while 100,000 entries are appended catches up after a
// restart, and the three logs are identical. It reports the catch-up rate.
func TestCatchUp100k(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const total, batch, size = 100_000, 100, 100
	c := newCluster(t, 3)
	m := c.master(t)
	behind := (m + 1) % 3
	c.stop(behind)
	cl := c.client(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			vals := make([][]byte, batch)
			for k := w; k < total/batch; k += 8 {
				for j := range vals {
					v := fmt.Sprintf("%07d-", k*batch+j)
					vals[j] = []byte(v + strings.Repeat("x", size-len(v)))
				}
				if _, err := cl.Append(context.Background(), vals...); err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	c.start(behind)
	// Time the catch-up from when the restarted node listens.
	deadline := time.Now().Add(120 * time.Second)
	for {
		conn, err := net.Dial("tcp", c.addrs[behind])
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d does not listen after a restart: %v", behind+1, err)
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	bc, err := client.New([]string{c.addrs[behind]}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	for {
		st, err := bc.Status(context.Background(), c.addrs[behind])
		if err == nil && st.EndIndex >= total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d did not catch up within 120s (status %v, %v)", behind+1, st, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := time.Since(start)
	t.Logf("node %d caught up %d entries of %d B in %v from when it listened: %.0f entries/s, %.1f MB/s",
		behind+1, total, size, d.Round(time.Millisecond), total/d.Seconds(), total*size/d.Seconds()/1e6)
	logs := c.converge(t, total) // the other voter learns the last appends with the master's next message, or a tick later
	for i := 1; i < 3; i++ {
		if len(logs[i]) != total || strings.Join(logs[i], "") != strings.Join(logs[0], "") {
			t.Fatalf("node %d's log (%d entries) differs from node 1's (%d)", i+1, len(logs[i]), len(logs[0]))
		}
	}
}

// dirSize is the bytes of every file under dir.
func dirSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// Trim goes through the log: reads and tails below the first index get a
// clear error, above it they work, a node that was down across the trim
// catches up by fetching the master's base (its chosen values below the trim
// are gone), and disk use falls to almost nothing, on the master and on the
// node that caught up.
func TestTrim(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	const total, batch = 20_000, 100
	c := newCluster(t, 3)
	m := c.master(t)
	down := (m + 1) % 3
	cl := c.client(t)
	vals := make([][]byte, batch)
	rnd := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < total/batch; k++ {
		for j := range vals {
			// Random bytes: snappy in goleveldb must not hide the disk use.
			noise := make([]byte, 1000)
			for b := range noise {
				noise[b] = byte(rnd.Uint32())
			}
			vals[j] = append([]byte(fmt.Sprintf("%06d-", k*batch+j)), noise...)
		}
		if _, err := cl.Append(context.Background(), vals...); err != nil {
			t.Fatal(err)
		}
		if k == total/batch/2 {
			c.stop(down) // misses the second half and the trim
		}
	}
	dataDir := c.dataDir
	before, downBefore := dirSize(t, dataDir(m)), dirSize(t, dataDir(down))
	first, err := cl.Trim(context.Background(), total-100)
	if err != nil || first != total-100 {
		t.Fatalf("Trim(%d): %d, %v", total-100, first, err)
	}
	var te *client.TrimmedError
	for _, local := range []bool{false, true} {
		if _, err := cl.Read(context.Background(), 0, 10, local); !errors.As(err, &te) || te.First != total-100 {
			t.Fatalf("read (local %v) below the first index: %v", local, err)
		}
	}
	r, err := cl.Read(context.Background(), total-100, 1000, false)
	if err != nil || len(r.Entries) != 100 || !strings.HasPrefix(string(r.Entries[0].Value), fmt.Sprintf("%06d-", total-100)) {
		t.Fatalf("read from the first index: %d entries, %v", len(r.Entries), err)
	}
	// The CLI's tail from below the first index says so and fails.
	out, err := exec.Command(binary, "tail", "--from", "0", "--endpoints", strings.Join(c.addrs, ","), "--timeout", "5s").CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("entries below index %d were trimmed", total-100)) {
		t.Fatalf("tail --from 0 after a trim: err=%v output=%q", err, out)
	}
	// The node that was down catches up across the trim.
	c.start(down)
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := cl.Status(context.Background(), c.addrs[down])
		if err == nil && st.EndIndex == total && st.FirstIndex == total-100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d did not catch up across the trim: %v %v", down+1, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// It got there by fetching a peer's base: the values it lacked are gone.
	if b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("node%d.log", down+1))); !strings.Contains(string(b), `msg="base installed"`) {
		t.Fatalf("node %d caught up without installing a base; its log:\n%s", down+1, b)
	}
	want := readRange(t, c.addrs[m], total-100, total)
	if got := readRange(t, c.addrs[down], total-100, total); !slices.Equal(got, want) {
		t.Fatalf("node %d's log after catching up differs from the master's", down+1)
	}
	// Disk use falls on both once the deletion is compacted: the entries
	// and the chosen values below the trim go.
	for _, i := range []int{m, down} {
		was := map[int]int64{m: before, down: downBefore}[i]
		deadline = time.Now().Add(60 * time.Second)
		for {
			after := dirSize(t, dataDir(i))
			if after < was/10 {
				t.Logf("node %d's data directory: %d KB before the trim, %d KB after", i+1, was>>10, after>>10)
				break
			}
			if time.Now().After(deadline) {
				out, _ := exec.Command("sh", "-c", "ls -la "+dataDir(i)+"; cat "+dataDir(i)+"/LOG").CombinedOutput()
				t.Fatalf("node %d's disk use did not fall: %d bytes before the trim, %d after\n%s", i+1, was, after, out)
			}
			cl.Append(context.Background(), []byte("tick")) // Saves continue the chunked deletion
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// readRange reads entries [from, to) from addr with local reads.
func readRange(t *testing.T, addr string, from, to uint64) []string {
	cl, err := client.New([]string{addr}, client.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []string
	for next := from; next < to; {
		r, err := cl.Read(context.Background(), next, int(to-next), true)
		if err != nil || len(r.Entries) == 0 {
			t.Fatalf("read [%d,%d) from %s: %d entries, %v", next, to, addr, len(r.Entries), err)
		}
		for _, e := range r.Entries {
			out = append(out, string(e.Value))
			next = e.Index + 1
		}
	}
	return out
}

// --retain-entries trims the log automatically on every node.
func TestRetainEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3, "--retain-entries", "1000")
	c.master(t)
	cl := c.client(t)
	for k := 0; k < 50; k++ {
		vals := make([][]byte, 100)
		for j := range vals {
			vals[j] = []byte(fmt.Sprint(k*100 + j))
		}
		if _, err := cl.Append(context.Background(), vals...); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for i, a := range c.addrs {
		for {
			st, err := cl.Status(context.Background(), a)
			if err == nil && st.EndIndex == 5000 && st.FirstIndex >= 3900 && st.FirstIndex <= 4000 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d: log not trimmed to about 1000 entries: %v %v", i+1, st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
