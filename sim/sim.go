// Package sim is the deterministic simulator that proves the protocol core.
// It drives N instance.Nodes in one goroutine from one seeded random source:
// a network that drops, duplicates, delays and reorders messages and can be
// partitioned in every shape (isolate one, isolate the master, majority and
// minority, bridge, one-way); disks whose unsynced writes are lost when a
// node crashes; restarts; and clocks that run at different rates within a
// stated bound. Clients append unique values (some exactly-once, with
// retries) and read.
//
// After every event it checks the safety invariants (see check.go). After
// the faulty phase it heals everything and requires progress within a bound,
// then hands the client history and the final log to checker/.
//
// It must never read a clock or use any randomness but the seed: the same
// seed gives the same trace hash, and a failing seed replays exactly.
package sim

import (
	"container/heap"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// Options set up one simulated run.
type Options struct {
	Seed      uint64
	Nodes     int // voting members
	Followers int // non-voting nodes, following member 1
	Clients   int
	Chaos     time.Duration // how long faults are injected (virtual time)
	Settle    time.Duration // after healing, progress must be made within this
	// MaxSkew bounds how much faster or slower a node's clock runs than real
	// time (0.05: ±5%). The lease margin in the core must cover twice this.
	MaxSkew   float64
	Bug       instance.Bug
	Porcupine bool // also run Porcupine on windows of the history
	// Trim makes the master trim the log now and then during the faults,
	// close to its end, so that nodes that were down fetch a base.
	Trim bool
	// Trace, if set, receives one line per event.
	Trace func(string)
}

// DefaultOptions returns the options the test suite runs each seed with.
func DefaultOptions(seed uint64, nodes int) Options {
	return Options{Seed: seed, Nodes: nodes, Followers: 1, Clients: 4, Chaos: 6 * time.Second, Settle: 20 * time.Second, MaxSkew: 0.05, Porcupine: true, Trim: true}
}

// Report is the outcome of a run.
type Report struct {
	Opt      Options
	Err      error  // the first violation; nil when the run is clean
	Hash     uint64 // hash of the whole event trace
	Events   int
	Ops      int // client operations completed
	Acked    int // appends acknowledged
	Faults   map[string]int
	FinalLen int
	Masters  int // master changes seen
	Installs int // bases installed by nodes that were behind them
	// Porcupine windows checked and skipped (too large or timed out).
	Windows, Skipped int
}

// Replay is the command that replays this run exactly.
func (r Report) Replay() string {
	bug := ""
	if r.Opt.Bug != instance.BugNone {
		bug = " PAXOSD_SIM_BUG=" + r.Opt.Bug.String()
	}
	return fmt.Sprintf("PAXOSD_SIM_SEED=%d PAXOSD_SIM_NODES=%d%s go test ./sim -run TestReplay -v", r.Opt.Seed, r.Opt.Nodes, bug)
}

// Virtual time is in microseconds.
const (
	us          = int64(1)
	ms          = 1000 * us
	tickLen     = 10 * ms
	clientTO    = 1000 * ms // a client gives up on one attempt after this
	giveUpAfter = 8000 * ms // an exactly-once client gives up on an op after this
)

// CoreConfig is the core configuration the simulator runs: short timeouts so
// that many master changes fit in a run, small windows and batches so that
// their limits are exercised.
func CoreConfig() instance.Config {
	c := instance.DefaultConfig()
	c.Window, c.MaxBatchEntries, c.MaxBatchBytes, c.MaxAhead = 8, 8, 1<<10, 64
	c.LeaseTicks, c.LeaseMargin = 50, 12
	c.PhaseTimeout, c.ElectionJitter, c.LearnInterval = 10, 15, 50
	c.CatchupBatch, c.CatchupBytes = 16, 2<<10
	return c
}

type evKind uint8

const (
	evTick evKind = iota
	evDeliver
	evSynced
	evRestart
	evFault
	evHeal
	evClientNext
	evClientArrive
	evClientReply
	evClientTimeout
	evClientRetry
	evTrim
)

type event struct {
	at   int64
	seq  uint64
	kind evKind
	node uint64 // node index+1
	inc  int    // node incarnation the event belongs to
	msg  core.Message
	cl   int    // client
	req  uint64 // client request
	res  reply
}

type reply struct {
	err       error
	hint      uint64
	first     uint64
	duplicate bool
	entries   []string
	from      uint64
	lastIndex int64
}

type queue []*event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type node struct {
	id        uint64
	cfg       instance.Config
	core      *instance.Node
	disk      *disk // what the node reads: every write, synced or not
	durable   *disk // what survives a crash
	unsynced  []*instance.Ready
	up        bool
	inc       int
	tickEvery int64
	// wallOffset is how far the node's wall clock is off (virtual µs).
	wallOffset int64
	syncing    *instance.Ready
	reqs       map[uint64]int // request -> client
}

type world struct {
	opt    Options
	rng    *rand.Rand
	now    int64
	seq    uint64
	q      queue
	nodes  []*node
	voters int
	trace  hash.Hash64
	events int

	blocked                 map[[2]uint64]bool
	dropP, dupP, longDelayP float64
	chaosOver, healed       bool
	healAt                  int64

	clients []*client
	hist    checker.History
	nextReq uint64
	probe   *client // the post-heal progress probe

	inv              *invariants
	windows, skipped int
	faults           map[string]int
	masters          int
	installs         int
	lastMaster       uint64
	err              error
}

// Run runs one simulation.
func Run(opt Options) (rep Report) {
	w := &world{
		opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15)), trace: fnv.New64a(),
		blocked: map[[2]uint64]bool{}, faults: map[string]int{}, voters: opt.Nodes,
	}
	w.inv = newInvariants(w)
	base := CoreConfig()
	base.Bug = opt.Bug
	var members []instance.Member
	for i := 1; i <= opt.Nodes; i++ {
		members = append(members, instance.Member{ID: uint64(i), Slot: uint64(i - 1)})
	}
	var followers []instance.Follower
	for i := 0; i < opt.Followers; i++ {
		followers = append(followers, instance.Follower{ID: uint64(opt.Nodes + 1 + i), Target: 1})
	}
	for i := 1; i <= opt.Nodes+opt.Followers; i++ {
		cfg := base
		cfg.ID, cfg.Members, cfg.Followers = uint64(i), members, followers
		n := &node{id: uint64(i), cfg: cfg, disk: newDisk(), durable: newDisk()}
		w.nodes = append(w.nodes, n)
		w.start(n)
	}
	for c := 0; c < opt.Clients; c++ {
		cl := &client{n: c, target: uint64(1 + w.rng.IntN(opt.Nodes))}
		if c%2 == 0 {
			cl.cid = uint64(1000 + c)
		}
		w.clients = append(w.clients, cl)
		w.schedule(&event{at: w.rng.Int64N(50 * ms), kind: evClientNext, cl: c})
	}
	w.schedule(&event{at: 200 * ms, kind: evFault})
	if opt.Trim {
		w.schedule(&event{at: 300 * ms, kind: evTrim})
	}
	w.schedule(&event{at: opt.Chaos.Microseconds(), kind: evHeal})

	defer func() {
		rep = Report{Opt: opt, Err: w.err, Hash: w.trace.Sum64(), Events: w.events, Faults: w.faults, Masters: w.masters, Installs: w.installs, Windows: w.windows, Skipped: w.skipped}
		for _, op := range w.hist {
			if op.Complete != 0 {
				rep.Ops++
			}
			if op.Kind == checker.Append && op.Status == checker.OK {
				rep.Acked++
			}
		}
		rep.FinalLen = len(w.inv.canonical)
	}()
	for len(w.q) > 0 && w.err == nil {
		e := heap.Pop(&w.q).(*event)
		w.now = e.at
		w.events++
		w.handle(e)
		if w.err == nil {
			w.inv.afterEvent(e)
		}
		if w.healed && w.progressDone() {
			break
		}
		if w.healed && w.now > w.healAt+opt.Settle.Microseconds() {
			w.fail("no progress: %v after healing, the probe append is not applied on every node (%s)", opt.Settle, w.progressState())
		}
	}
	if w.err == nil {
		w.finalCheck()
	}
	return rep
}

func (w *world) fail(format string, args ...any) {
	if w.err == nil {
		w.err = fmt.Errorf("t=%.3fs: %s", float64(w.now)/1e6, fmt.Sprintf(format, args...))
	}
}

func (w *world) schedule(e *event) {
	w.seq++
	e.seq = w.seq
	heap.Push(&w.q, e)
}

func (w *world) tracef(format string, args ...any) {
	line := fmt.Sprintf("%d "+format, append([]any{w.now}, args...)...)
	w.trace.Write([]byte(line))
	w.trace.Write([]byte{'\n'})
	if w.opt.Trace != nil {
		w.opt.Trace(line)
	}
}

func (w *world) node(id uint64) *node { return w.nodes[id-1] }

// start boots (or reboots) a node from its disk.
func (w *world) start(n *node) {
	cfg := n.cfg
	cfg.Rand = rand.New(rand.NewPCG(w.rng.Uint64(), w.rng.Uint64()))
	cfg.Log = n.disk
	c, err := instance.New(cfg, n.disk.durable())
	if err != nil {
		w.fail("node %d cannot start: %v", n.id, err)
		return
	}
	n.core, n.up, n.syncing, n.reqs = c, true, nil, map[uint64]int{}
	n.inc++
	skew := (w.rng.Float64()*2 - 1) * w.opt.MaxSkew
	n.tickEvery = int64(float64(tickLen) * (1 + skew))
	n.wallOffset = w.rng.Int64N(200*ms) - 100*ms
	w.inv.restarted(n)
	w.schedule(&event{at: w.now + w.rng.Int64N(n.tickEvery), kind: evTick, node: n.id, inc: n.inc})
}

func (w *world) crash(n *node, why string) {
	if !n.up {
		return
	}
	// The journal keeps a prefix of the writes since the last sync: maybe
	// all of them and even the synced write in flight, maybe none.
	keep := w.rng.IntN(len(n.unsynced) + 1)
	for _, rd := range n.unsynced[:keep] {
		w.mustWrite(n, n.durable, rd)
	}
	lost := len(n.unsynced) - keep
	if keep == len(n.unsynced) && n.syncing != nil && w.rng.IntN(2) == 0 {
		w.mustWrite(n, n.durable, n.syncing)
		w.inv.persisted(n, n.syncing)
	} else if n.syncing != nil {
		lost++
	}
	w.tracef("crash %d (%s) lost %d writes", n.id, why, lost)
	n.disk, n.unsynced = n.durable.clone(), nil
	n.up, n.core, n.syncing = false, nil, nil
	n.reqs = nil // its clients time out
}

// mustWrite applies a Ready's records to d; a refusal is a core bug.
func (w *world) mustWrite(n *node, d *disk, rd *instance.Ready) {
	if err := d.write(rd); err != nil {
		w.fail("node %d disk: %v", n.id, err)
	}
}

func (w *world) handle(e *event) {
	switch e.kind {
	case evTick:
		n := w.node(e.node)
		if !n.up || n.inc != e.inc {
			return
		}
		n.core.SetWallClock(uint64((w.now + n.wallOffset) / ms))
		n.core.Tick()
		w.tracef("tick %d", n.id)
		w.pump(n)
		w.schedule(&event{at: w.now + n.tickEvery, kind: evTick, node: n.id, inc: n.inc})
	case evDeliver:
		n := w.node(e.msg.To)
		w.tracef("deliver %s", e.msg)
		if !n.up {
			return
		}
		before := n.core.Promised()
		had, hadOK := n.core.AcceptedAt(e.msg.Instance)
		if err := n.core.Step(e.msg); err != nil {
			w.fail("node %d rejected %s: %v", n.id, e.msg, err)
			return
		}
		w.inv.stepped(n, e.msg, before, had, hadOK)
		w.pump(n)
	case evSynced:
		n := w.node(e.node)
		if !n.up || n.inc != e.inc {
			return
		}
		w.synced(n)
	case evRestart:
		n := w.node(e.node)
		if n.up {
			return
		}
		w.tracef("restart %d", n.id)
		w.start(n)
	case evFault:
		if w.chaosOver {
			return
		}
		w.injectFault()
		w.schedule(&event{at: w.now + 100*ms + w.rng.Int64N(700*ms), kind: evFault})
	case evHeal:
		w.heal()
	case evTrim:
		if w.chaosOver {
			return
		}
		if m := w.master(); m != nil {
			st := m.core.Applied()
			before := st.NextIndex - min(st.NextIndex, w.rng.Uint64N(30))
			w.nextReq++
			if err := m.core.ProposeTrim(w.nextReq, before); err == nil {
				w.tracef("trim %d before %d", m.id, before)
				w.pump(m)
			}
		}
		w.schedule(&event{at: w.now + 300*ms + w.rng.Int64N(1200*ms), kind: evTrim})
	case evClientNext, evClientArrive, evClientReply, evClientTimeout, evClientRetry:
		w.handleClient(e)
	}
}

// pump takes the next Ready if none is being persisted.
func (w *world) pump(n *node) {
	for n.up && n.syncing == nil && n.core.HasReady() {
		rd := n.core.Ready()
		for _, m := range rd.Messages {
			w.send(n, m)
		}
		if !rd.HasRecords() {
			w.release(n, &rd) // nothing to persist
			continue
		}
		if !rd.MustSync() {
			// Written without a sync: readable at once, durable only
			// with the next synced write. Votes are never written so.
			if rd.Promised != 0 || len(rd.Accepted) > 0 {
				w.fail("node %d: a Ready with a promise or accepted values does not ask for a sync", n.id)
				return
			}
			w.mustWrite(n, n.disk, &rd)
			n.unsynced = append(n.unsynced, &rd)
			w.inv.persisted(n, &rd)
			w.tracef("wrote %d rec=%d/%d", n.id, len(rd.Chosen), len(rd.Entries)+len(rd.Staged))
			w.release(n, &rd)
			continue
		}
		n.syncing = &rd
		lat := 100*us + w.rng.Int64N(1900*us)
		if w.rng.IntN(100) == 0 {
			lat += 20 * ms
		}
		w.schedule(&event{at: w.now + lat, kind: evSynced, node: n.id, inc: n.inc})
	}
}

func (w *world) synced(n *node) {
	rd := n.syncing
	n.syncing = nil
	for _, u := range n.unsynced {
		w.mustWrite(n, n.durable, u)
	}
	n.unsynced = nil
	w.mustWrite(n, n.durable, rd)
	w.mustWrite(n, n.disk, rd)
	if w.err != nil {
		return
	}
	w.inv.persisted(n, rd)
	w.tracef("synced %d rec=%d/%d/%d", n.id, len(rd.Accepted), len(rd.Chosen), len(rd.Entries))
	w.release(n, rd)
	w.pump(n)
}

// release sends what waited for the persist and advances the core.
func (w *world) release(n *node, rd *instance.Ready) {
	for _, m := range rd.After {
		w.send(n, m)
	}
	for _, r := range rd.Results {
		c, ok := n.reqs[r.Req]
		if !ok {
			continue
		}
		delete(n.reqs, r.Req)
		res := reply{err: r.Err, first: r.First, duplicate: r.Duplicate}
		var nm *core.NotMasterError
		if errors.As(r.Err, &nm) {
			res.hint = nm.Master
		}
		w.schedule(&event{at: w.now + w.clientDelay(), kind: evClientReply, cl: c, req: r.Req, res: res})
	}
	n.core.Advance()
}

// send puts a message on the network, subject to the current faults.
func (w *world) send(from *node, m core.Message) {
	w.inv.sent(from, m)
	if w.blocked[[2]uint64{m.From, m.To}] || w.rng.Float64() < w.dropP {
		return
	}
	copies := 1
	if w.rng.Float64() < w.dupP {
		copies = 2
	}
	for i := 0; i < copies; i++ {
		w.schedule(&event{at: w.now + w.netDelay(), kind: evDeliver, msg: m})
	}
}

func (w *world) netDelay() int64 {
	if w.rng.Float64() < w.longDelayP {
		return w.rng.Int64N(150 * ms)
	}
	return 50*us + w.rng.Int64N(950*us)
}

func (w *world) clientDelay() int64 { return 50*us + w.rng.Int64N(450*us) }

// master returns the node that believes it is master, if any.
func (w *world) master() *node {
	for _, n := range w.nodes[:w.voters] {
		if n.up && n.core.IsMaster() {
			return n
		}
	}
	return nil
}

func (w *world) injectFault() {
	voters := w.nodes[:w.voters]
	pick := func() *node { return voters[w.rng.IntN(len(voters))] }
	anyNode := func() *node { return w.nodes[w.rng.IntN(len(w.nodes))] }
	restartLater := func(n *node) {
		w.schedule(&event{at: w.now + 50*ms + w.rng.Int64N(2000*ms), kind: evRestart, node: n.id})
	}
	block := func(a, b uint64) { w.blocked[[2]uint64{a, b}] = true }
	isolate := func(x uint64) {
		clear(w.blocked)
		for _, n := range w.nodes {
			if n.id != x {
				block(x, n.id)
				block(n.id, x)
			}
		}
	}
	kind := w.rng.IntN(14)
	var name string
	switch kind {
	case 0:
		name = "crash"
		n := anyNode()
		w.crash(n, name)
		restartLater(n)
	case 1:
		name = "crash-master"
		if m := w.master(); m != nil {
			w.crash(m, name)
			restartLater(m)
		}
	case 2:
		name = "isolate-one"
		isolate(pick().id)
	case 3:
		name = "isolate-master"
		if m := w.master(); m != nil {
			isolate(m.id)
		}
	case 4:
		name = "split"
		clear(w.blocked)
		perm := w.rng.Perm(len(w.nodes))
		cut := 1 + w.rng.IntN(len(w.nodes)-1)
		side := map[uint64]bool{}
		for _, i := range perm[:cut] {
			side[uint64(i+1)] = true
		}
		for _, a := range w.nodes {
			for _, b := range w.nodes {
				if side[a.id] != side[b.id] {
					block(a.id, b.id)
				}
			}
		}
	case 5:
		name = "bridge"
		clear(w.blocked)
		perm := w.rng.Perm(w.voters)
		a, b := uint64(perm[0]+1), uint64(perm[1]+1)
		block(a, b)
		block(b, a)
	case 6:
		name = "one-way"
		a, b := pick().id, pick().id
		if a != b {
			block(a, b)
		}
	case 7, 8:
		name = "heal-network"
		clear(w.blocked)
	case 9:
		name = "drop-rate"
		w.dropP = []float64{0, 0.01, 0.05, 0.2}[w.rng.IntN(4)]
	case 10:
		name = "dup-rate"
		w.dupP = []float64{0, 0.02, 0.1}[w.rng.IntN(3)]
	case 11:
		name = "delay-rate"
		w.longDelayP = []float64{0, 0.05, 0.2}[w.rng.IntN(3)]
	case 13:
		// A supervisor restarts a crashed master at once: it comes back
		// while its lease and ballot are still current.
		name = "bounce-master"
		if m := w.master(); m != nil {
			w.crash(m, name)
			w.schedule(&event{at: w.now + w.rng.Int64N(100*ms), kind: evRestart, node: m.id})
		}
	case 12:
		name = "restart-all-down"
		for _, n := range w.nodes {
			if !n.up {
				w.tracef("restart %d", n.id)
				w.start(n)
			}
		}
	}
	w.faults[name]++
	w.tracef("fault %s", name)
}

// heal ends the faults: every link works, every node runs.
func (w *world) heal() {
	w.chaosOver, w.healed, w.healAt = true, true, w.now
	clear(w.blocked)
	w.dropP, w.dupP, w.longDelayP = 0, 0, 0
	for _, n := range w.nodes {
		if !n.up {
			w.start(n)
		}
	}
	w.tracef("heal")
	// The probe: one exactly-once append that must be applied everywhere.
	w.probe = &client{n: len(w.clients), cid: 1 << 40, target: 1, ackedIndex: -1}
	w.clients = append(w.clients, w.probe)
	w.schedule(&event{at: w.now, kind: evClientNext, cl: w.probe.n})
}

func (w *world) progressDone() bool {
	p := w.probe
	if p == nil || p.ackedIndex < 0 {
		return false
	}
	for _, n := range w.nodes {
		if n.disk.state.NextIndex <= uint64(p.ackedIndex) {
			return false
		}
	}
	// Every other client must also have settled, so the history is complete.
	for _, c := range w.clients {
		if c.cur != nil {
			return false
		}
	}
	return true
}

func (w *world) progressState() string {
	s := fmt.Sprintf("probe acked at %d;", w.probe.ackedIndex)
	for _, n := range w.nodes {
		st := "down"
		if n.up {
			s2 := n.core.Status()
			st = fmt.Sprintf("%s applied=%d master=%d ballot=%d promised=%d", s2.Role, s2.Applied, s2.Master, s2.Ballot, s2.Promised)
		}
		s += fmt.Sprintf(" n%d[%s entries=[%d,%d)]", n.id, st, n.disk.state.FirstIndex, n.disk.state.NextIndex)
	}
	pending := 0
	for _, c := range w.clients {
		if c.cur != nil {
			pending++
		}
	}
	return s + fmt.Sprintf(" clients pending=%d", pending)
}

// finalCheck compares every node's log, what trims left of it, with the
// one log every node applied, and runs the history checkers on that.
func (w *world) finalCheck() {
	canon := w.inv.canonical
	var end uint64
	for _, n := range w.nodes {
		st := n.disk.state
		end = max(end, st.NextIndex)
		if st.NextIndex > uint64(len(canon)) {
			w.fail("node %d's log ends at %d, past the %d entries ever applied", n.id, st.NextIndex, len(canon))
			return
		}
		for k, e := range n.disk.log() {
			if i := st.FirstIndex + uint64(k); e != canon[i] {
				w.fail("final logs differ at index %d: node %d has %q, others %q", i, n.id, e, canon[i])
				return
			}
		}
	}
	final := canon[:end]
	if res := checker.Check(w.hist, final); !res.OK() {
		w.fail("history check: %s", res)
		return
	}
	if w.opt.Porcupine {
		res := checker.CheckPorcupine(w.hist, final, checker.PorcupineOptions{MaxWindowOps: 100, Timeout: 5 * time.Second})
		w.windows, w.skipped = res.Windows, res.Skipped
		if !res.OK() {
			w.fail("porcupine: %s", res)
		}
	}
}
