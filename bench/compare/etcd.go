package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/paxosd/paxosd/bench"
)

// etcdLimits: a batch is one transaction, and etcd's default --max-txn-ops
// refuses one of more than 128 operations; etcd has no window of its own
// for --inflight.
var etcdLimits = bench.Limits{MaxBatch: 128, MaxInflight: 1024}

// etcdReadPage is how many keys one read-back request asks for.
const etcdReadPage = 10000

var etcdDriver = bench.Driver{
	Name:   "etcd",
	Limits: etcdLimits,
	Open: func(_ context.Context, endpoints []string, timeout time.Duration) (bench.System, error) {
		return newEtcd(endpoints, timeout)
	},
	Help: "each value is a Put of key bench/RUN/CLIENT/N, a batch one transaction; the read-back lists the\nrun's keys.",
}

// etcdSystem drives etcd through its own Go client (clientv3, gRPC): each
// entry is a Put of "bench/RUN/CLIENT/N", a batch one transaction of Puts.
// Every request of its own (Begin's, each read-back page) is bounded by
// timeout; clientv3 waits for a connection for as long as its context
// lasts, so an unbounded one would hang on an endpoint that never answers.
type etcdSystem struct {
	endpoints []string
	timeout   time.Duration
	admin     *clientv3.Client
	run       string
}

func newEtcdClient(endpoints []string, timeout time.Duration) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: timeout, Logger: zap.NewNop()})
}

func newEtcd(endpoints []string, timeout time.Duration) (*etcdSystem, error) {
	admin, err := newEtcdClient(endpoints, timeout)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(endpoints, ","), err)
	}
	return &etcdSystem{endpoints: endpoints, timeout: timeout, admin: admin}, nil
}

func etcdKey(run string, client int, n uint64) string {
	return "bench/" + run + "/" + strconv.Itoa(client) + "/" + strconv.FormatUint(n, 10)
}

// Begin counts the voting members and asks one for its version.
func (e *etcdSystem) Begin(ctx context.Context, run string, _ int) (bench.Info, error) {
	e.run = run
	info := bench.Info{System: "etcd", Fsync: true}
	mctx, cancel := context.WithTimeout(ctx, e.timeout)
	ml, err := e.admin.MemberList(mctx)
	cancel()
	if err != nil {
		return info, fmt.Errorf("etcd %s: member list: %w", strings.Join(e.endpoints, ","), err)
	}
	for _, m := range ml.Members {
		if !m.IsLearner {
			info.Nodes++
		}
	}
	for _, ep := range e.endpoints {
		sctx, cancel := context.WithTimeout(ctx, e.timeout)
		st, err := e.admin.Status(sctx, ep)
		cancel()
		if err == nil {
			info.Version = st.Version
			break
		}
	}
	return info, nil
}

func (e *etcdSystem) Dial(context.Context, int) (bench.Target, error) {
	cl, err := newEtcdClient(e.endpoints, e.timeout)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return &etcdTarget{cl: cl, run: e.run}, nil
}

// Verify lists the run's keys (keys only, a page at a time, all pages at
// the revision of the first). A key is unique, so etcd cannot hold a value
// twice: duplicated is 0 by construction and lost is what counts here.
func (e *etcdSystem) Verify(ctx context.Context, w *bench.Written) (bench.Check, error) {
	t := w.NewTally()
	prefix := "bench/" + e.run + "/"
	end := clientv3.GetPrefixRangeEnd(prefix)
	from, rev := prefix, int64(0)
	for {
		gctx, cancel := context.WithTimeout(ctx, e.timeout)
		resp, err := e.admin.Get(gctx, from, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithLimit(etcdReadPage), clientv3.WithRev(rev))
		cancel()
		if err != nil {
			return bench.Check{}, fmt.Errorf("etcd read-back of %s: %w", prefix, err)
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
				t.See(bench.Identity{Run: e.run, Client: c, N: n})
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return t.Result("keys " + prefix + "*"), nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (e *etcdSystem) Close() error { return e.admin.Close() }

func (e *etcdSystem) Name() string         { return "etcd" }
func (e *etcdSystem) Limits() bench.Limits { return etcdLimits }

type etcdTarget struct {
	cl  *clientv3.Client
	run string
}

// Put writes op's values; ctx (bench.Run's, bounded by --timeout) bounds it.
func (t *etcdTarget) Put(ctx context.Context, op bench.Op) error {
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
