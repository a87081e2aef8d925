package node

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/storage"
)

// memNet carries messages between the nodes of one process.
type memNet struct {
	mu    sync.Mutex
	nodes map[uint64]*Node
}

type memLink struct {
	net  *memNet
	from uint64
}

func (l memLink) Send(m core.Message) {
	l.net.mu.Lock()
	to := l.net.nodes[m.To]
	l.net.mu.Unlock()
	if to != nil {
		to.Deliver(m)
	}
}

// cluster runs three nodes over a memNet, logging into one Recorder.
type cluster struct {
	t      *testing.T
	dir    string
	net    *memNet
	rec    *event.Recorder
	tune   func(*Config)
	cancel map[uint64]context.CancelFunc
	errs   map[uint64]chan error
}

func newCluster(t *testing.T, tune func(*Config)) *cluster {
	c := &cluster{t: t, dir: t.TempDir(), net: &memNet{nodes: map[uint64]*Node{}}, rec: event.NewRecorder(), tune: tune,
		cancel: map[uint64]context.CancelFunc{}, errs: map[uint64]chan error{}}
	for id := uint64(1); id <= 3; id++ {
		c.start(id)
	}
	t.Cleanup(func() {
		for id := range c.cancel {
			c.stop(id)
		}
	})
	return c
}

func (c *cluster) start(id uint64) *Node {
	c.t.Helper()
	members := map[uint64]string{1: "a:1", 2: "a:2", 3: "a:3"}
	cfg := Config{ID: id, ClusterID: 7, Members: members, DataDir: filepath.Join(c.dir, fmt.Sprint(id)), Logger: slog.New(c.rec)}
	if c.tune != nil {
		c.tune(&cfg)
	}
	st, err := storage.Open(cfg.DataDir, storage.Meta{ClusterID: 7, NodeID: id, K: idgen.DefaultK}, storage.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	n, err := Open(cfg, st, memLink{c.net, id})
	if err != nil {
		c.t.Fatal(err)
	}
	c.net.mu.Lock()
	c.net.nodes[id] = n
	c.net.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { errs <- n.Run(ctx) }()
	c.cancel[id], c.errs[id] = cancel, errs
	return n
}

// stop stops node id, closes its store and returns what Run returned.
func (c *cluster) stop(id uint64) error {
	c.net.mu.Lock()
	n := c.net.nodes[id]
	delete(c.net.nodes, id)
	c.net.mu.Unlock()
	n.Stop()
	err := <-c.errs[id]
	c.cancel[id]()
	delete(c.cancel, id)
	n.Store().Close()
	return err
}

func (c *cluster) node(id uint64) *Node {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.net.nodes[id]
}

// await waits for a record of msg that ok accepts, and returns it.
func (c *cluster) await(msg string, ok func(event.Record) bool) event.Record {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range c.rec.Find(msg) {
			if ok == nil || ok(r) {
				return r
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("no %q event within 20s; logged: %+v", msg, c.rec.All())
	return event.Record{}
}

func nodeOf(r event.Record) uint64 { return r.Attrs[event.KeyNode].Uint64() }

// awaitMaster waits for a master elected other than not, and returns it.
func (c *cluster) awaitMaster(not uint64) uint64 {
	c.t.Helper()
	r := c.await(event.MasterElected, func(r event.Record) bool { return nodeOf(r) != not && c.node(nodeOf(r)) != nil })
	if r.Level != slog.LevelInfo {
		c.t.Errorf("%s at %v, want INFO", event.MasterElected, r.Level)
	}
	for _, k := range []string{event.KeyInstance, event.KeyBallot} {
		if _, ok := r.Attrs[k]; !ok {
			c.t.Errorf("%s without %q: %+v", event.MasterElected, k, r.Attrs)
		}
	}
	if b := idgen.Ballot(r.Attrs[event.KeyBallot].Uint64()); b == 0 {
		c.t.Errorf("%s with ballot 0", event.MasterElected)
	}
	return nodeOf(r)
}

// Mastership events: elected, handed over (and the successor elected),
// and a master that stops: the others see its lease expire, elect another,
// and it logs why it stopped.
func TestMasterEvents(t *testing.T) {
	c := newCluster(t, nil)
	first := c.awaitMaster(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	to, err := c.node(first).TransferMaster(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := c.await(event.MasterHandover, func(r event.Record) bool { return nodeOf(r) == first })
	if got := h.Attrs[event.KeyTo].Uint64(); got != to {
		t.Errorf("%s to %d, want %d", event.MasterHandover, got, to)
	}
	c.await(event.MasterElected, func(r event.Record) bool { return nodeOf(r) == to })
	c.await(event.MasterChanged, func(r event.Record) bool {
		return nodeOf(r) == first && r.Attrs[event.KeyMaster].Uint64() == to
	})
	for _, r := range c.rec.Find(event.LeaseExpired) {
		t.Errorf("a handover logged %+v: no lease expired", r)
	}

	if err := c.stop(to); err != nil {
		t.Fatalf("clean stop returned %v", err)
	}
	st := c.await(event.NodeStopped, func(r event.Record) bool { return nodeOf(r) == to })
	if st.Level != slog.LevelInfo || st.Attrs[event.KeyReason].String() == "" {
		t.Errorf("clean stop logged %+v", st)
	}
	exp := c.await(event.LeaseExpired, func(r event.Record) bool { return r.Attrs["holder"].Uint64() == to })
	if exp.Level != slog.LevelWarn {
		t.Errorf("%s at %v", event.LeaseExpired, exp.Level)
	}
	c.awaitMaster(to)
	for _, r := range c.rec.All() {
		if _, ok := r.Attrs[event.KeyNode]; !ok {
			t.Errorf("a line without %q: %+v", event.KeyNode, r)
		}
	}
}

// A master whose lease is not renewed says so when it stops being master.
func TestMasterLostReason(t *testing.T) {
	st := instance.Status{ID: 1, Role: "acceptor", Phase: "leading"}
	if got := lostReason(st, instance.Counters{}); got != "lease expired: not renewed in time" {
		t.Errorf("leading, no lease: %q", got)
	}
	st.Counters.Outbid = 1
	if got := lostReason(st, instance.Counters{}); got != "outbid: a higher ballot" {
		t.Errorf("outbid: %q", got)
	}
}

// A trim logs trim applied (at the master; a node behind may get the base
// instead: base installed); a synced write over the
// threshold logs slow fsync, once per SlowSyncEvery however many follow.
func TestTrimAndSlowFsyncEvents(t *testing.T) {
	c := newCluster(t, func(cfg *Config) { cfg.SlowSyncThreshold = time.Nanosecond })
	m := c.awaitMaster(0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 10 {
		if _, err := c.node(m).Append(ctx, [][]byte{[]byte(fmt.Sprint("entry ", i))}, 0, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.node(m).Trim(ctx, 5); err != nil {
		t.Fatal(err)
	}
	r := c.await(event.TrimApplied, func(r event.Record) bool { return nodeOf(r) == m })
	if r.Attrs["first_index"].Uint64() != 5 || r.Level != slog.LevelInfo {
		t.Errorf("%s: %+v, want first_index 5 at INFO", event.TrimApplied, r)
	}
	for id := uint64(1); id <= 3; id++ {
		var slow []event.Record
		for _, r := range c.rec.Find(event.SlowFsync) {
			if nodeOf(r) == id {
				slow = append(slow, r)
			}
		}
		if len(slow) != 1 {
			t.Errorf("node %d logged %d %q lines within %v, want 1", id, len(slow), event.SlowFsync, SlowSyncEvery)
			continue
		}
		if slow[0].Level != slog.LevelWarn || slow[0].Attrs[event.KeyTook].Duration() < time.Nanosecond {
			t.Errorf("node %d: %+v", id, slow[0])
		}
	}
}

// A write that fails stops the node: storage failure, then node stopped,
// both at ERROR.
func TestStorageFailureEvent(t *testing.T) {
	c := newCluster(t, nil)
	m := c.awaitMaster(0)
	n := c.node(m)
	n.Store().Close()
	select {
	case <-n.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the master runs on with its store closed")
	}
	f := c.await(event.StorageFailure, func(r event.Record) bool { return nodeOf(r) == m })
	s := c.await(event.NodeStopped, func(r event.Record) bool { return nodeOf(r) == m })
	if f.Level != slog.LevelError || s.Level != slog.LevelError {
		t.Errorf("levels %v, %v; want ERROR", f.Level, s.Level)
	}
	c.net.mu.Lock()
	delete(c.net.nodes, m)
	c.net.mu.Unlock()
	delete(c.cancel, m)
}

// A node that restarts behind logs catch-up started and finished, with
// what it fetched and how fast.
func TestCatchupEvents(t *testing.T) {
	c := newCluster(t, func(cfg *Config) {
		cfg.Core = instance.DefaultConfig()
		cfg.Core.CatchupBytesPerTick = 4 << 10 // a catch-up of many ticks
	})
	m := c.awaitMaster(0)
	lag := uint64(1)
	if lag == m {
		lag = 2
	}
	if err := c.stop(lag); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	entry := make([]byte, 1024)
	for range 100 {
		if _, err := c.node(m).Append(ctx, [][]byte{entry}, 0, 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	c.start(lag)
	c.await(event.CatchupStarted, func(r event.Record) bool { return nodeOf(r) == lag })
	r := c.await(event.CatchupFinished, func(r event.Record) bool { return nodeOf(r) == lag })
	if r.Attrs["instances"].Uint64() == 0 || r.Attrs["bytes"].Int64() < 10*1024 || r.Attrs["bytes_per_sec"].Int64() <= 0 {
		t.Errorf("%s: %+v", event.CatchupFinished, r.Attrs)
	}
}
