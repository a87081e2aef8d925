package client_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
	"github.com/paxosd/paxosd/server"
)

// testCluster is an in-process cluster of paxosd servers on 127.0.0.1.
type testCluster struct {
	dir     string
	peers   map[uint64]string
	addrs   []string
	gossip  []string
	servers []*server.Server
	opts    []grpc.ServerOption
	release func() // gives back the reserved ports
}

// startCluster starts n servers in dir; the caller stops them.
func startCluster(dir string, n int, opts ...grpc.ServerOption) (*testCluster, error) {
	// Gossip ports from the same batch: an OS-picked one could take a
	// port picked for a node that has not started yet. They stay reserved
	// until stop, so a restarted server finds its port again.
	ports, release, err := testports.Reserve(2 * n)
	if err != nil {
		return nil, err
	}
	addrs := ports[:n:n]
	c := &testCluster{dir: dir, peers: map[uint64]string{}, addrs: addrs, gossip: ports[n:], servers: make([]*server.Server, n), opts: opts, release: release}
	for i, a := range addrs {
		c.peers[uint64(i+1)] = a
	}
	for i := range addrs {
		if err := c.start(i); err != nil {
			c.stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *testCluster) start(i int) error {
	s, err := server.Start(context.Background(), server.Config{ID: uint64(i + 1), Peers: c.peers,
		DataDir: fmt.Sprintf("%s/node%d", c.dir, i+1), Cluster: "test", GRPCOptions: c.opts, GossipListen: c.gossip[i]})
	c.servers[i] = s
	return err
}

func (c *testCluster) stop() {
	for _, s := range c.servers {
		if s != nil {
			s.Stop()
		}
	}
	c.release()
}

// master waits for a node that says it is master.
func (c *testCluster) master(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for i, s := range c.servers {
			if s == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := s.Node().Status(ctx)
			cancel()
			if err == nil && st.Role == "master" {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no master within 30s")
	return -1
}

func newTestCluster(t *testing.T, n int, opts ...grpc.ServerOption) *testCluster {
	t.Helper()
	c, err := startCluster(t.TempDir(), n, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	return c
}

func newClient(t *testing.T, addrs []string, opt client.Options) *client.Client {
	t.Helper()
	cl, err := client.New(addrs, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}
