package bench

import (
	"context"
	"time"

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
	// Fsync: every acknowledged write was fsynced on a quorum. True of
	// paxosd, which always syncs, and of etcd and ZooKeeper as the
	// comparison tool (bench/compare) drives them: etcd syncs its WAL unless
	// started with --unsafe-no-fsync; ZooKeeper's forceSync defaults to yes
	// and sidebyside.sh leaves it.
	Fsync bool
}

// System is a cluster under test. Begin runs once before anything else;
// Dial opens connection number conn (0, 1, ...); Verify reads back, after
// the run, everything it wrote.
type System interface {
	Name() string // as Driver.Name
	Limits() Limits
	Begin(ctx context.Context, run string, clients int) (Info, error)
	Dial(ctx context.Context, conn int) (Target, error)
	Verify(ctx context.Context, w *Written) (Check, error)
	Close() error
}

// readPage is how many entries one read-back request asks for: paxosd's
// limit (which also caps a page at 4 MiB).
const readPage = 10000

// Limits are what a system takes in one request and pipeline.
type Limits struct {
	MaxBatch    int // values in one request (--batch)
	MaxInflight int // requests a client keeps outstanding (--inflight)
}

// Driver is one kind of system the bench command measures (--target).
type Driver struct {
	Name   string // as System.Name
	Limits Limits // as System.Limits, known before connecting
	// DefaultEndpoints is --endpoints when none are given ("" : the user
	// must give them).
	DefaultEndpoints string
	// Open connects to the system at endpoints (HOST:PORT). timeout bounds
	// connecting and every request the system sends on its own (Begin's,
	// Dial's, each page of Verify's); Run bounds each Put.
	Open func(ctx context.Context, endpoints []string, timeout time.Duration) (System, error)
	// Help is a sentence for the command's --help, after "NAME: ": what a
	// request writes and how the read-back reads.
	Help string
}

// Paxosd is the driver of paxosd, through its Go client. It has no
// DefaultEndpoints: `paxosd bench` sets the dev cluster's.
var Paxosd = Driver{
	Name:   "paxosd",
	Limits: paxosdLimits,
	Open: func(_ context.Context, endpoints []string, timeout time.Duration) (System, error) {
		return newPaxosd(endpoints, client.Options{}, timeout)
	},
	Help: "each value is one entry, a batch one append of that many entries; the clients of one connection\nshare its append stream (AppendStream; unary Append to a node without it); the read-back reads the\nlog linearizably.",
}
