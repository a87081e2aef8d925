package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// zkRoot is the parent of every run's znodes: RUN/cCLIENT/N-SEQUENCE.
const zkRoot = "/paxosd-bench"

// zkSessionTimeout is the ZooKeeper session timeout; a request that gets no
// answer fails after about this long.
const zkSessionTimeout = 10 * time.Second

// zkSystem drives ZooKeeper through github.com/go-zookeeper/zk: each entry
// is a persistent sequential znode "N-" (ZooKeeper appends a 10-digit
// counter) under its client's parent, holding the value; a batch is one
// multi of creates.
type zkSystem struct {
	servers []string
	admin   *zk.Conn
	run     string
}

type zkQuiet struct{}

func (zkQuiet) Printf(string, ...any) {}

// zkConnect connects and waits for a session.
func zkConnect(ctx context.Context, servers []string) (*zk.Conn, error) {
	conn, events, err := zk.Connect(servers, zkSessionTimeout, zk.WithLogger(zkQuiet{}))
	if err != nil {
		return nil, fmt.Errorf("zookeeper %s: %w", strings.Join(servers, ","), err)
	}
	ctx, cancel := context.WithTimeout(ctx, zkSessionTimeout)
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

func newZooKeeper(ctx context.Context, servers []string) (*zkSystem, error) {
	admin, err := zkConnect(ctx, servers)
	if err != nil {
		return nil, err
	}
	return &zkSystem{servers: servers, admin: admin}, nil
}

func (z *zkSystem) clientPath(client int) string {
	return zkRoot + "/" + z.run + "/c" + strconv.Itoa(client)
}

// createParent creates a persistent znode, or finds it there.
func (z *zkSystem) createParent(path string) error {
	_, err := z.admin.Create(path, nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll))
	if err != nil && !errors.Is(err, zk.ErrNodeExists) {
		return fmt.Errorf("zookeeper create %s: %w", path, err)
	}
	return nil
}

// Begin creates the run's parent znode and one per client, counts the voting members in
// /zookeeper/config (ZooKeeper 3.5 and later) and asks for the version
// (the srvr four-letter command, when the servers allow it).
func (z *zkSystem) Begin(ctx context.Context, run string, clients int) (Info, error) {
	z.run = run
	info := Info{System: "zookeeper", Fsync: true, Nodes: len(z.servers)}
	if err := z.createParent(zkRoot); err != nil {
		return info, err
	}
	if err := z.createParent(zkRoot + "/" + run); err != nil {
		return info, err
	}
	for c := range clients {
		if err := z.createParent(z.clientPath(c)); err != nil {
			return info, err
		}
	}
	if cfg, _, err := z.admin.Get("/zookeeper/config"); err == nil {
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
	info.Version = zkVersion(ctx, z.servers[0])
	return info, nil
}

// zkVersion asks a server for its version with the srvr four-letter
// command ("Zookeeper version: 3.8.0-..., built on ..."); "" when the server
// does not allow it.
func zkVersion(ctx context.Context, server string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
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
func (z *zkSystem) Dial(ctx context.Context, _ int) (Target, error) {
	conn, err := zkConnect(ctx, z.servers)
	if err != nil {
		return nil, err
	}
	return &zkTarget{conn: conn, root: zkRoot + "/" + z.run + "/c"}, nil
}

// Verify lists each client's children: a name is "N-SEQUENCE", so the same
// N twice is a value created twice.
func (z *zkSystem) Verify(_ context.Context, w *Written) (Check, error) {
	t := w.NewTally()
	for c := range w.Clients() {
		names, _, err := z.admin.Children(z.clientPath(c))
		if err != nil {
			return Check{}, fmt.Errorf("zookeeper read-back of %s: %w", z.clientPath(c), err)
		}
		for _, name := range names {
			num, _, ok := strings.Cut(name, "-")
			if n, err := strconv.ParseUint(num, 10, 64); ok && err == nil {
				t.See(Identity{Run: z.run, Client: c, N: n})
			}
		}
	}
	return t.Result("children of " + zkRoot + "/" + z.run + "/c*"), nil
}

func (z *zkSystem) Close() error {
	z.admin.Close()
	return nil
}

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

// Put creates the znodes. The ZooKeeper client takes no context: a request
// that gets no answer fails when the session times out.
func (t *zkTarget) Put(ctx context.Context, op Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(op.Values) == 1 {
		_, err := t.conn.Create(t.path(op.Client, op.N), op.Values[0], zk.FlagSequence, zkACL)
		return err
	}
	creates := make([]any, len(op.Values))
	for i, v := range op.Values {
		creates[i] = &zk.CreateRequest{Path: t.path(op.Client, op.N+uint64(i)), Data: v, Acl: zkACL, Flags: zk.FlagSequence}
	}
	_, err := t.conn.Multi(creates...)
	return err
}

func (t *zkTarget) Close() error {
	t.conn.Close()
	return nil
}

func (z *zkSystem) Name() string { return "zookeeper" }
