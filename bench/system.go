package bench

import (
	"context"
	"fmt"
	"strings"

	"github.com/paxosd/paxosd/client"
)

// Op is one request: Values are written together (one append, one etcd
// transaction, one ZooKeeper multi). Values[i] is entry N+i of Client; Seq
// numbers the client's requests from 1 (a few may be skipped when the run
// ends), and a request never reuses one.
type Op struct {
	Client int
	Seq    uint64
	N      uint64
	Values [][]byte
}

// Target is one connection to the system under test, which one or more
// clients use concurrently.
type Target interface {
	// Put writes op's values and returns once the system acknowledged them
	// as durable; an error leaves their outcome unknown.
	Put(ctx context.Context, op Op) error
	Close() error
}

// Info is what the driver learned of the cluster it measured.
type Info struct {
	System  string // "paxosd", "etcd" or "zookeeper"
	Nodes   int    // voting members
	Version string // the server's version, when the system says it
	// Fsync: every acknowledged write was fsynced on a quorum. True of all
	// three as the driver uses them (paxosd always syncs; etcd syncs its WAL
	// unless started with --unsafe-no-fsync; ZooKeeper's forceSync defaults
	// to yes and sidebyside.sh leaves it).
	Fsync bool
}

// System is a cluster under test. Begin runs once before anything else;
// Dial opens connection number conn (0, 1, ...); Verify reads back, after
// the run, everything it wrote.
type System interface {
	Name() string // as in Systems
	Begin(ctx context.Context, run string, clients int) (Info, error)
	Dial(ctx context.Context, conn int) (Target, error)
	Verify(ctx context.Context, w *Written) (Check, error)
	Close() error
}

// readPage is how many entries (or keys) one read-back request asks for:
// paxosd's limit (which also caps a page at 4 MiB), and a modest etcd range.
const readPage = 10000

// Systems are the names NewSystem knows.
var Systems = []string{"paxosd", "etcd", "zookeeper"}

// NewSystem returns the named system (see Systems) on endpoints (HOST:PORT).
func NewSystem(ctx context.Context, name string, endpoints []string) (System, error) {
	if len(endpoints) == 0 {
		return nil, fmt.Errorf("%s: no endpoints", name)
	}
	switch name {
	case "paxosd":
		return newPaxosd(endpoints, client.Options{})
	case "etcd":
		return newEtcd(ctx, endpoints)
	case "zookeeper":
		return newZooKeeper(ctx, endpoints)
	}
	return nil, fmt.Errorf("unknown system %q: use %s", name, strings.Join(Systems, ", "))
}

// maxBatch is the largest batch a system takes in one request (0: no
// limit of its own).
func maxBatch(system string) int {
	if system == "etcd" {
		return etcdMaxTxnOps
	}
	return 0
}
