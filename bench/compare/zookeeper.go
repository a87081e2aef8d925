package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/paxosd/paxosd/bench"
)

// zkRoot is the parent of every run's znodes: RUN/cCLIENT/N-SEQUENCE.
const zkRoot = "/paxosd-bench"

// zkSessionTimeout is the ZooKeeper session timeout asked for (the server
// clamps it to 2 to 20 ticks).
const zkSessionTimeout = 10 * time.Second

// zkLimits: a batch is one multi; ZooKeeper has no window of its own for
// --inflight.
var zkLimits = bench.Limits{MaxBatch: bench.MaxBatch, MaxInflight: 1024}

var zkDriver = bench.Driver{
	Name:   "zookeeper",
	Limits: zkLimits,
	Open: func(ctx context.Context, endpoints []string, timeout time.Duration) (bench.System, error) {
		return newZooKeeper(ctx, endpoints, timeout)
	},
	Help: "each value is a persistent sequential znode /paxosd-bench/RUN/cCLIENT/N-, a batch one\nmulti; the read-back lists each client's children.",
}

// zkSystem drives ZooKeeper through github.com/go-zookeeper/zk: each entry
// is a persistent sequential znode "N-" (ZooKeeper appends a 10-digit
// counter) under its client's parent, holding the value; a batch is one
// multi of creates. Connecting and every request are bounded by timeout.
type zkSystem struct {
	servers []string
	timeout time.Duration
	admin   *zk.Conn
	run     string
}

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

// zkConnect connects and waits, at most timeout, for a session.
func zkConnect(ctx context.Context, servers []string, timeout time.Duration) (*zk.Conn, error) {
	conn, events, err := zk.Connect(servers, zkSessionTimeout, zk.WithLogger(zkQuiet{}))
	if err != nil {
		return nil, fmt.Errorf("zookeeper %s: %w", strings.Join(servers, ","), err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				return conn, nil
			}
		case <-ctx.Done():
			conn.Close()
			return nil, fmt.Errorf("zookeeper %s: no session: %w", strings.Join(servers, ","), ctx.Err())
		}
	}
}

// zkDo runs req, a request of the ZooKeeper client, which takes no context:
// when ctx ends first zkDo returns ctx's error and leaves req to finish
// (its outcome unknown; the session's end fails it at the latest).
func zkDo(ctx context.Context, req func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- req() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newZooKeeper(ctx context.Context, servers []string, timeout time.Duration) (*zkSystem, error) {
	admin, err := zkConnect(ctx, servers, timeout)
	if err != nil {
		return nil, err
	}
	return &zkSystem{servers: servers, timeout: timeout, admin: admin}, nil
}

// do runs one request of the admin session, bounded by the timeout.
func (z *zkSystem) do(ctx context.Context, req func() error) error {
	ctx, cancel := context.WithTimeout(ctx, z.timeout)
	defer cancel()
	return zkDo(ctx, req)
}

func (z *zkSystem) clientPath(client int) string {
	return zkRoot + "/" + z.run + "/c" + strconv.Itoa(client)
}

// createParent creates a persistent znode, or finds it there.
func (z *zkSystem) createParent(ctx context.Context, path string) error {
	err := z.do(ctx, func() error {
		_, err := z.admin.Create(path, nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll))
		return err
	})
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("zookeeper create %s: %w", path, err)
	}
	return nil
}

// Begin creates the run's parent znode and one per client, counts the voting members in
// /zookeeper/config (ZooKeeper 3.5 and later) and asks for the version
// (the srvr four-letter command, when the servers allow it).
func (z *zkSystem) Begin(ctx context.Context, run string, clients int) (bench.Info, error) {
	z.run = run
	info := bench.Info{System: "zookeeper", Fsync: true, Nodes: len(z.servers)}
	if err := z.createParent(ctx, zkRoot); err != nil {
		return info, err
	}
	if err := z.createParent(ctx, zkRoot+"/"+run); err != nil {
		return info, err
	}
	for c := range clients {
		if err := z.createParent(ctx, z.clientPath(c)); err != nil {
			return info, err
		}
	}
	var cfg []byte
	err := z.do(ctx, func() error {
		var err error
		cfg, _, err = z.admin.Get("/zookeeper/config")
		return err
	})
	if err == nil {
		voters := 0
		for _, line := range strings.Split(string(cfg), "\n") {
			if strings.HasPrefix(line, "server.") && !strings.Contains(line, ":observer") {
				voters++
			}
		}
		if voters > 0 {
			info.Nodes = voters
		}
	}
	info.Version = zkVersion(ctx, z.servers[0], min(z.timeout, 2*time.Second))
	return info, nil
}

// zkVersion asks a server for its version with the srvr four-letter
// command ("Zookeeper version: 3.8.0-..., built on ..."); "" when the server
// does not allow it or does not answer within timeout.
func zkVersion(ctx context.Context, server string, timeout time.Duration) string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", server)
	if err != nil {
		return ""
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte("srvr")); err != nil {
		return ""
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return ""
	}
	v, ok := strings.CutPrefix(line, "Zookeeper version: ")
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, ",")
	v, _, _ = strings.Cut(v, "-")
	return v
}

// Dial opens a session.
func (z *zkSystem) Dial(ctx context.Context, _ int) (bench.Target, error) {
	conn, err := zkConnect(ctx, z.servers, z.timeout)
	if err != nil {
		return nil, err
	}
	return &zkTarget{conn: conn, root: zkRoot + "/" + z.run + "/c"}, nil
}

// Verify lists each client's children: a name is "N-SEQUENCE", so the same
// N twice is a value created twice.
func (z *zkSystem) Verify(ctx context.Context, w *bench.Written) (bench.Check, error) {
	t := w.NewTally()
	for c := range w.Clients() {
		var names []string
		err := z.do(ctx, func() error {
			var err error
			names, _, err = z.admin.Children(z.clientPath(c))
			return err
		})
		if err != nil {
			return bench.Check{}, fmt.Errorf("zookeeper read-back of %s: %w", z.clientPath(c), err)
		}
		for _, name := range names {
			num, _, ok := strings.Cut(name, "-")
			if n, err := strconv.ParseUint(num, 10, 64); ok && err == nil {
				t.See(bench.Identity{Run: z.run, Client: c, N: n})
			}
		}
	}
	return t.Result("children of " + zkRoot + "/" + z.run + "/c*"), nil
}

func (z *zkSystem) Close() error {
	z.admin.Close()
	return nil
}

func (z *zkSystem) Name() string         { return "zookeeper" }
func (z *zkSystem) Limits() bench.Limits { return zkLimits }

type zkTarget struct {
	conn *zk.Conn
	root string // + CLIENT is a client's parent
}

// path is the znode path (before ZooKeeper's sequence suffix) of entry n of
// client.
func (t *zkTarget) path(client int, n uint64) string {
	return t.root + strconv.Itoa(client) + "/" + strconv.FormatUint(n, 10) + "-"
}

var zkACL = zk.WorldACL(zk.PermAll)

// Put creates the znodes; ctx (bench.Run's, bounded by --timeout) bounds
// the wait for the answer. The values are copied: a request given up on
// may still be sent after Put returns, and the caller reuses its buffers.
func (t *zkTarget) Put(ctx context.Context, op bench.Op) error {
	if len(op.Values) == 1 {
		v := bytes.Clone(op.Values[0])
		return zkDo(ctx, func() error {
			_, err := t.conn.Create(t.path(op.Client, op.N), v, zk.FlagSequence, zkACL)
			return err
		})
	}
	creates := make([]any, len(op.Values))
	for i, v := range op.Values {
		creates[i] = &zk.CreateRequest{Path: t.path(op.Client, op.N+uint64(i)), Data: bytes.Clone(v), Acl: zkACL, Flags: zk.FlagSequence}
	}
	return zkDo(ctx, func() error {
		_, err := t.conn.Multi(creates...)
		return err
	})
}

func (t *zkTarget) Close() error {
	t.conn.Close()
	return nil
}
