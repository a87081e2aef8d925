package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Timing in these tests is only ever a deadline: every wait polls a
// condition, and the deadlines are many times what the conditions take.
const (
	testProbeInterval = 200 * time.Millisecond // failure found in about a second
	deadline          = 15 * time.Second
	pollEvery         = 20 * time.Millisecond
)

const testCluster = 42

// capture keeps a node's log lines; they are printed when the test fails or
// runs verbose (after the node is closed, so no goroutine logs into a
// finished test).
type capture struct {
	mu    sync.Mutex
	lines []string
}

func (c *capture) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	c.mu.Lock()
	c.lines = append(c.lines, line)
	c.mu.Unlock()
}

// Write takes a line of the text handler of logger.
func (c *capture) Write(p []byte) (int, error) {
	c.logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// logger logs into c, one line per record.
func (c *capture) logger() *slog.Logger { return slog.New(slog.NewTextHandler(c, nil)) }

// onDown records an OnDown report as a line "down N".
func (c *capture) onDown(id uint64) { c.logf("down %d", id) }

func (c *capture) has(sub string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.lines {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func (c *capture) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

type testNode struct {
	*Gossip
	log *capture
}

func apiAddr(id uint64) string { return fmt.Sprintf("127.0.0.1:%d", 7000+id) }

// start starts node id of the cluster on 127.0.0.1 with a picked port; it is
// closed when the test ends.
func start(t *testing.T, id, cluster uint64, bind string) *testNode {
	t.Helper()
	return startKeyed(t, id, cluster, bind, nil)
}

// startKeyed is start with a gossip key (nil: none).
func startKeyed(t *testing.T, id, cluster uint64, bind string, key []byte) *testNode {
	t.Helper()
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	c := &capture{}
	g, err := Start(Config{
		NodeID:        id,
		BindAddr:      bind,
		APIAddr:       apiAddr(id),
		Cluster:       cluster,
		Logger:        c.logger(),
		ProbeInterval: testProbeInterval,
		OnDown:        c.onDown,
		Key:           key,
	})
	if err != nil {
		t.Fatalf("start node %d: %v", id, err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("close node %d: %v", id, err)
		}
		if t.Failed() || testing.Verbose() {
			for _, l := range c.all() {
				t.Logf("node %d: %s", id, l)
			}
		}
	})
	return &testNode{Gossip: g, log: c}
}

// waitFor polls cond until it holds, failing the test at the deadline. It
// returns how long it took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > deadline {
			t.Fatalf("after %v: still waiting for %s", deadline, what)
		}
		time.Sleep(pollEvery)
	}
	return time.Since(begin)
}

// view is a Peer without the time, for comparing.
type view struct {
	ID                  uint64
	APIAddr, GossipAddr string
	Role                string
	Applied             uint64
	Alive               bool
}

func views(ps []Peer) []view {
	out := make([]view, len(ps))
	for i, p := range ps {
		out[i] = view{p.ID, p.APIAddr, p.GossipAddr, p.Role, p.Applied, p.Alive}
	}
	return out
}

// cluster starts nodes 1..n and joins each to node 1.
func cluster(t *testing.T, n int) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = start(t, uint64(i+1), testCluster, "")
	}
	for _, nd := range nodes[1:] {
		got, err := nd.Join([]string{nodes[0].Addr()})
		if err != nil || got != 1 {
			t.Fatalf("node %d joins through node 1: %d, %v", nd.cfg.NodeID, got, err)
		}
	}
	waitAllSee(t, nodes, nodes)
	return nodes
}

// waitAllSee waits until every one of observers sees exactly want, all alive.
func waitAllSee(t *testing.T, observers, want []*testNode) {
	t.Helper()
	for _, o := range observers {
		waitFor(t, fmt.Sprintf("node %d to see %d alive nodes", o.cfg.NodeID, len(want)), func() bool {
			ps := o.Peers()
			if len(ps) != len(want) {
				return false
			}
			for i, p := range ps {
				if p.ID != want[i].cfg.NodeID || !p.Alive {
					return false
				}
			}
			return true
		})
	}
}

func TestThreeNodesSeeEachOther(t *testing.T) {
	n1 := start(t, 1, testCluster, "")
	n2 := start(t, 2, testCluster, "")
	n3 := start(t, 3, testCluster, "")
	// State set before the join travels in the join's push-pull.
	n1.SetLocal(RoleVoter, 10)
	n2.SetLocal(RoleVoter, 20)
	n3.SetLocal(RoleFollower, 5)
	for _, nd := range []*testNode{n2, n3} {
		got, err := nd.Join([]string{n1.Addr()})
		if err != nil || got != 1 {
			t.Fatalf("node %d joins through node 1: %d, %v", nd.cfg.NodeID, got, err)
		}
	}

	want := []view{
		{1, apiAddr(1), n1.Addr(), RoleVoter, 10, true},
		{2, apiAddr(2), n2.Addr(), RoleVoter, 20, true},
		{3, apiAddr(3), n3.Addr(), RoleFollower, 5, true},
	}
	nodes := []*testNode{n1, n2, n3}
	for _, nd := range nodes {
		took := waitFor(t, fmt.Sprintf("node %d to see all three as %+v", nd.cfg.NodeID, want), func() bool {
			return slices.Equal(views(nd.Peers()), want)
		})
		t.Logf("node %d saw all three after %v", nd.cfg.NodeID, took.Round(time.Millisecond))
		for _, p := range nd.Peers() {
			if p.Updated.IsZero() {
				t.Errorf("node %d: peer %d has no Updated time", nd.cfg.NodeID, p.ID)
			}
			if alive, known := nd.Alive(p.ID); !alive || !known {
				t.Errorf("node %d: Alive(%d) = %v, %v, want true, true", nd.cfg.NodeID, p.ID, alive, known)
			}
		}
		if alive, known := nd.Alive(99); alive || known {
			t.Errorf("node %d: Alive(99) = %v, %v, want false, false", nd.cfg.NodeID, alive, known)
		}
	}

	// A new state reaches the others; measure how fast (logged, not a
	// pass condition).
	sees := func(nd *testNode, id uint64, role string, applied uint64) bool {
		for _, p := range nd.Peers() {
			if p.ID == id {
				return p.Role == role && p.Applied == applied
			}
		}
		return false
	}
	var took []time.Duration
	for i := range 10 {
		applied := uint64(100 + i)
		begin := time.Now()
		n3.SetLocal(RoleVoter, applied)
		for _, nd := range []*testNode{n1, n2} {
			waitFor(t, fmt.Sprintf("node %d to see node 3 at %d", nd.cfg.NodeID, applied), func() bool {
				return sees(nd, 3, RoleVoter, applied)
			})
		}
		took = append(took, time.Since(begin).Round(time.Millisecond))
		// The next change comes after a pause, as a node's state changes
		// in a quiet cluster, so each measurement includes the rate limit
		// only when it applies.
		time.Sleep(publishInterval)
	}
	t.Logf("SetLocal on node 3 reached nodes 1 and 2 after %v", took)

	// A burst of changes: the last one wins, however the rate limit
	// groups them.
	begin := time.Now()
	for a := uint64(1000); a <= 1100; a++ {
		n2.SetLocal(RoleFollower, a)
	}
	for _, nd := range []*testNode{n1, n3} {
		waitFor(t, fmt.Sprintf("node %d to see node 2's last state", nd.cfg.NodeID), func() bool {
			return sees(nd, 2, RoleFollower, 1100)
		})
	}
	t.Logf("a burst of 101 SetLocal calls settled on the others after %v", time.Since(begin).Round(time.Millisecond))

	for _, nd := range nodes {
		for _, l := range nd.log.all() {
			if strings.Contains(l, "[DEBUG]") {
				t.Errorf("node %d logged a debug line: %s", nd.cfg.NodeID, l)
			}
		}
	}
}

func TestKilledNodeIsReportedDead(t *testing.T) {
	nodes := cluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n3.SetLocal(RoleVoter, 7)
	waitFor(t, "node 1 to see node 3's state", func() bool { return n1.Peers()[2].Applied == 7 })

	begin := time.Now()
	n3.kill() // no leave: to the others it looks like a crash
	for _, nd := range []*testNode{n1, n2} {
		waitFor(t, fmt.Sprintf("node %d to report node 3 dead", nd.cfg.NodeID), func() bool {
			alive, known := nd.Alive(3)
			return !alive && known
		})
		// The node hears of it through OnDown too, and of no one else.
		waitFor(t, fmt.Sprintf("node %d's OnDown(3)", nd.cfg.NodeID), func() bool { return nd.log.has("down 3") })
		if nd.log.has("down 1") || nd.log.has("down 2") {
			t.Errorf("node %d: OnDown for a live node: %q", nd.cfg.NodeID, nd.log.all())
		}
	}
	t.Logf("a killed node was reported dead by both others after %v (probe interval %v)",
		time.Since(begin).Round(time.Millisecond), testProbeInterval)

	// It stays listed, with what it last gossiped.
	got := views(n1.Peers())
	want := view{3, apiAddr(3), n3.Addr(), RoleVoter, 7, false}
	if len(got) != 3 || got[2] != want {
		t.Fatalf("node 1's peers after the kill: %+v, want node 3 as %+v", got, want)
	}
	if alive, known := n1.Alive(2); !alive || !known {
		t.Errorf("node 1: Alive(2) = %v, %v, want true, true", alive, known)
	}
}

func TestClosedNodeIsReportedLeft(t *testing.T) {
	nodes := cluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	begin := time.Now()
	if err := n3.Close(); err != nil {
		t.Fatalf("close node 3: %v", err)
	}
	for _, nd := range []*testNode{n1, n2} {
		waitFor(t, fmt.Sprintf("node %d to report node 3 gone", nd.cfg.NodeID), func() bool {
			alive, known := nd.Alive(3)
			return !alive && known
		})
		// The node hears of it through OnDown too, and of no one else.
		waitFor(t, fmt.Sprintf("node %d's OnDown(3)", nd.cfg.NodeID), func() bool { return nd.log.has("down 3") })
		if nd.log.has("down 1") || nd.log.has("down 2") {
			t.Errorf("node %d: OnDown for a live node: %q", nd.cfg.NodeID, nd.log.all())
		}
	}
	t.Logf("a closed node was reported gone by both others after %v (its Close included)",
		time.Since(begin).Round(time.Millisecond))
	if alive, known := n3.Alive(3); alive || !known {
		t.Errorf("node 3 after its Close: Alive(3) = %v, %v, want false, true", alive, known)
	}
}

func TestRestartedNodeIsAliveAgain(t *testing.T) {
	nodes := cluster(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	n3.SetLocal(RoleVoter, 50)
	waitFor(t, "node 1 to see node 3's state", func() bool { return n1.Peers()[2].Applied == 50 })
	addr := n3.Addr()
	n3.kill()
	waitFor(t, "node 1 to report node 3 dead", func() bool {
		alive, _ := n1.Alive(3)
		return !alive
	})

	// The same member comes back on the same gossip address, behind in
	// the log: the others take its new state although memberlist had it
	// at a higher incarnation.
	back := start(t, 3, testCluster, addr)
	back.SetLocal(RoleVoter, 40)
	if _, err := back.Join([]string{n1.Addr()}); err != nil {
		t.Fatalf("restarted node 3 joins: %v", err)
	}
	for _, nd := range []*testNode{n1, n2} {
		waitFor(t, fmt.Sprintf("node %d to see node 3 back", nd.cfg.NodeID), func() bool {
			p := nd.Peers()[2]
			return p.ID == 3 && p.Alive && p.Applied == 40
		})
	}
}

// A member that crashed comes back on another gossip port (paxosd's
// default picks a new one at every start): the others take the new address
// at once, not only once memberlist forgot the dead node.
func TestRestartedNodeOnAnotherPortIsAliveAgain(t *testing.T) {
	nodes := cluster(t, 3)
	n1, n3 := nodes[0], nodes[2]
	old := n3.Addr()
	n3.kill()
	waitFor(t, "node 1 to report node 3 dead", func() bool {
		alive, _ := n1.Alive(3)
		return !alive
	})
	back := start(t, 3, testCluster, "")
	if _, err := back.Join([]string{n1.Addr()}); err != nil {
		t.Fatalf("restarted node 3 joins: %v", err)
	}
	took := waitFor(t, "node 1 to see node 3 back at its new address", func() bool {
		p := n1.Peers()[2]
		return p.ID == 3 && p.Alive && p.GossipAddr == back.Addr()
	})
	t.Logf("node 3 back at %s (was %s) after %v", back.Addr(), old, took.Round(time.Millisecond))
}

func TestOtherClusterCannotJoin(t *testing.T) {
	n1 := start(t, 1, testCluster, "")
	other := start(t, 2, testCluster+1, "")

	// The join fails: node 1 drops the stream because its label names
	// another cluster.
	n, err := other.Join([]string{n1.Addr()})
	if err == nil || n != 0 {
		t.Fatalf("a node of another cluster joined: %d, %v", n, err)
	}
	t.Logf("join refused: %v", err)
	waitFor(t, "node 1 to log the foreign stream", func() bool { return n1.log.has("unacceptable label") })
	// And the other way round.
	if n, err := n1.Join([]string{other.Addr()}); err == nil || n != 0 {
		t.Fatalf("joined a node of another cluster: %d, %v", n, err)
	}
	waitFor(t, "the other node to log the foreign stream", func() bool { return other.log.has("unacceptable label") })

	// Neither admitted the other.
	if _, known := n1.Alive(2); known {
		t.Errorf("node 1 knows node 2 of another cluster")
	}
	if _, known := other.Alive(1); known {
		t.Errorf("node 2 of another cluster knows node 1")
	}
	if len(n1.Peers()) != 1 || len(other.Peers()) != 1 {
		t.Errorf("peers: %+v and %+v, want only themselves", n1.Peers(), other.Peers())
	}
}

// With a key, only nodes holding the same key gossip together: one
// without a key, or with another, joins no one and is admitted by no one.
func TestKeyedGossip(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	n1 := startKeyed(t, 1, testCluster, "", key)
	n2 := startKeyed(t, 2, testCluster, "", key)
	if n, err := n2.Join([]string{n1.Addr()}); err != nil || n != 1 {
		t.Fatalf("a node with the key did not join: %d, %v", n, err)
	}
	waitAllSee(t, []*testNode{n1, n2}, []*testNode{n1, n2})
	plain := start(t, 3, testCluster, "")
	other := startKeyed(t, 4, testCluster, "", []byte("another key, 32 bytes long......"))
	for _, n := range []*testNode{plain, other} {
		if k, err := n.Join([]string{n1.Addr()}); err == nil || k != 0 {
			t.Errorf("a node without the cluster's key joined: %d, %v", k, err)
		}
	}
	for _, n := range []*testNode{n1, n2} {
		for _, id := range []uint64{3, 4} {
			if _, known := n.Alive(id); known {
				t.Errorf("a keyed node admitted node %d, which has not the key", id)
			}
		}
	}
}

// bare is a Gossip without memberlist, to drive the delegate directly.
func bare(c *capture) *Gossip {
	return &Gossip{
		cfg:   Config{NodeID: 1, Cluster: testCluster, APIAddr: apiAddr(1)},
		log:   c.logger(),
		peers: make(map[uint64]*peerState),
	}
}

func TestAliveDelegateAdmitsOnlyMembersOfThisCluster(t *testing.T) {
	d := &delegate{g: bare(&capture{})}
	good := encodeMeta(meta{cluster: testCluster, role: RoleVoter, applied: 3, apiAddr: apiAddr(2)})
	foreign := encodeMeta(meta{cluster: testCluster + 1, role: RoleVoter, applied: 3, apiAddr: apiAddr(2)})
	for _, tc := range []struct {
		name  string
		meta  []byte
		admit bool
	}{
		{"2", good, true},
		{"18446744073709551615", good, true},
		{"2", []byte{0xff, 0xff}, true}, // malformed: admitted, its state ignored
		{"2", nil, true},
		{"2", foreign, false},
		{"0", good, false},
		{"007", good, false},
		{"+7", good, false},
		{"-1", good, false},
		{"", good, false},
		{"node2", good, false},
		{"18446744073709551616", good, false},
	} {
		err := d.NotifyAlive(&memberlist.Node{Name: tc.name, Meta: tc.meta})
		if (err == nil) != tc.admit {
			t.Errorf("NotifyAlive(%q, % x) = %v, want admitted %v", tc.name, tc.meta, err, tc.admit)
		}
	}
}

func TestMalformedMetaIsIgnored(t *testing.T) {
	c := &capture{}
	g := bare(c)
	d := &delegate{g: g}
	node := func(meta []byte) *memberlist.Node {
		return &memberlist.Node{Name: "2", Addr: []byte{127, 0, 0, 1}, Port: 9002, Meta: meta}
	}
	peer2 := func() Peer {
		t.Helper()
		ps := g.Peers()
		if len(ps) != 2 || ps[1].ID != 2 {
			t.Fatalf("peers: %+v, want nodes 1 and 2", ps)
		}
		return ps[1]
	}
	garbage := [][]byte{nil, {}, {1}, {0, 0, 0, 0}, {1, 9, 42, 1, 0}, []byte("not a meta at all"), {1, 1, 42, 1, 200, 'x'}}

	// A new node whose metadata does not decode is known and alive, with
	// no state; one line is logged.
	d.NotifyJoin(node(garbage[0]))
	if p := peer2(); !p.Alive || p.APIAddr != "" || p.Role != "" || p.GossipAddr != "127.0.0.1:9002" {
		t.Fatalf("node 2 after a malformed join: %+v", p)
	}
	if n := len(c.all()); n != 1 {
		t.Fatalf("%d log lines, want 1: %q", n, c.all())
	}

	good := meta{cluster: testCluster, role: RoleVoter, applied: 9, apiAddr: apiAddr(2)}
	d.NotifyUpdate(node(encodeMeta(good)))
	want := peer2()
	if want.APIAddr != apiAddr(2) || want.Role != RoleVoter || want.Applied != 9 {
		t.Fatalf("node 2 after a good update: %+v", want)
	}

	// Malformed updates change nothing, and log once until a good one.
	for _, b := range garbage {
		d.NotifyUpdate(node(b))
		if got := peer2(); got != want {
			t.Fatalf("after malformed % x: %+v, want %+v", b, got, want)
		}
	}
	// Metadata of another cluster is no better (NotifyAlive refuses it
	// first; this is the second line of defence).
	d.NotifyUpdate(node(encodeMeta(meta{cluster: 7, role: RoleFollower, applied: 1, apiAddr: apiAddr(9)})))
	if got := peer2(); got != want {
		t.Fatalf("after another cluster's meta: %+v, want %+v", got, want)
	}
	if n := len(c.all()); n != 2 {
		t.Fatalf("%d log lines, want 2: %q", n, c.all())
	}
	d.NotifyUpdate(node(encodeMeta(good)))
	want = peer2() // a newer Updated
	d.NotifyUpdate(node(garbage[1]))
	if n := len(c.all()); n != 3 {
		t.Fatalf("%d log lines, want 3: %q", n, c.all())
	}
	for _, l := range c.all() {
		if !strings.Contains(l, "peer=2") {
			t.Errorf("log line does not name the peer: %s", l)
		}
	}

	// Leaving keeps the state, not alive. Names that are not IDs, and
	// this node itself, are not taken in.
	d.NotifyLeave(node(nil))
	want.Alive = false
	if got := peer2(); got != want {
		t.Fatalf("after leave: %+v, want %+v", got, want)
	}
	d.NotifyJoin(&memberlist.Node{Name: "x", Meta: encodeMeta(good)})
	d.NotifyJoin(&memberlist.Node{Name: "1", Meta: encodeMeta(good)})
	if n := len(g.Peers()); n != 2 {
		t.Fatalf("%d peers, want 2: %+v", n, g.Peers())
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	nodes := cluster(t, 2)
	n1, n2 := nodes[0], nodes[1]
	for i := range 3 {
		if err := n2.Close(); err != nil {
			t.Fatalf("close #%d: %v", i+1, err)
		}
	}
	n2.SetLocal(RoleVoter, 1) // harmless after Close
	if _, err := n2.Join([]string{n1.Addr()}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Join after Close: %v, want ErrClosed", err)
	}
	if alive, known := n2.Alive(2); alive || !known {
		t.Fatalf("Alive(self) after Close = %v, %v, want false, true", alive, known)
	}
	if ps := n2.Peers(); len(ps) != 2 || ps[1].Alive {
		t.Fatalf("Peers after Close: %+v", ps)
	}
	// A kill, then a Close.
	n1.kill()
	if err := n1.Close(); err != nil {
		t.Fatalf("close after kill: %v", err)
	}
	// goleak.VerifyTestMain checks that no goroutine outlived the tests.
}

func TestConfigErrorsNameTheField(t *testing.T) {
	ok := Config{NodeID: 1, BindAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:7001", Cluster: 1}
	for _, tc := range []struct {
		field string
		edit  func(*Config)
	}{
		{"NodeID", func(c *Config) { c.NodeID = 0 }},
		{"Cluster", func(c *Config) { c.Cluster = 0 }},
		{"BindAddr", func(c *Config) { c.BindAddr = "" }},
		{"BindAddr", func(c *Config) { c.BindAddr = "localhost:0" }},
		{"BindAddr", func(c *Config) { c.BindAddr = "127.0.0.1:70000" }},
		{"AdvertiseAddr", func(c *Config) { c.AdvertiseAddr = "127.0.0.1" }},
		{"APIAddr", func(c *Config) { c.APIAddr = "" }},
		{"APIAddr", func(c *Config) { c.APIAddr = strings.Repeat("a", 300) + ":1" }},
		{"ProbeInterval", func(c *Config) { c.ProbeInterval = -time.Second }},
		{"Key", func(c *Config) { c.Key = []byte("short") }},
	} {
		cfg := ok
		tc.edit(&cfg)
		g, err := Start(cfg)
		if err == nil {
			g.Close()
			t.Errorf("%+v started", cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.field) {
			t.Errorf("error %q does not name %s", err, tc.field)
		}
	}
}
