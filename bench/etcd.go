package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdMaxTxnOps is etcd's default --max-txn-ops: a batch is one
// transaction, and a larger one is refused by the server.
const etcdMaxTxnOps = 128

// etcdDialTimeout bounds connecting to etcd.
const etcdDialTimeout = 5 * time.Second

// etcdSystem drives etcd through its own Go client (clientv3, gRPC): each
// entry is a Put of "bench/RUN/CLIENT/N", a batch one transaction of Puts.
type etcdSystem struct {
	endpoints []string
	admin     *clientv3.Client
	run       string
}

func newEtcdClient(endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: etcdDialTimeout, Logger: zap.NewNop()})
}

func newEtcd(_ context.Context, endpoints []string) (*etcdSystem, error) {
	admin, err := newEtcdClient(endpoints)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	return &etcdSystem{endpoints: endpoints, admin: admin}, nil
}

func etcdKey(run string, client int, n uint64) string {
	return "bench/" + run + "/" + strconv.Itoa(client) + "/" + strconv.FormatUint(n, 10)
}

// Begin counts the voting members and asks one for its version.
func (e *etcdSystem) Begin(ctx context.Context, run string, _ int) (Info, error) {
	e.run = run
	info := Info{System: "etcd", Fsync: true}
	ml, err := e.admin.MemberList(ctx)
	if err != nil {
		return info, fmt.Errorf("etcd member list: %w", err)
	}
	for _, m := range ml.Members {
		if !m.IsLearner {
			info.Nodes++
		}
	}
	for _, ep := range e.endpoints {
		if st, err := e.admin.Status(ctx, ep); err == nil {
			info.Version = st.Version
			break
		}
	}
	return info, nil
}

func (e *etcdSystem) Dial(context.Context, int) (Target, error) {
	cl, err := newEtcdClient(e.endpoints)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return &etcdTarget{cl: cl, run: e.run}, nil
}

// Verify lists the run's keys (keys only, a page at a time, all pages at
// the revision of the first). A key is unique, so etcd cannot hold a value
// twice: duplicated is 0 by construction and lost is what counts here.
func (e *etcdSystem) Verify(ctx context.Context, w *Written) (Check, error) {
	t := w.NewTally()
	prefix := "bench/" + e.run + "/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	from, rev := prefix, int64(0)
	for {
		resp, err := e.admin.Get(ctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithLimit(readPage), clientv3.WithRev(rev))
		if err != nil {
			return Check{}, fmt.Errorf("etcd read-back of %s: %w", prefix, err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			parts := strings.Split(strings.TrimPrefix(string(kv.Key), prefix), "/")
			if len(parts) != 2 {
				continue
			}
			c, err1 := strconv.Atoi(parts[0])
			n, err2 := strconv.ParseUint(parts[1], 10, 64)
			if err1 == nil && err2 == nil {
				t.See(Identity{Run: e.run, Client: c, N: n})
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return t.Result("keys " + prefix + "*"), nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (e *etcdSystem) Close() error { return e.admin.Close() }

type etcdTarget struct {
	cl  *clientv3.Client
	run string
}

func (t *etcdTarget) Put(ctx context.Context, op Op) error {
	if len(op.Values) == 1 {
		_, err := t.cl.Put(ctx, etcdKey(t.run, op.Client, op.N), string(op.Values[0]))
		return err
	}
	puts := make([]clientv3.Op, len(op.Values))
	for i, v := range op.Values {
		puts[i] = clientv3.OpPut(etcdKey(t.run, op.Client, op.N+uint64(i)), string(v))
	}
	_, err := t.cl.Txn(ctx).Then(puts...).Commit()
	return err
}

func (t *etcdTarget) Close() error { return t.cl.Close() }

func (e *etcdSystem) Name() string { return "etcd" }
