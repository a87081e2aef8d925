package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain"))
}

func TestGossipAddrs(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		gossip, listen, self string
		bind, advertise      string
		err                  string
	}{
		{listen: "127.0.0.1:7001", self: "127.0.0.1:7001", bind: "127.0.0.1:0"},
		{gossip: "127.0.0.1:7946", listen: "127.0.0.1:7001", self: "127.0.0.1:7001", bind: "127.0.0.1:7946"},
		{listen: ":7001", self: "10.0.0.1:7001", bind: "0.0.0.0:0", advertise: "10.0.0.1:0"},
		{gossip: "0.0.0.0:7946", listen: "10.0.0.1:7001", self: "10.0.0.1:7001", bind: "0.0.0.0:7946", advertise: "10.0.0.1:0"},
		{gossip: "[::1]:7946", listen: "[::1]:7001", self: "[::1]:7001", bind: "[::1]:7946"},
		{gossip: "127.0.0.1", listen: "127.0.0.1:7001", self: "127.0.0.1:7001", err: "--gossip-listen 127.0.0.1: address 127.0.0.1: missing port"},
		{gossip: "127.0.0.1:99999", listen: "127.0.0.1:7001", self: "127.0.0.1:7001", err: `port "99999"`},
		{gossip: "no-such-host.invalid:7946", listen: "127.0.0.1:7001", self: "127.0.0.1:7001", err: "gossip needs an IP address"},
	} {
		bind, adv, err := gossipAddrs(ctx, tc.gossip, tc.listen, tc.self)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("gossipAddrs(%q, %q): %q, %v; want an error with %q", tc.gossip, tc.listen, bind, err, tc.err)
			}
			continue
		}
		if err != nil || bind != tc.bind || adv != tc.advertise {
			t.Errorf("gossipAddrs(%q, %q, %q) = %q, %q, %v; want %q, %q", tc.gossip, tc.listen, tc.self, bind, adv, err, tc.bind, tc.advertise)
		}
	}
}

// threeNodes starts three in-process nodes on free loopback ports with fast
// gossip probes; the test's cleanup stops them.
func threeNodes(t *testing.T, gossipListen string) ([]*Server, []string) {
	t.Helper()
	return threeNodesWith(t, func(c *Config) { c.GossipListen = gossipListen })
}

// threeNodesWith starts three nodes whose config tune changes first.
func threeNodesWith(t *testing.T, tune func(*Config)) ([]*Server, []string) {
	t.Helper()
	addrs := testports.Addrs(t, 3)
	peers := map[uint64]string{}
	for i, a := range addrs {
		peers[uint64(i+1)] = a
	}
	dir := t.TempDir()
	servers := make([]*Server, 3)
	for i := range servers {
		cfg := Config{ID: uint64(i + 1), Peers: peers, DataDir: fmt.Sprintf("%s/node%d", dir, i+1),
			Cluster: "test", GossipProbeInterval: 100 * time.Millisecond}
		tune(&cfg)
		s, err := Start(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = s
		t.Cleanup(func() { s.Stop() })
	}
	return servers, addrs
}

// waitMembers polls ListMembers at addr until ok accepts the answer.
func waitMembers(t *testing.T, cl *client.Client, what string, ok func(*paxosdpb.ListMembersResponse) bool) *paxosdpb.ListMembersResponse {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := cl.ListMembers(ctx)
		cancel()
		if err == nil && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s (last answer %v, %v)", what, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Three nodes find each other's gossip ports through the API with no
// configuration; members list shows them alive, then a stopped node not
// alive, while appends go on (gossip decides nothing).
func TestGossipMembersAlive(t *testing.T) {
	servers, addrs := threeNodes(t, "")
	cl, err := client.New(addrs[:2], client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	start := time.Now()
	r := waitMembers(t, cl, "all alive in gossip", func(r *paxosdpb.ListMembersResponse) bool {
		for _, m := range r.Members {
			if !m.Alive || m.GossipAddress == "" || !m.Known {
				return false
			}
		}
		return r.Gossip && len(r.Members) == 3
	})
	t.Logf("all alive in gossip after %v: %v", time.Since(start).Round(time.Millisecond), r.Members)
	// The list is one node's view; the others' gossip may take a moment
	// longer to see everyone.
	for _, s := range servers {
		deadline := time.Now().Add(30 * time.Second)
		for got := len(s.Gossip().Peers()); got != 3; got = len(s.Gossip().Peers()) {
			if time.Now().After(deadline) {
				t.Fatalf("node %d's gossip sees %d nodes after 30 s, want 3", s.cfg.ID, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Stop a node that is not the master, so that appends need no election.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Append(ctx, []byte("before")); err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(ctx, addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	victim := 3
	if st.MasterId == 3 {
		victim = 1
	}
	if err := servers[victim-1].Stop(); err != nil {
		t.Fatalf("stopping node %d: %v", victim, err)
	}
	start = time.Now()
	waitMembers(t, cl, fmt.Sprintf("node %d not alive", victim), func(r *paxosdpb.ListMembersResponse) bool {
		for _, m := range r.Members {
			if m.Alive != (m.Id != uint64(victim)) {
				return false
			}
		}
		return true
	})
	t.Logf("node %d not alive after %v", victim, time.Since(start).Round(time.Millisecond))
	for i := range 5 {
		if _, err := cl.Append(ctx, []byte(fmt.Sprint("after", i))); err != nil {
			t.Fatalf("append with node %d stopped: %v", victim, err)
		}
	}
}

// With --gossip-key-file, three nodes holding the key gossip together:
// every member shows alive.
func TestGossipKeyed(t *testing.T) {
	_, addrs := threeNodesWith(t, func(c *Config) { c.GossipKey = []byte("0123456789abcdef") })
	cl, err := client.New(addrs[:1], client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitMembers(t, cl, "all alive in encrypted gossip", func(r *paxosdpb.ListMembersResponse) bool {
		for _, m := range r.Members {
			if !m.Alive || !m.Known {
				return false
			}
		}
		return r.Gossip && len(r.Members) == 3
	})
}

// Gossip's report that a peer is down reaches the node's core (a hint for
// catch-up and for the master's view of who is live): with probes every
// ten minutes, a stopped peer would count as live for half an hour by
// messages alone (the core's Live bound, three probe intervals).
func TestGossipReportReachesTheCore(t *testing.T) {
	servers, addrs := threeNodesWith(t, func(c *Config) { c.LearnInterval = 10 * time.Minute })
	cl, err := client.New(addrs, client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitMembers(t, cl, "all alive in gossip", func(r *paxosdpb.ListMembersResponse) bool {
		for _, m := range r.Members {
			if !m.Alive {
				return false
			}
		}
		return r.Gossip && len(r.Members) == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cl.Append(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	live := func(s *Server, peer uint64) bool {
		st, err := s.node.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Peers {
			if p.ID == peer {
				return p.Live
			}
		}
		t.Fatalf("node %d does not list peer %d: %+v", s.cfg.ID, peer, st.Peers)
		return false
	}
	// The master hears from every voter all the time (their Accepted
	// replies to its lease renewals); another voter may have heard a
	// peer only once, and the first probes can be lost while links open.
	st, err := cl.Status(ctx, addrs[0])
	for err == nil && st.MasterId == 0 {
		st, err = cl.Status(ctx, addrs[0]) // ctx bounds it
	}
	if err != nil {
		t.Fatal(err)
	}
	m := servers[st.MasterId-1]
	victim := uint64(1 + st.MasterId%3)
	deadline := time.Now().Add(30 * time.Second)
	for !live(m, victim) {
		if time.Now().After(deadline) {
			t.Fatalf("master %d does not count node %d as live before it stops", st.MasterId, victim)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := servers[victim-1].Stop(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for live(m, victim) {
		if time.Now().After(deadline) {
			t.Fatalf("master %d still counts stopped node %d as live after 30s: gossip's report did not reach its core", st.MasterId, victim)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With gossip off, a node reports no gossip address and members list's
// alive is the catch-up view (live).
func TestGossipOff(t *testing.T) {
	servers, addrs := threeNodes(t, GossipOff)
	if servers[0].Gossip() != nil {
		t.Fatal("gossip runs with --gossip-listen off")
	}
	cl, err := client.New(addrs, client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitMembers(t, cl, "all live", func(r *paxosdpb.ListMembersResponse) bool {
		for _, m := range r.Members {
			if !m.Alive || !m.Live || m.GossipAddress != "" {
				return false
			}
		}
		return !r.Gossip && len(r.Members) == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := cl.Status(ctx, addrs[0])
	if err != nil || st.GossipAddress != "" {
		t.Fatalf("Status: gossip address %q, %v; want none", st.GetGossipAddress(), err)
	}
}

// A node that joins with --join joins the gossip through the addresses its
// Join answer lists, and shows as an alive follower.
func TestGossipJoinedNode(t *testing.T) {
	_, addrs := threeNodes(t, "")
	addr4 := testports.Addrs(t, 1)[0]
	start := time.Now()
	s4, err := Start(context.Background(), Config{ID: 4, Listen: addr4, DataDir: t.TempDir() + "/node4", Join: addrs[:1],
		JoinTimeout: 20 * time.Second, GossipProbeInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s4.Stop() })
	cl, err := client.New(addrs[1:2], client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitMembers(t, cl, "node 4 an alive follower", func(r *paxosdpb.ListMembersResponse) bool {
		for _, m := range r.Members {
			if m.Id == 4 {
				return m.Role == "follower" && m.Alive && m.GossipAddress == s4.Gossip().Addr()
			}
		}
		return false
	})
	t.Logf("node 4 started, joined and alive in node 2's gossip after %v", time.Since(start).Round(time.Millisecond))
	// Node 2 seeing node 4 does not mean node 4 has merged node 2's state
	// yet: gossip converges, so wait for it.
	deadline := time.Now().Add(30 * time.Second)
	for alive, _ := s4.Gossip().Alive(2); !alive; alive, _ = s4.Gossip().Alive(2) {
		if time.Now().After(deadline) {
			t.Fatal("node 4's gossip does not see node 2 alive after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
