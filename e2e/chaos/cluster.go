package chaos

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
	"google.golang.org/grpc"
)

// Cluster is n `paxosd server` processes on 127.0.0.1 whose peer links all
// go through Proxies the harness controls: node i reaches node j by
// dialing proxy (i, j) (--dial-peers), while every identity check still uses
// the real addresses (--peers). Clients connect to the real addresses.
type Cluster struct {
	binary string
	dir    string
	bug    string
	sec    *Security
	logf   func(format string, args ...any)

	Addrs   []string
	peers   string
	proxies [][]*Proxy // proxies[i][j]: i dials j through it; nil on the diagonal

	mu     sync.Mutex
	procs  []*proc
	starts []int // how many times each node was started
	// held marks nodes killed for good: Start leaves them down until
	// Restore. offsets are the wall clock offsets nodes start with.
	held    []bool
	offsets []time.Duration
	// joined: the node's directory was wiped and it joins again with
	// --join (the replace procedure) instead of starting with --peers.
	joined []bool
	gossip []string // each node's --gossip-listen
	// slots: the ballot slot node i's directory holds (its index at
	// first; -1 from a wipe until the replaced node is a voter again), and
	// wipes: how many times its directory was wiped.
	slots []int
	wipes []int
	// Exits lists processes that ended without the harness stopping them.
	exits []string
	api   map[string]*client.Client // one single-endpoint client per node, for status
	// release gives back the reserved node and gossip ports.
	release func()
}

// proc is one run of one node's process.
type proc struct {
	cmd    *exec.Cmd
	log    *os.File
	paused bool
	ending bool          // the harness is killing or stopping it
	done   chan struct{} // closed when it has exited
}

// ClusterOptions configure NewCluster.
type ClusterOptions struct {
	Binary string // the paxosd binary
	Nodes  int
	Dir    string // data directories and logs go here
	Bug    string // --bug NAME (a binary built with -tags paxosd_bugs), "" for none
	Seed   uint64 // drives the proxies' random choices
	// Security, when set: TLS and authentication for the nodes and the
	// harness's clients.
	Security *Security
	Logf     func(format string, args ...any)
}

// NewCluster starts the proxies and every node.
func NewCluster(opt ClusterOptions) (*Cluster, error) {
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	// Gossip ports from the same batch: an OS-picked one could take a
	// port picked for a node that has not started yet. They stay reserved
	// while a node is down, so it finds its port again when it restarts.
	ports, release, err := testports.Reserve(2 * opt.Nodes)
	if err != nil {
		return nil, err
	}
	addrs := ports[:opt.Nodes:opt.Nodes]
	c := &Cluster{binary: opt.Binary, dir: opt.Dir, bug: opt.Bug, sec: opt.Security, logf: opt.Logf, Addrs: addrs,
		procs: make([]*proc, opt.Nodes), starts: make([]int, opt.Nodes), held: make([]bool, opt.Nodes), joined: make([]bool, opt.Nodes),
		slots: make([]int, opt.Nodes), wipes: make([]int, opt.Nodes),
		offsets: make([]time.Duration, opt.Nodes), api: map[string]*client.Client{}, gossip: ports[opt.Nodes:], release: release}
	for i := range c.slots {
		c.slots[i] = i
	}
	var parts []string
	for i, a := range addrs {
		parts = append(parts, fmt.Sprintf("%d=%s", i+1, a))
	}
	c.peers = strings.Join(parts, ",")
	c.proxies = make([][]*Proxy, opt.Nodes)
	for i := range c.proxies {
		c.proxies[i] = make([]*Proxy, opt.Nodes)
		for j := range c.proxies[i] {
			if i == j {
				continue
			}
			p, err := NewProxy(addrs[j], opt.Seed^uint64(i*64+j+1)*0x9e3779b97f4a7c15)
			if err != nil {
				c.Close()
				return nil, err
			}
			c.proxies[i][j] = p
		}
	}
	for i := range addrs {
		if err := c.Start(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Security runs a cluster with TLS and authentication.
type Security struct {
	// ServerArgs are every node's flags (--cert-file, --auth-tokens-file,
	// ...), NodeArgs(i) node i's own (its --peer-cert-file).
	ServerArgs []string
	NodeArgs   func(i int) []string
	// TLS and Token are what the harness's clients connect with.
	TLS   *tls.Config
	Token string
}

// NewClient is a client of the endpoints eps with opt, and the cluster's
// TLS and token when it has them: every client of the harness (workload,
// nemesis, trimmer, checks) comes from here.
func (c *Cluster) NewClient(eps []string, opt client.Options) (*client.Client, error) {
	return client.New(eps, c.secure(opt))
}

func (c *Cluster) secure(opt client.Options) client.Options {
	if c.sec != nil {
		opt.TLS, opt.Token = c.sec.TLS, c.sec.Token
	}
	return opt
}

// dialOptions are the gRPC dial options of a connection of the harness's
// own to a node: plaintext, or the cluster's TLS and token.
func (c *Cluster) dialOptions() []grpc.DialOption {
	return client.DialOptions(c.secure(client.Options{}))
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.Addrs) }

// LogPath is node i's log file (every run of it, appended).
func (c *Cluster) LogPath(i int) string { return filepath.Join(c.dir, fmt.Sprintf("node%d.log", i+1)) }

// Start starts node i if it is not running and not killed for good.
func (c *Cluster) Start(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs[i] != nil || c.held[i] {
		return nil
	}
	logf, err := os.OpenFile(c.LogPath(i), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	var dial []string
	for j, p := range c.proxies[i] {
		if p != nil {
			dial = append(dial, fmt.Sprintf("%d=%s", j+1, p.Addr()))
		}
	}
	args := []string{"server", "--id", fmt.Sprint(i + 1), "--peers", c.peers,
		"--dial-peers", strings.Join(dial, ","), "--data-dir", c.dataDir(i)}
	if c.joined[i] {
		// Replaced on an empty directory: it joins through the others'
		// addresses (its links then bypass the proxies).
		var others []string
		for j, a := range c.Addrs {
			if j != i {
				others = append(others, a)
			}
		}
		args = []string{"server", "--id", fmt.Sprint(i + 1), "--listen", c.Addrs[i], "--join", strings.Join(others, ","), "--data-dir", c.dataDir(i)}
	}
	args = append(args, "--gossip-listen", c.gossip[i])
	if c.bug != "" {
		args = append(args, "--bug", c.bug)
	}
	if c.sec != nil {
		args = append(append(args, c.sec.ServerArgs...), c.sec.NodeArgs(i)...)
	}
	if d := c.offsets[i]; d != 0 {
		args = append(args, "--unsafe-wall-clock-offset", d.String())
	}
	cmd := exec.Command(c.binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	fmt.Fprintf(logf, "==== chaos: starting node %d at %s\n", i+1, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	p := &proc{cmd: cmd, log: logf, done: make(chan struct{})}
	c.procs[i] = p
	c.starts[i]++
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		if !p.ending {
			c.exits = append(c.exits, fmt.Sprintf("node %d exited by itself (%v); see %s", i+1, err, c.LogPath(i)))
			if c.procs[i] == p {
				c.procs[i] = nil
			}
		}
		c.mu.Unlock()
		logf.Close()
		close(p.done)
	}()
	return nil
}

func (c *Cluster) dataDir(i int) string { return filepath.Join(c.dir, fmt.Sprintf("data%d", i+1)) }

// Wipe SIGKILLs node i and deletes its data directory; its next start
// joins the cluster again (--join), which takes it only once the member
// it was is removed.
func (c *Cluster) Wipe(i int) error {
	c.Kill(i)
	c.mu.Lock()
	c.joined[i], c.slots[i] = true, -1
	c.wipes[i]++
	c.mu.Unlock()
	return os.RemoveAll(c.dataDir(i))
}

// SetSlot records the ballot slot node i holds after a replacement.
func (c *Cluster) SetSlot(i int, slot uint64) {
	c.mu.Lock()
	c.slots[i] = int(slot)
	c.mu.Unlock()
}

// Directory returns node i's ballot slot (-1: not known) and how many
// times its directory was wiped.
func (c *Cluster) Directory(i int) (slot, wipes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slots[i], c.wipes[i]
}

// take marks node i's process as ending and returns it (nil if none).
func (c *Cluster) take(i int) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.procs[i]
	if p != nil {
		p.ending = true
		c.procs[i] = nil
	}
	return p
}

// Kill sends SIGKILL to node i and waits for it to exit.
func (c *Cluster) Kill(i int) {
	if p := c.take(i); p != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// KillForGood sends SIGKILL to node i and keeps it down: Start does nothing
// for it until Restore.
func (c *Cluster) KillForGood(i int) {
	c.mu.Lock()
	c.held[i] = true
	c.mu.Unlock()
	c.Kill(i)
}

// Held reports whether node i is killed for good.
func (c *Cluster) Held(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[i]
}

// HeldCount is how many nodes are killed for good.
func (c *Cluster) HeldCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, h := range c.held {
		if h {
			n++
		}
	}
	return n
}

// SetClockOffset sets the wall clock offset node i runs with from its next
// start (--unsafe-wall-clock-offset).
func (c *Cluster) SetClockOffset(i int, d time.Duration) {
	c.mu.Lock()
	c.offsets[i] = d
	c.mu.Unlock()
}

// Restore ends the faults that last until a round's end: a node whose wall
// clock is off is SIGKILLed and restarted with a correct one, a node killed
// for good is started. It says what it did.
func (c *Cluster) Restore() []string {
	var done []string
	for i := range c.Addrs {
		c.mu.Lock()
		off, held := c.offsets[i], c.held[i]
		c.offsets[i], c.held[i] = 0, false
		c.mu.Unlock()
		switch {
		case held:
			done = append(done, fmt.Sprintf("started node %d, killed for good", i+1))
		case off != 0:
			c.Kill(i)
			done = append(done, fmt.Sprintf("restarted node %d with its wall clock right (it was %v off)", i+1, off))
		default:
			continue
		}
		if err := c.Start(i); err != nil {
			done = append(done, fmt.Sprintf("start node %d: %v", i+1, err))
		}
	}
	return done
}

// Stop sends SIGTERM to node i (SIGCONT first if paused) and waits for it;
// after 10 s it kills it and reports that.
func (c *Cluster) Stop(i int) error {
	p := c.take(i)
	if p == nil {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("node %d did not stop within 10s of SIGTERM", i+1)
	}
}

// Pause sends SIGSTOP to node i.
func (c *Cluster) Pause(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[i]; p != nil && !p.paused {
		p.cmd.Process.Signal(syscall.SIGSTOP)
		p.paused = true
	}
}

// Resume sends SIGCONT to node i if it is paused.
func (c *Cluster) Resume(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[i]; p != nil && p.paused {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.paused = false
	}
}

// Incarnation returns how many times node i was started; a restart makes
// a new incarnation.
func (c *Cluster) Incarnation(i int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts[i]
}

// Up reports whether node i runs and is not paused.
func (c *Cluster) Up(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i] != nil && !c.procs[i].paused
}

// Running reports whether node i has a process (paused or not).
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.procs[i] != nil
}

// Exits returns the processes that ended by themselves.
func (c *Cluster) Exits() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.exits...)
}

// SetLink sets the state of the link i -> j (what i sends to j).
func (c *Cluster) SetLink(i, j int, st LinkState) { c.proxies[i][j].Set(st) }

// Link returns the state of the link i -> j.
func (c *Cluster) Link(i, j int) LinkState { return c.proxies[i][j].State() }

// HealNetwork opens every link, with no delay and no loss.
func (c *Cluster) HealNetwork() {
	for i := range c.proxies {
		for j, p := range c.proxies[i] {
			if p != nil && c.proxies[i][j].State() != (LinkState{}) {
				p.Set(LinkState{})
			}
		}
	}
}

// Partition blocks (with b) every link between nodes on different sides;
// side[i] names node i's side. Links within a side are left as they are.
func (c *Cluster) Partition(side []int, b Block) {
	for i := range c.proxies {
		for j, p := range c.proxies[i] {
			if p != nil && side[i] != side[j] {
				st := p.State()
				st.Block = b
				p.Set(st)
			}
		}
	}
}

// ProxyStats sums every proxy's counters.
func (c *Cluster) ProxyStats() ProxyStats {
	var s ProxyStats
	for i := range c.proxies {
		for _, p := range c.proxies[i] {
			if p != nil {
				ps := p.Stats()
				s.Conns += ps.Conns
				s.Refused += ps.Refused
				s.Broken += ps.Broken
				s.Bytes += ps.Bytes
			}
		}
	}
	return s
}

// apiClient returns a client of node i alone, for status and local reads.
func (c *Cluster) apiClient(i int) *client.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.api[c.Addrs[i]]
	if cl == nil {
		cl, _ = c.NewClient([]string{c.Addrs[i]}, client.Options{CallTimeout: 2 * time.Second, Retries: 1, DialTimeout: time.Second})
		c.api[c.Addrs[i]] = cl
	}
	return cl
}

// Status asks node i for its status, within d.
func (c *Cluster) Status(i int, d time.Duration) (*paxosdpb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.apiClient(i).Status(ctx, c.Addrs[i])
}

// Master returns a node that is up and says it is master, or -1.
func (c *Cluster) Master() int {
	for i := range c.Addrs {
		if !c.Up(i) {
			continue
		}
		if st, err := c.Status(i, 500*time.Millisecond); err == nil && st.Role == "master" {
			return i
		}
	}
	return -1
}

// ReadAll reads node i's whole log with local reads: its first index and
// the values from there on.
func (c *Cluster) ReadAll(ctx context.Context, i int) (first uint64, vals []string, err error) {
	st, err := c.Status(i, 5*time.Second)
	if err != nil {
		return 0, nil, err
	}
	first = st.FirstIndex
	vals, err = c.ReadRange(ctx, i, first, ^uint64(0))
	return first, vals, err
}

// ReadRange reads node i's entries in [from, to) with local reads, as far
// as it has them.
func (c *Cluster) ReadRange(ctx context.Context, i int, from, to uint64) ([]string, error) {
	cl := c.apiClient(i)
	var out []string
	next := from
	for next < to {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := cl.Read(rctx, next, int(min(10000, to-next)), true)
		cancel()
		if err != nil {
			return out, err
		}
		if len(r.Entries) == 0 {
			return out, nil
		}
		for _, e := range r.Entries {
			if e.Index != next {
				return out, fmt.Errorf("node %d: a local read from %d returned index %d where %d was due", i+1, from, e.Index, next)
			}
			out = append(out, entryName(e.Value))
			next++
		}
	}
	return out, nil
}

// LogProblems returns lines of the nodes' logs that show a panic or a
// data race.
func (c *Cluster) LogProblems() []string {
	var out []string
	for i := range c.Addrs {
		b, _ := os.ReadFile(c.LogPath(i))
		for _, marker := range []string{"panic:", "DATA RACE", "fatal error:"} {
			if k := bytes.Index(b, []byte(marker)); k >= 0 {
				end := min(len(b), k+2000)
				out = append(out, fmt.Sprintf("node %d's log shows %q:\n%s", i+1, marker, b[k:end]))
			}
		}
	}
	sort.Strings(out)
	return out
}

// Close stops every node and proxy.
func (c *Cluster) Close() error {
	var errs []string
	for i := range c.procs {
		if err := c.Stop(i); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for i := range c.proxies {
		for _, p := range c.proxies[i] {
			if p != nil {
				p.Close()
			}
		}
	}
	c.mu.Lock()
	for _, cl := range c.api {
		cl.Close()
	}
	clear(c.api)
	c.mu.Unlock()
	c.release()
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
