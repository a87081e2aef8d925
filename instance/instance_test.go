package instance_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// store is one node's durable state, in memory.
type store struct {
	promised idgen.Ballot
	accepted map[uint64]core.InstanceValue
	chosen   map[uint64]core.Value
	entries  []core.Entry
	state    core.ApplyState
}

func (s *store) Chosen(from, to uint64, maxBytes int) ([]core.InstanceValue, error) {
	var out []core.InstanceValue
	size := 0
	for i := from; i < to; i++ {
		v, ok := s.chosen[i]
		if !ok || (len(out) > 0 && size+v.Size() > maxBytes) {
			break
		}
		size += v.Size()
		out = append(out, core.InstanceValue{Instance: i, Value: v})
	}
	return out, nil
}

// Snapshot serves the zero base: these tests never trim.
func (s *store) Snapshot(base, index, after uint64, maxCount, maxBytes int) (core.SnapChunk, error) {
	return core.SnapChunk{Done: true}, nil
}

// cluster is a 3-node cluster with a synchronous, loss-free network.
type cluster struct {
	t       *testing.T
	ids     []uint64
	nodes   map[uint64]*instance.Node
	stores  map[uint64]*store
	queue   []core.Message
	results map[uint64][]instance.Result
	early   map[core.MsgType]int    // message types seen in Ready.Messages
	late    map[core.MsgType]int    // message types seen in Ready.After
	watch   func(core.Message)      // if set, sees every message sent
	drop    func(core.Message) bool // if set, the network loses the messages it matches
	down    map[uint64]bool         // crashed for good: no ticks, no Readies, no messages
	// syncTicks, if set, is how long each persist takes: a Ready's After
	// messages leave that many ticks after it (a slow disk).
	syncTicks uint64
	ticks     uint64
	synced    []delayed
}

// delayed is a Ready's After messages waiting for their persist.
type delayed struct {
	at   uint64
	msgs []core.Message
}

func config(id uint64, seed uint64, log instance.LogReader, bug instance.Bug) instance.Config {
	cfg := instance.DefaultConfig()
	cfg.ID = id
	cfg.Members = []instance.Member{{ID: 1, Slot: 0}, {ID: 2, Slot: 1}, {ID: 3, Slot: 2}}
	cfg.Window, cfg.MaxAhead = 8, 64
	cfg.LeaseTicks, cfg.LeaseMargin = 40, 10
	cfg.PhaseTimeout, cfg.ElectionJitter, cfg.LearnInterval = 5, 10, 10
	cfg.Rand = rand.New(rand.NewPCG(seed, id))
	cfg.Log = log
	cfg.Bug = bug
	return cfg
}

func newCluster(t *testing.T, seed uint64, bug instance.Bug) *cluster {
	return restoredCluster(t, seed, bug, nil, nil)
}

// restoredCluster starts nodes from durable states; chosen holds each node's
// durable chosen values (their Log).
func restoredCluster(t *testing.T, seed uint64, bug instance.Bug, durable map[uint64]instance.Durable, chosen map[uint64]map[uint64]core.Value) *cluster {
	return tunedCluster(t, seed, bug, durable, chosen, func(*instance.Config) {})
}

// tunedCluster is restoredCluster with each node's config changed by tune.
func tunedCluster(t *testing.T, seed uint64, bug instance.Bug, durable map[uint64]instance.Durable, chosen map[uint64]map[uint64]core.Value, tune func(*instance.Config)) *cluster {
	t.Helper()
	c := &cluster{t: t, ids: []uint64{1, 2, 3}, nodes: map[uint64]*instance.Node{}, stores: map[uint64]*store{},
		results: map[uint64][]instance.Result{}, early: map[core.MsgType]int{}, late: map[core.MsgType]int{}, down: map[uint64]bool{}}
	for _, id := range c.ids {
		s := &store{accepted: map[uint64]core.InstanceValue{}, chosen: map[uint64]core.Value{}}
		for i, v := range chosen[id] {
			s.chosen[i] = v
		}
		cfg := config(id, seed, s, bug)
		tune(&cfg)
		n, err := instance.New(cfg, durable[id])
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[id], c.stores[id] = n, s
	}
	return c
}

// handle follows the Ready contract: send Messages, persist, then send After
// and deliver Results.
func (c *cluster) handle(id uint64, rd instance.Ready) {
	for _, m := range rd.Messages {
		c.early[m.Type]++
	}
	for _, m := range rd.After {
		c.late[m.Type]++
	}
	if c.watch != nil {
		for _, m := range append(rd.Messages, rd.After...) {
			c.watch(m)
		}
	}
	c.queue = append(c.queue, rd.Messages...)
	s := c.stores[id]
	if rd.Promised != 0 {
		s.promised = rd.Promised
	}
	for _, a := range rd.Accepted {
		s.accepted[a.Instance] = a
	}
	for _, ch := range rd.Chosen {
		s.chosen[ch.Instance] = ch.Value
	}
	s.entries = append(s.entries, rd.Entries...)
	if rd.State != nil {
		s.state = *rd.State
	}
	if c.syncTicks > 0 && len(rd.After) > 0 {
		c.synced = append(c.synced, delayed{at: c.ticks + c.syncTicks, msgs: rd.After})
	} else {
		c.queue = append(c.queue, rd.After...)
	}
	c.results[id] = append(c.results[id], rd.Results...)
}

// drain runs Readys and delivers messages until the cluster is quiet.
func (c *cluster) drain() {
	for range 10000 {
		busy := false
		for _, id := range c.ids {
			if n := c.nodes[id]; !c.down[id] && n.HasReady() {
				c.handle(id, n.Ready())
				n.Advance()
				busy = true
			}
		}
		msgs := c.queue
		c.queue = nil
		for _, m := range msgs {
			if (c.drop != nil && c.drop(m)) || c.down[m.From] || c.down[m.To] {
				continue
			}
			if err := c.nodes[m.To].Step(m); err != nil {
				c.t.Fatalf("Step(%v): %v", m, err)
			}
			busy = true
		}
		if !busy {
			return
		}
	}
	c.t.Fatal("cluster never went quiet")
}

func (c *cluster) masters() []uint64 {
	var out []uint64
	for _, id := range c.ids {
		if !c.down[id] && c.nodes[id].IsMaster() {
			out = append(out, id)
		}
	}
	return out
}

// tick advances every clock by one tick, checking invariants.
func (c *cluster) tick() {
	c.ticks++
	for len(c.synced) > 0 && c.synced[0].at <= c.ticks {
		c.queue = append(c.queue, c.synced[0].msgs...)
		c.synced = c.synced[1:]
	}
	for _, id := range c.ids {
		if !c.down[id] {
			c.nodes[id].Tick()
		}
	}
	c.drain()
	for _, id := range c.ids {
		if err := c.nodes[id].Check(); err != nil {
			c.t.Fatal(err)
		}
	}
	if m := c.masters(); len(m) > 1 {
		c.t.Fatalf("tick %d: several masters %v", c.nodes[1].Now(), m)
	}
}

// elect ticks until a master emerges and returns it.
func (c *cluster) elect() uint64 {
	c.t.Helper()
	for range 500 {
		c.tick()
		if m := c.masters(); len(m) == 1 {
			return m[0]
		}
	}
	c.t.Fatal("no master after 500 ticks")
	return 0
}

// await ticks until node id has n results.
func (c *cluster) await(id uint64, n int) []instance.Result {
	c.t.Helper()
	for range 200 {
		if len(c.results[id]) >= n {
			return c.results[id]
		}
		c.tick()
	}
	c.t.Fatalf("node %d: %d results, want %d", id, len(c.results[id]), n)
	return nil
}

func data(s ...string) [][]byte {
	var out [][]byte
	for _, x := range s {
		out = append(out, []byte(x))
	}
	return out
}

func TestOneMasterEmerges(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		c := newCluster(t, seed, instance.BugNone)
		m := c.elect()
		for range 300 { // several lease periods: the master renews and stays
			c.tick()
		}
		if got := c.masters(); !reflect.DeepEqual(got, []uint64{m}) {
			t.Errorf("seed %d: masters %v after 300 ticks, want [%d]", seed, got, m)
		}
		for _, id := range c.ids {
			if got := c.nodes[id].Master(); got != m {
				t.Errorf("seed %d: node %d believes in master %d, want %d", seed, id, got, m)
			}
		}
	}
}

func TestProposeErrors(t *testing.T) {
	c := newCluster(t, 7, instance.BugNone)
	m := c.elect()
	for range 5 {
		c.tick()
	}
	for _, id := range c.ids {
		n := c.nodes[id]
		if err := n.Propose(instance.Proposal{Req: 1}); !errors.Is(err, core.ErrEmpty) {
			t.Errorf("node %d: empty proposal: %v, want ErrEmpty", id, err)
		}
		if id == m {
			continue
		}
		err := n.Propose(instance.Proposal{Req: 1, Entries: data("x")})
		var nm *core.NotMasterError
		if !errors.Is(err, core.ErrNotMaster) || !errors.As(err, &nm) || nm.Master != m {
			t.Errorf("node %d: Propose on a non-master: %v, want ErrNotMaster naming %d", id, err, m)
		}
	}
	if err := c.nodes[m].Propose(instance.Proposal{Req: 1, Entries: data("x")}); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[m].Propose(instance.Proposal{Req: 1, Entries: data("y")}); err == nil {
		t.Error("a second outstanding proposal with the same Req was accepted")
	}
}

func TestReplication(t *testing.T) {
	c := newCluster(t, 3, instance.BugNone)
	m := c.elect()
	type prop struct {
		entries          []string
		client, seq      uint64
		first, last      uint64
		duplicate, stale bool
	}
	// The first four go out together (one batch), then one at a time.
	props := []prop{
		{[]string{"a", "b"}, 0, 0, 0, 1, false, false},
		{[]string{"c"}, 10, 1, 2, 2, false, false},
		{[]string{"d", "e", "f"}, 11, 1, 3, 5, false, false},
		{[]string{"c"}, 10, 1, 2, 2, true, false}, // retry in the same batch
		{[]string{"c"}, 10, 1, 2, 2, true, false}, // retry later
		{[]string{"g"}, 10, 2, 6, 6, false, false},
		{[]string{"d", "e", "f"}, 11, 1, 3, 5, true, false},
		{[]string{"c"}, 10, 1, 2, 2, true, false}, // an older seq, still in the window: the original indexes
		{[]string{"i"}, 0, 0, 7, 7, false, false},
	}
	for j, p := range props {
		if err := c.nodes[m].Propose(instance.Proposal{Req: uint64(100 + j), Entries: data(p.entries...), ClientID: p.client, Seq: p.seq}); err != nil {
			t.Fatalf("proposal %d: %v", j, err)
		}
		if j >= 3 {
			c.await(m, j+1)
		}
	}
	got := c.await(m, len(props))
	for j, p := range props {
		want := instance.Result{Req: uint64(100 + j), First: p.first, Last: p.last, Duplicate: p.duplicate}
		if p.stale {
			want.Err = core.ErrStaleSeq
		}
		if got[j] != want {
			t.Errorf("result %d = %+v, want %+v", j, got[j], want)
		}
	}
	var want []core.Entry
	for i, d := range strings.Split("abcdefgi", "") {
		want = append(want, core.Entry{Index: uint64(i), Data: []byte(d)})
	}
	for range 50 { // let commits reach everyone
		c.tick()
	}
	for _, id := range c.ids {
		if got := c.stores[id].entries; !reflect.DeepEqual(got, want) {
			t.Errorf("node %d applied %v, want %v", id, got, want)
		}
		if c.results[id] != nil && id != m {
			t.Errorf("node %d got results %v for proposals it did not make", id, c.results[id])
		}
	}
	if a, b := c.nodes[1].Applied(), c.nodes[2].Applied(); !reflect.DeepEqual(a, b) || !reflect.DeepEqual(a, c.nodes[3].Applied()) {
		t.Errorf("apply states differ: %+v %+v %+v", a, b, c.nodes[3].Applied())
	}
}

// TestCommitsRideWithNextAccept: the master holds its commit notices until
// a Ready that sends messages anyway (the next Accept), or for a tick at
// most. Its client is answered without them; the other voters learn the
// instance from the batch of the next Accept, or after the tick.
func TestCommitsRideWithNextAccept(t *testing.T) {
	c := newCluster(t, 3, instance.BugNone)
	m := c.elect()
	for range 20 {
		c.tick() // quiet: the election's no-op applied everywhere
	}
	var peers []uint64
	for _, id := range c.ids {
		if id != m {
			peers = append(peers, id)
		}
	}
	var sent []core.Message
	c.watch = func(msg core.Message) { sent = append(sent, msg) }
	applied := func(id uint64) int { return len(c.stores[id].entries) }
	// commitsOf counts the commits sent that announce instance i.
	commitsOf := func(msgs []core.Message, i uint64) int {
		k := 0
		for _, msg := range msgs {
			if msg.Type == core.MsgCommit && msg.Instance <= i && i < msg.End {
				k++
			}
		}
		return k
	}

	if err := c.nodes[m].Propose(instance.Proposal{Req: 1, Entries: data("a")}); err != nil {
		t.Fatal(err)
	}
	c.drain()
	if len(c.results[m]) != 1 || c.results[m][0].Err != nil {
		t.Fatalf("results %+v, want the append answered without a tick", c.results[m])
	}
	var first uint64
	for _, msg := range sent {
		if msg.Type == core.MsgAccept && len(msg.Value.Commands) > 0 && msg.Value.Commands[0].Kind == core.CmdUser {
			first = msg.Instance
		}
	}
	if k := commitsOf(sent, first); k != 0 || c.nodes[m].HasReady() {
		t.Fatalf("%d commits of instance %d sent, HasReady %v: the commit should wait for the next Accept", k, first, c.nodes[m].HasReady())
	}
	for _, id := range peers {
		if applied(id) != 0 {
			t.Fatalf("node %d applied %d entries before any commit", id, applied(id))
		}
	}

	// The next append: its Ready carries the Accepts and the held commits.
	if err := c.nodes[m].Propose(instance.Proposal{Req: 2, Entries: data("b")}); err != nil {
		t.Fatal(err)
	}
	rd := c.nodes[m].Ready()
	kinds := map[core.MsgType]int{}
	for _, msg := range rd.Messages {
		kinds[msg.Type]++
	}
	if kinds[core.MsgAccept] != len(peers) || commitsOf(rd.Messages, first) != len(peers) {
		t.Fatalf("the next append's Ready sends %v, want an Accept and a Commit of instance %d to each of %d peers", kinds, first, len(peers))
	}
	c.handle(m, rd)
	c.nodes[m].Advance()
	c.drain()
	for _, id := range peers {
		if applied(id) != 1 {
			t.Fatalf("node %d applied %d entries, want the first append's, learned from the Commit beside the Accept", id, applied(id))
		}
	}

	// No append follows the second: one tick sends its commit.
	if len(c.results[m]) != 2 || c.nodes[m].HasReady() {
		t.Fatalf("results %+v, HasReady %v: want the second append answered and its commit held", c.results[m], c.nodes[m].HasReady())
	}
	c.tick()
	for _, id := range peers {
		if applied(id) != 2 {
			t.Fatalf("node %d applied %d entries a tick after the last append, want 2", id, applied(id))
		}
	}
}

func TestPersistBeforeReply(t *testing.T) {
	for _, tc := range []struct {
		bug       instance.Bug
		wantEarly bool // Promise/Accepted replies in Ready.Messages
	}{
		{instance.BugNone, false},
		{instance.BugReplyBeforePersist, true},
	} {
		c := newCluster(t, 5, tc.bug)
		m := c.elect()
		if err := c.nodes[m].Propose(instance.Proposal{Req: 1, Entries: data("x")}); err != nil {
			t.Fatal(err)
		}
		c.await(m, 1)
		for _, typ := range []core.MsgType{core.MsgPromise, core.MsgAccepted} {
			early, late := c.early[typ], c.late[typ]
			if tc.wantEarly && (early == 0 || late != 0) || !tc.wantEarly && (early != 0 || late == 0) {
				t.Errorf("bug %v: %v sent %d times in Messages and %d in After", tc.bug, typ, early, late)
			}
		}
		if c.early[core.MsgAccept] == 0 {
			t.Errorf("bug %v: no Accept in Messages", tc.bug)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	base := config(1, 1, &store{}, instance.BugNone)
	if err := base.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*instance.Config)
	}{
		{"ID", func(c *instance.Config) { c.ID = 0 }},
		{"Members", func(c *instance.Config) { c.Members = nil }},
		{"slot", func(c *instance.Config) { c.Members[1].Slot = 0 }},
		{"K=", func(c *instance.Config) { c.Members[2].Slot = c.K }},
		{"neither a member", func(c *instance.Config) { c.ID = 9 }},
		{"follower", func(c *instance.Config) { c.Followers = []instance.Follower{{ID: 4, Target: 8}} }},
		{"Window", func(c *instance.Config) { c.Window = 0 }},
		{"MaxBatchBytes", func(c *instance.Config) { c.MaxBatchBytes = 0 }},
		{"MaxAhead", func(c *instance.Config) { c.MaxAhead = 2*uint64(c.Window) - 1 }},
		{"LeaseMargin", func(c *instance.Config) { c.LeaseMargin = c.LeaseTicks / 2 }},
		{"PhaseTimeout", func(c *instance.Config) { c.PhaseTimeout = 0 }},
		{"CatchupBatch", func(c *instance.Config) { c.CatchupBatch = 0 }},
		{"Rand", func(c *instance.Config) { c.Rand = nil }},
		{"Log", func(c *instance.Config) { c.Log = nil }},
	} {
		cfg := base
		cfg.Members = append([]instance.Member(nil), base.Members...)
		tc.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate() = %v, want an error naming it", tc.field, err)
		}
		if _, nerr := instance.New(cfg, instance.Durable{}); fmt.Sprint(nerr) != fmt.Sprint(err) {
			t.Errorf("%s: New returned %v, Validate %v", tc.field, nerr, err)
		}
	}
}

// A node that learns instances while it is preparing (here by catch-up)
// re-proposes them once leading, although they are below its applied
// frontier. Every acceptor that applied them refuses ("not a vote", with a
// Committed that the proposer ignores, though acceptor.Accept says "the
// proposer learns it from Committed"), and instance calls proposer.Forget only
// for newly learned values, so these instances stay in flight and their
// Accepts (whole batches) are resent every PhaseTimeout for as long as the
// master lives.
func TestNoResendBelowApplied(t *testing.T) {
	const n = 20
	old := idgen.Make(1, 2, idgen.DefaultK) // node 3 was the master
	var acc []core.InstanceValue
	log := map[uint64]core.Value{}
	for i := range uint64(n) {
		v := core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: data(fmt.Sprint(i)), Origin: 3, Req: i}}}
		acc, log[i] = append(acc, core.InstanceValue{Instance: i, Ballot: old, Value: v}), v
	}
	// Nodes 1 and 2 accepted 0..n-1; node 3 saw them chosen and applied them.
	c := restoredCluster(t, 1, instance.BugNone, map[uint64]instance.Durable{
		1: {Promised: old, Accepted: acc},
		2: {Promised: old, Accepted: acc},
		3: {Promised: old, State: core.ApplyState{Applied: n, NextIndex: n}},
	}, map[uint64]map[uint64]core.Value{3: log})
	n1 := c.nodes[1]
	step := func(id uint64, m core.Message) {
		t.Helper()
		if err := c.nodes[id].Step(m); err != nil {
			t.Fatal(err)
		}
		for _, id := range c.ids {
			if c.nodes[id].HasReady() {
				c.handle(id, c.nodes[id].Ready())
				c.nodes[id].Advance()
			}
		}
	}
	take := func(typ core.MsgType, to uint64) core.Message {
		t.Helper()
		for k, m := range c.queue {
			if m.Type == typ && m.To == to {
				c.queue = append(c.queue[:k], c.queue[k+1:]...)
				return m
			}
		}
		t.Fatalf("no %v to %d in %v", typ, to, c.queue)
		return core.Message{}
	}
	// Node 1 alone ticks until it starts phase 1.
	for k := 0; n1.Status().Phase != "preparing"; k++ {
		if k > 50 {
			t.Fatal("node 1 never prepared")
		}
		n1.Tick()
		if n1.HasReady() {
			c.handle(1, n1.Ready())
			n1.Advance()
		}
	}
	prepare := take(core.MsgPrepare, 2)
	c.queue = nil
	// Before node 2 promises, node 1 learns from node 3 that it is behind and catches up.
	step(1, core.Message{Type: core.MsgProbe, From: 3, To: 1, Committed: n})
	step(3, take(core.MsgLearnReq, 3))
	step(1, take(core.MsgLearnResp, 1))
	if a := n1.Applied().Applied; a != n {
		t.Fatalf("node 1 applied %d after catch-up, want %d", a, n)
	}
	step(2, prepare)
	step(1, take(core.MsgPromise, 1))
	if n1.Status().Phase != "leading" {
		t.Fatalf("node 1 is %s, want leading", n1.Status().Phase)
	}
	c.drain()
	for range 100 {
		c.tick()
	}
	if m := c.masters(); !reflect.DeepEqual(m, []uint64{1}) {
		t.Fatalf("masters %v, want [1] (scenario precondition)", m)
	}
	resent := 0
	c.watch = func(m core.Message) {
		if m.Type == core.MsgAccept && m.Instance < n {
			resent++
		}
	}
	for range 50 {
		c.tick()
	}
	if st := n1.Status(); st.InFlight != 0 || resent != 0 {
		t.Errorf("master: %d instances in flight, %d Accepts for applied instances resent in 50 ticks", st.InFlight, resent)
	}
}

// Proposal.Req need only be unique among a node's outstanding requests, so a
// restarted node may reuse a Req of its previous incarnation. apply routes a
// result by (Origin, Req) alone: when a command the previous incarnation
// proposed is chosen in the instance where the new incarnation placed its own
// command with the same Req, the new proposal is acknowledged with the old
// command's indexes although its entries were never appended (a lost,
// acknowledged write) instead of failing with ErrDropped.
func TestResultRoutedToReusedReq(t *testing.T) {
	prev := idgen.Make(1, 0, idgen.DefaultK) // a ballot of node 1's previous incarnation
	old := core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: data("old"), Origin: 1, Req: 1}}}
	st := core.ApplyState{Applied: 1, LeaseHolder: 1, LeaseVersion: 1}
	// Only node 3 accepted node 1's last proposal before node 1 restarted.
	c := restoredCluster(t, 1, instance.BugNone, map[uint64]instance.Durable{
		1: {Promised: prev, State: st},
		2: {Promised: prev, State: st},
		3: {Promised: prev, State: st, Accepted: []core.InstanceValue{{Instance: 2, Ballot: prev, Value: old}}},
	}, nil)
	c.drop = func(m core.Message) bool { return m.From == 3 || m.To == 3 }
	if m := c.elect(); m != 1 {
		t.Fatalf("master %d, want 1 (scenario precondition)", m)
	}
	// The new incarnation of node 1 places Req 1 in instance 2, then is cut off.
	c.drop = func(m core.Message) bool { return m.From == 1 || m.To == 1 }
	if err := c.nodes[1].Propose(instance.Proposal{Req: 1, Entries: data("new")}); err != nil {
		t.Fatal(err)
	}
	for k := 0; c.nodes[2].Applied().Applied < 3; k++ {
		if k > 500 {
			t.Fatal("nodes 2 and 3 never chose instance 2")
		}
		c.tick()
	}
	c.drop = nil
	res := c.await(1, 1)[0]
	for range 50 {
		c.tick()
	}
	var got []string
	for _, e := range c.stores[1].entries {
		if e.Index >= res.First && e.Index <= res.Last {
			got = append(got, string(e.Data))
		}
	}
	if res.Err == nil && !reflect.DeepEqual(got, []string{"new"}) {
		t.Errorf("Req 1 acknowledged at [%d, %d], which holds %q; log %v", res.First, res.Last, got, c.stores[1].entries)
	}
}

// TestRetryOfAppliedAppendAnsweredAtOnce: a retry of an append that
// already applied is answered when it is proposed, from the dedup table,
// not after every proposal queued before it. A client whose call timeout
// is shorter than that queue (e2e TestTwoKilledForGoodOfFive: a small
// append behind 32 large ones on slow disks) otherwise never hears that its
// first attempt applied: each retry waits the whole queue again.
func TestRetryOfAppliedAppendAnsweredAtOnce(t *testing.T) {
	c := newCluster(t, 4, instance.BugNone)
	m := c.elect()
	n := c.nodes[m]
	if err := n.Propose(instance.Proposal{Req: 1, Entries: data("a", "b"), ClientID: 10, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	first := c.await(m, 1)[0]
	if first.Err != nil || first.Duplicate {
		t.Fatalf("first attempt: %+v", first)
	}
	// Nothing is chosen from now on: the queue never drains.
	c.drop = func(core.Message) bool { return true }
	for j := range 20 {
		if err := n.Propose(instance.Proposal{Req: uint64(10 + j), Entries: data("x"), ClientID: 11, Seq: uint64(1 + j)}); err != nil {
			t.Fatal(err)
		}
	}
	hits := n.Status().DedupHits
	for _, p := range []struct {
		req     uint64
		entries [][]byte
		want    instance.Result
	}{
		{100, data("a", "b"), instance.Result{Req: 100, First: first.First, Last: first.Last, Duplicate: true}},
		{101, data("a", "c"), instance.Result{Req: 101, Err: core.ErrSeqReused}},
	} {
		if err := n.Propose(instance.Proposal{Req: p.req, Entries: p.entries, ClientID: 10, Seq: 1}); err != nil {
			t.Fatal(err)
		}
		if !n.HasReady() {
			t.Fatalf("req %d: no Ready after the retry was proposed", p.req)
		}
		rd := n.Ready()
		n.Advance()
		var got []instance.Result
		for _, r := range rd.Results {
			if r.Req == p.req {
				got = append(got, r)
			}
		}
		if len(got) != 1 || !errors.Is(got[0].Err, p.want.Err) || got[0].First != p.want.First || got[0].Last != p.want.Last || got[0].Duplicate != p.want.Duplicate {
			t.Errorf("req %d: results at once %+v, want one %+v", p.req, got, p.want)
		}
	}
	if got := n.Status().DedupHits; got != hits+1 {
		t.Errorf("dedup hits %d, want %d", got, hits+1)
	}
}
