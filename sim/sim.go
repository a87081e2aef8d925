// Package sim is the deterministic simulator that proves the protocol core.
// It drives N instance.Nodes in one goroutine from one seeded random source:
// a network that drops, duplicates, delays and reorders messages and can be
// partitioned in every shape (isolate one, isolate the master, majority and
// minority, bridge, one-way), and that drops every message over the
// transport's size limit; disks whose unsynced writes are lost when a node
// crashes; restarts; clocks that run at different rates within a stated
// bound; and, in a share of seeds each, a minority of voters down for good,
// wall clocks off by hours, and values near the per-append limit. Clients
// append unique values (some exactly-once, with retries) and read.
//
// After every event it checks the safety invariants (see check.go). After
// the faulty phase it heals everything but the nodes down for good and
// requires progress within a bound, then hands the client history and the
// final log to checker/.
//
// It must never read a clock or use any randomness but the seed: the same
// seed gives the same trace hash, and a failing seed replays exactly.
package sim

import (
	"cmp"
	"container/heap"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/lease"
	"github.com/paxosd/paxosd/members"
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
	// Faults that each once stopped or broke a real cluster; DefaultOptions
	// turns each on in a share of seeds.
	//
	// DownForGood voters (a minority) crash during the faulty phase and are
	// never restarted, not even at the heal: at a random moment (the master
	// preferred), right after one sent Accepts (instances in flight), or
	// once every other voter heard one announce it had applied more than
	// they did (its Commits lost with it). Member 1, whom the follower
	// follows, may be one of them.
	DownForGood int
	// WallHours puts every node's wall clock 1 min to 6 h ahead or behind,
	// drawn again at each restart, in place of ±100 ms. The master writes
	// its wall clock into the log, where it expires idle clients' dedup rows.
	WallHours bool
	// LargeValues makes three appends in four values whose encoded command
	// is close to a limit, MaxCommandBytes most often, so that two of them
	// in flight make a Promise or a push over the message limit.
	LargeValues bool
	// LeaseCrashes makes the crash-master fault wait for the next lease
	// Accept and crash its sender right after it leaves: a lease accepted
	// by some voters and learned by none, which the next master re-proposes
	// below its own, and whose holder comes back while that master's lease
	// runs.
	LeaseCrashes bool
	// Transfers makes the master hand its lease over every 0.2-1.5 s of
	// the faulty phase (instance.TransferMaster), to the voter it picks or
	// to one drawn at random, which may be down or cut off.
	Transfers bool
	// Membership makes the master change the membership every 0.2-1 s of
	// the faulty phase: it adds followers (two spare nodes start outside
	// the configuration, mirroring the log), promotes them, and removes
	// voters and followers (sim/members.go).
	Membership bool
	// Wipes (with Membership) wipes a node's disk now and then: it
	// restarts with the cluster's first configuration and an empty
	// directory, is refused by its peers, and is replaced: removed, started
	// again as a node that joins, added as a follower.
	Wipes bool
	// Hints delivers a failure detector's reports (what gossip tells a
	// node, instance.Node.PeerDown): a crash is reported to each node up
	// 50 ms-1.5 s later (one report in four lost), and every 50-500 ms a
	// random node is told a random peer is down, true or not.
	Hints bool
	// Resends makes exactly-once clients send, one append in six, one of
	// their last 8 acknowledged appends again (same seq and value), as an
	// application that lost the answer does. The answer must be a
	// Duplicate at the index first given.
	Resends bool
	// Trace, if set, receives one line per event.
	Trace func(string)
}

// DefaultOptions returns the options the test suite runs each seed with.
// The faults outside the first model are drawn from the seed, on a stream
// of their own, so that a seed without them runs as it did before them.
func DefaultOptions(seed uint64, nodes int) Options {
	o := Options{Seed: seed, Nodes: nodes, Followers: 1, Clients: 4, Chaos: 6 * time.Second, Settle: 20 * time.Second, MaxSkew: 0.05, Porcupine: true, Trim: true}
	r := rand.New(rand.NewPCG(seed, 0x6a09e667f3bcc909))
	if r.IntN(downForGoodShare) == 0 {
		o.DownForGood = 1 + r.IntN((nodes-1)/2)
	}
	o.WallHours = r.IntN(wallHoursShare) == 0
	o.LargeValues = r.IntN(largeValuesShare) == 0
	o.LeaseCrashes = r.IntN(leaseCrashesShare) == 0
	o.Transfers = r.IntN(transfersShare) == 0
	o.Membership = r.IntN(membershipShare) == 0
	// A wiped voter is out until replaced: not with voters down for good
	// too, which could leave no quorum to replace it with.
	o.Wipes = o.Membership && o.DownForGood == 0 && r.IntN(wipesShare) == 0
	o.Hints = r.IntN(hintsShare) == 0
	o.Resends = r.IntN(resendsShare) == 0
	return o
}

// One seed in this many has each fault outside the first model.
const (
	downForGoodShare  = 2
	wallHoursShare    = 3
	largeValuesShare  = 2
	leaseCrashesShare = 2
	transfersShare    = 2
	membershipShare   = 2
	wipesShare        = 2
	hintsShare        = 2
	resendsShare      = 2
)

func (o Options) lateFaults() bool {
	return o.DownForGood > 0 || o.WallHours || o.LargeValues || o.LeaseCrashes || o.Transfers || o.Membership || o.Hints || o.Resends
}

// WithoutLateFaults turns off the faults DefaultOptions draws beyond the
// first model, so that a seed older than them replays as it did.
func (o Options) WithoutLateFaults() Options {
	o.DownForGood, o.WallHours, o.LargeValues, o.LeaseCrashes, o.Transfers, o.Membership, o.Wipes, o.Hints, o.Resends = 0, false, false, false, false, false, false, false, false
	return o
}

// WithoutResends turns off re-sends of acknowledged appends, so that a seed
// older than them replays as it did.
func (o Options) WithoutResends() Options {
	o.Resends = false
	return o
}

// WithoutHints turns off failure detector reports, so that a seed older
// than them replays as it did.
func (o Options) WithoutHints() Options {
	o.Hints = false
	return o
}

// WithoutMembership turns off membership changes and wipes, so that a seed
// older than them replays as it did.
func (o Options) WithoutMembership() Options {
	o.Membership, o.Wipes = false, false
	return o
}

// WithoutTransfers turns off master handovers, so that a seed older than
// them replays as it did.
func (o Options) WithoutTransfers() Options {
	o.Transfers = false
	return o
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
	Dead     int // voters down for good
	Oversize int // messages dropped for being over the message limit
	Peak     int // the most events pending at once
	// Porcupine windows checked and skipped (too large or timed out).
	Windows, Skipped int
}

// Replay is the command that replays this run exactly.
func (r Report) Replay() string {
	bug := ""
	if r.Opt.Bug != instance.BugNone {
		bug = " PAXOSD_SIM_BUG=" + r.Opt.Bug.String()
	}
	def := DefaultOptions(r.Opt.Seed, r.Opt.Nodes)
	if !r.Opt.Trim && def.Trim {
		bug += " PAXOSD_SIM_TRIM=0"
	}
	if !r.Opt.lateFaults() && def.lateFaults() {
		bug += " PAXOSD_SIM_LATE=0"
	} else {
		if !r.Opt.Transfers && def.Transfers {
			bug += " PAXOSD_SIM_TRANSFERS=0"
		}
		if !r.Opt.Membership && def.Membership {
			bug += " PAXOSD_SIM_MEMBERSHIP=0"
		}
		if !r.Opt.Hints && def.Hints {
			bug += " PAXOSD_SIM_HINTS=0"
		}
		if !r.Opt.Resends && def.Resends {
			bug += " PAXOSD_SIM_RESENDS=0"
		}
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
	// maxPending bounds the events pending, messages in flight most of
	// them. Runs peak at a few hundred to a few thousand (TestSeeds logs
	// the peaks); a core that answered every duplicated catch-up answer
	// with a new request flooded its peers (peaks of 10,000 and more that
	// sometimes died out), and is caught here before the run takes
	// minutes.
	maxPending = 20_000
	// wallEpoch is virtual time 0 on the nodes' wall clocks (Unix µs, mid
	// 2025): far enough from 0 that a clock hours behind stays positive.
	wallEpoch = 1_750_000_000_000_000 * us
)

// CoreConfig is the core configuration the simulator runs: short timeouts so
// that many master changes fit in a run, small windows and batches so that
// their limits are exercised. The largest append is larger than a batch or
// a catch-up response (each then carries it alone), and two of them are over
// the message limit (MaxMessageBytes, 11,312 bytes): a window full of them
// is 48 KiB.
func CoreConfig() instance.Config {
	c := instance.DefaultConfig()
	c.Window, c.MaxBatchEntries, c.MaxBatchBytes, c.MaxAhead = 8, 8, 1<<10, 64
	c.MaxCommandBytes = 6 << 10
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
	evDownForGood
	evLeaseCrash
	evLost     // a message lost with the machine that sent it
	evTransfer // the master hands its lease over
	evMember   // the master changes the membership
	evWipe     // a node loses its disk
	evHint     // a node hears from its failure detector that a peer is down
)

type event struct {
	at   int64
	seq  uint64
	kind evKind
	node uint64 // node index+1
	inc  int    // node incarnation the event belongs to
	msg  core.Message
	// dir (evDeliver): the data directory incarnation the sender had when
	// it sent msg (a wipe gives it a new one).
	dir uint64
	why string // evDownForGood: why now
	// about (evHint): the peer reported down; 0 for the periodic event
	// that draws a random report.
	about uint64
	// lossy (evDownForGood): the messages the node sent that are still in
	// flight are lost with it.
	lossy bool
	cl    int    // client
	req   uint64 // client request
	res   reply
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
	dead      bool // down for good: nothing restarts it
	inc       int
	tickEvery int64
	// wallOffset is how far the node's wall clock is off (virtual µs).
	wallOffset int64
	syncing    *instance.Ready
	reqs       map[uint64]int // request -> client
	// Membership: the incarnation of its directory; joined: it joined a
	// running cluster (a spare, or a wiped node started again to be
	// replaced); static: a follower outside the membership (--follow);
	// lost: its disk was wiped and no configuration lists it with its new
	// directory yet; refused: a peer refused it, and it stays down until
	// the driver starts it again.
	incarnation                   uint64
	joined, static, lost, refused bool
	// removed: it found itself removed and stopped, as the runtime does
	// (node.ErrRemoved); nothing restarts it.
	removed bool
}

type world struct {
	opt    Options
	rng    *rand.Rand
	trng   *rand.Rand // transfers' own stream
	hrng   *rand.Rand // failure detector reports' own stream
	mrng   *rand.Rand // membership changes' and wipes' own stream
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

	// maxMsg is the transport's limit: a larger message is dropped.
	maxMsg int
	encBuf []byte
	// Voters to crash for good when the moment comes: right after the next
	// Accept one sends (afterAccept), or once every other voter heard one
	// announce it applied more than they did (announced). dead counts the
	// voters down for good. leaseCrashArmed: crash (and restart) the next
	// voter to send a lease Accept, right after.
	afterAccept, announced, dead int
	leaseCrashArmed              bool
	// heard is the applied frontier (Committed) a node last heard from a
	// peer: (node, peer) -> frontier.
	heard map[[2]uint64]uint64

	clients []*client
	hist    checker.History
	nextReq uint64
	probe   *client // the post-heal progress probe

	inv              *invariants
	windows, skipped int
	faults           map[string]int
	masters          int
	installs         int
	peak             int // the most events pending at once
	lastMaster       uint64
	err              error
}

// Run runs one simulation.
func Run(opt Options) (rep Report) {
	w := &world{
		opt: opt, rng: rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15)), trace: fnv.New64a(),
		blocked: map[[2]uint64]bool{}, faults: map[string]int{}, voters: opt.Nodes, heard: map[[2]uint64]uint64{},
	}
	w.inv = newInvariants(w)
	base := CoreConfig()
	base.Bug = opt.Bug
	w.maxMsg = base.MaxMessageBytes()
	if opt.DownForGood < 0 || 2*opt.DownForGood >= opt.Nodes {
		w.fail("%d voters down for good of %d: only a minority may be, or nothing can be required after the heal", opt.DownForGood, opt.Nodes)
		return Report{Opt: opt, Err: w.err}
	}
	var first []instance.Member
	for i := 1; i <= opt.Nodes; i++ {
		first = append(first, instance.Member{ID: uint64(i), Slot: uint64(i - 1), Addr: addrOf(uint64(i))})
	}
	var followers []instance.Follower
	for i := 0; i < opt.Followers; i++ {
		followers = append(followers, instance.Follower{ID: uint64(opt.Nodes + 1 + i), Target: 1})
	}
	w.mrng = rand.New(rand.NewPCG(opt.Seed, 0xbb67ae8584caa73b))
	w.inv.ms = newMembership(genesisOf(first), members.Rules{Delay: instance.ChangeDelay, K: base.K})
	all := opt.Nodes + opt.Followers
	if opt.Membership {
		all += spares
	}
	for i := 1; i <= all; i++ {
		cfg := base
		cfg.ID, cfg.Members, cfg.Followers = uint64(i), first, followers
		n := &node{id: uint64(i), cfg: cfg, incarnation: incarnationOf(uint64(i)),
			static: i > opt.Nodes && i <= opt.Nodes+opt.Followers, joined: i > opt.Nodes+opt.Followers}
		n.disk, n.durable = newDisks()
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
	if opt.Transfers {
		w.trng = rand.New(rand.NewPCG(opt.Seed, 0x3c6ef372fe94f82b))
		w.schedule(&event{at: 200*ms + w.trng.Int64N(1300*ms), kind: evTransfer})
	}
	for range opt.DownForGood {
		// Half the time in the last second of the faults: survivors that
		// restart reset what they believed of the dead, and a late death
		// leaves them less time to.
		from := 200 * ms
		if w.rng.IntN(2) == 0 {
			from = opt.Chaos.Microseconds() - 1000*ms
		}
		w.schedule(&event{at: from + w.rng.Int64N(opt.Chaos.Microseconds()-from), kind: evDownForGood})
	}
	if opt.Membership {
		w.schedule(&event{at: 200*ms + w.mrng.Int64N(800*ms), kind: evMember})
	}
	if opt.Hints {
		w.hrng = rand.New(rand.NewPCG(opt.Seed, 0xa54ff53a5f1d36f1))
		w.schedule(&event{at: 50*ms + w.hrng.Int64N(450*ms), kind: evHint})
	}
	if opt.Wipes {
		w.schedule(&event{at: 300*ms + w.mrng.Int64N(2000*ms), kind: evWipe})
	}
	w.schedule(&event{at: opt.Chaos.Microseconds(), kind: evHeal})

	defer func() {
		rep = Report{Opt: opt, Err: w.err, Hash: w.trace.Sum64(), Events: w.events, Faults: w.faults, Masters: w.masters, Installs: w.installs,
			Dead: w.dead, Oversize: w.faults["oversize"], Windows: w.windows, Skipped: w.skipped, Peak: w.peak}
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
		w.peak = max(w.peak, len(w.q))
		if len(w.q) > maxPending {
			w.fail("message storm: %d events pending (%s)", len(w.q), w.inFlight())
			break
		}
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

// inFlight names the most frequent kinds of message in flight.
func (w *world) inFlight() string {
	count := map[string]int{}
	for _, e := range w.q {
		if e.kind == evDeliver {
			count[fmt.Sprintf("%s %d->%d", e.msg.Type, e.msg.From, e.msg.To)]++
		}
	}
	kinds := slices.SortedFunc(maps.Keys(count), func(a, b string) int { return cmp.Or(count[b]-count[a], strings.Compare(a, b)) })
	var out []string
	for _, k := range kinds[:min(3, len(kinds))] {
		out = append(out, fmt.Sprintf("%d %s", count[k], k))
	}
	return strings.Join(out, ", ")
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
	cfg.Incarnation, cfg.Joined = n.incarnation, n.joined
	c, err := instance.New(cfg, n.disk.durable())
	if err != nil {
		w.fail("node %d cannot start: %v", n.id, err)
		return
	}
	n.core, n.up, n.syncing, n.reqs = c, true, nil, map[uint64]int{}
	n.inc++
	skew := (w.rng.Float64()*2 - 1) * w.opt.MaxSkew
	n.tickEvery = int64(float64(tickLen) * (1 + skew))
	if w.opt.WallHours {
		n.wallOffset = int64(time.Minute/time.Microsecond) + w.rng.Int64N(int64((6*time.Hour-time.Minute)/time.Microsecond))
		if w.rng.IntN(2) == 0 {
			n.wallOffset = -n.wallOffset
		}
		w.tracef("wall clock %d off by %v", n.id, time.Duration(n.wallOffset)*time.Microsecond)
	} else {
		n.wallOffset = w.rng.Int64N(200*ms) - 100*ms
	}
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
	if w.opt.Hints {
		// The failure detector tells the others, late, and not always.
		for _, x := range w.nodes {
			if x != n && x.up && w.hrng.IntN(4) != 0 {
				w.schedule(&event{at: w.now + 50*ms + w.hrng.Int64N(1450*ms), kind: evHint, node: x.id, about: n.id})
			}
		}
	}
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
		n.core.SetWallClock(uint64((wallEpoch + w.now + n.wallOffset) / ms))
		n.core.Tick()
		w.tracef("tick %d", n.id)
		w.pump(n)
		w.schedule(&event{at: w.now + n.tickEvery, kind: evTick, node: n.id, inc: n.inc})
	case evLost:
		w.tracef("lost %s", e.msg)
	case evDeliver:
		n := w.node(e.msg.To)
		w.tracef("deliver %s", e.msg)
		if !n.up || !w.admit(n, w.node(e.msg.From)) {
			return
		}
		w.inv.lostVote(w.node(e.msg.From), e.msg, e.dir)
		before, now := n.core.Promised(), n.core.Now()
		had, hadOK := n.core.AcceptedAt(e.msg.Instance)
		if err := n.core.Step(e.msg); err != nil {
			w.fail("node %d rejected %s: %v", n.id, e.msg, err)
			return
		}
		w.inv.stepped(n, e.msg, now, before, had, hadOK)
		w.heard[[2]uint64{n.id, e.msg.From}] = e.msg.Committed
		if from := w.node(e.msg.From); w.announced > 0 && from.id <= uint64(w.voters) && from.up && w.othersHeardAhead(from) {
			w.announced--
			from.dead = true // chosen: no other arming or victim() picks it, nothing restarts it
			w.schedule(&event{at: w.now, kind: evDownForGood, node: from.id, why: "once every other voter heard it had applied more", lossy: true})
		}
		w.pump(n)
	case evSynced:
		n := w.node(e.node)
		if !n.up || n.inc != e.inc {
			return
		}
		w.synced(n)
	case evRestart:
		n := w.node(e.node)
		if n.up || n.dead || n.refused || n.removed {
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
		// Voters armed to die at a moment that never came die now, at the
		// end of the faulty phase.
		for range w.afterAccept + w.announced {
			w.downForGood(w.victim(), "its moment never came")
		}
		w.afterAccept, w.announced = 0, 0
		w.heal()
	case evLeaseCrash:
		n := w.node(e.node)
		w.crash(n, "crash-master, right after a lease Accept")
		w.restartLater(n)
	case evDownForGood:
		if e.node != 0 {
			n := w.node(e.node)
			if e.lossy && n.up {
				// The machine dies before its buffers drain: what it sent
				// that is still in flight (the Commits of what it
				// announced) is lost.
				for _, d := range w.q {
					if d.kind == evDeliver && d.msg.From == n.id {
						d.kind = evLost
					}
				}
			}
			w.downForGood(n, e.why)
			return
		}
		switch w.rng.IntN(3) {
		case 0:
			w.downForGood(w.victim(), "at random")
		case 1:
			w.afterAccept++
			w.tracef("down for good armed: the next voter to send an Accept")
		case 2:
			// The survivors then believe it applied what none of them
			// learned, and only phase 1 can recover it.
			w.announced++
			w.tracef("down for good armed: the next voter to announce more than the others applied")
		}
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
	case evTransfer:
		if w.chaosOver {
			return
		}
		if m := w.master(); m != nil {
			var to uint64 // half the time the master picks
			if w.trng.IntN(2) == 0 {
				to = uint64(1 + w.trng.IntN(w.voters))
			}
			got, err := m.core.TransferMaster(to)
			w.tracef("transfer %d to %d: %d %v", m.id, to, got, err)
			if err == nil {
				w.faults["transfer"]++
				w.pump(m)
			}
		}
		w.schedule(&event{at: w.now + 200*ms + w.trng.Int64N(1300*ms), kind: evTransfer})
	case evMember:
		w.memberChange()
		if !w.healed || !w.progressDone() {
			w.schedule(&event{at: w.now + 200*ms + w.mrng.Int64N(800*ms), kind: evMember})
		}
	case evWipe:
		if w.chaosOver {
			return
		}
		var pool []*node
		for _, x := range w.nodes {
			if !x.dead && !x.static && !x.lost {
				pool = append(pool, x)
			}
		}
		if len(pool) > 0 && !slices.ContainsFunc(w.nodes, func(x *node) bool { return x.lost }) {
			w.wipe(pool[w.mrng.IntN(len(pool))])
		}
		w.schedule(&event{at: w.now + 500*ms + w.mrng.Int64N(2500*ms), kind: evWipe})
	case evHint:
		w.hint(e)
	case evClientNext, evClientArrive, evClientReply, evClientTimeout, evClientRetry:
		w.handleClient(e)
	}
}

// hint delivers a failure detector's report (e.about is down) to e.node,
// if it is up; the periodic event (about 0) draws a report about a random
// peer, down or not, and schedules the next one until the run is over.
func (w *world) hint(e *event) {
	to, about := e.node, e.about
	if about == 0 {
		if !w.healed || !w.progressDone() {
			w.schedule(&event{at: w.now + 50*ms + w.hrng.Int64N(450*ms), kind: evHint})
		}
		to, about = uint64(1+w.hrng.IntN(len(w.nodes))), uint64(1+w.hrng.IntN(len(w.nodes)))
	}
	n := w.node(to)
	if !n.up || to == about {
		return
	}
	w.tracef("hint %d: %d is down", to, about)
	w.faults["hint"]++
	n.core.PeerDown(about)
	w.pump(n)
}

// pump takes the next Ready if none is being persisted.
func (w *world) pump(n *node) {
	for n.up && n.syncing == nil && n.core.HasReady() {
		rd := n.core.Ready()
		w.inv.readied(n, &rd)
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
	// In request order: the core lists the requests an install cut short
	// in map order (instance.Node.install), and a reply consumes the seed's
	// randomness, so their order must not depend on the process.
	slices.SortFunc(rd.Results, func(a, b instance.Result) int { return cmp.Compare(a.Req, b.Req) })
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
	if w.afterAccept > 0 && m.Type == core.MsgAccept && !from.dead {
		// Crash it once this Ready is out: the Accepts are in flight, the
		// accepted records maybe not yet durable anywhere.
		w.afterAccept--
		from.dead = true // chosen: no other arming or victim() picks it, nothing restarts it
		w.schedule(&event{at: w.now, kind: evDownForGood, node: from.id, why: "right after sending Accepts"})
	}
	if w.leaseCrashArmed && !w.chaosOver && m.Type == core.MsgAccept && !from.dead && hasLease(m.Value) {
		w.leaseCrashArmed = false
		w.schedule(&event{at: w.now, kind: evLeaseCrash, node: from.id})
	}
	// The transport drops a message over its limit, as rpc.Transport does
	// (the core's MaxMessageBytes is that limit).
	w.encBuf = core.AppendMessage(w.encBuf[:0], m)
	if len(w.encBuf) > w.maxMsg {
		w.faults["oversize"]++
		w.tracef("oversize %s: %d bytes, over the %d-byte limit: dropped", m, len(w.encBuf), w.maxMsg)
		return
	}
	if w.blocked[[2]uint64{m.From, m.To}] || w.rng.Float64() < w.dropP {
		return
	}
	copies := 1
	if w.rng.Float64() < w.dupP {
		copies = 2
	}
	for i := 0; i < copies; i++ {
		w.schedule(&event{at: w.now + w.netDelay(), kind: evDeliver, msg: m, dir: w.node(m.From).incarnation})
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
	for _, n := range w.nodes {
		if n.up && n.core.IsMaster() {
			return n
		}
	}
	return nil
}

func hasLease(v core.Value) bool {
	_, ok := lease.HolderIn(v)
	return ok
}

// restartLater restarts n in 50 ms to 2 s, unless it is down for good by then.
func (w *world) restartLater(n *node) {
	w.schedule(&event{at: w.now + 50*ms + w.rng.Int64N(2000*ms), kind: evRestart, node: n.id})
}

// victim picks a voter to crash for good: the master when there is one
// (three times in four), or any voter not down for good yet.
func (w *world) victim() *node {
	if m := w.master(); m != nil && w.rng.IntN(4) > 0 {
		return m
	}
	var live []*node
	for _, n := range w.nodes[:w.voters] {
		if !n.dead {
			live = append(live, n)
		}
	}
	return live[w.rng.IntN(len(live))]
}

// othersHeardAhead reports whether every other voter not down for good is
// up and last heard m announce an applied frontier above its own.
func (w *world) othersHeardAhead(m *node) bool {
	for _, n := range w.nodes[:w.voters] {
		if n == m || n.dead {
			continue
		}
		if !n.up || w.heard[[2]uint64{n.id, m.id}] <= n.core.Applied().Applied {
			return false
		}
	}
	return true
}

// downForGood crashes n (if it is up) and keeps it down until the end.
func (w *world) downForGood(n *node, why string) {
	n.dead = true
	w.dead++
	w.crash(n, "down for good, "+why)
	w.faults["down-for-good"]++
	w.tracef("down for good %d (%s)", n.id, why)
}

func (w *world) injectFault() {
	voters := w.nodes[:w.voters]
	pick := func() *node { return voters[w.rng.IntN(len(voters))] }
	anyNode := func() *node { return w.nodes[w.rng.IntN(len(w.nodes))] }
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
		w.restartLater(n)
	case 1:
		name = "crash-master"
		if w.opt.LeaseCrashes {
			w.leaseCrashArmed = true // see send
		} else if m := w.master(); m != nil {
			w.crash(m, name)
			w.restartLater(m)
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
			if !n.up && !n.dead && !n.refused && !n.removed {
				w.tracef("restart %d", n.id)
				w.start(n)
			}
		}
	}
	w.faults[name]++
	w.tracef("fault %s", name)
}

// heal ends the faults: every link works, every node runs but those down
// for good.
func (w *world) heal() {
	w.chaosOver, w.healed, w.healAt = true, true, w.now
	clear(w.blocked)
	w.dropP, w.dupP, w.longDelayP = 0, 0, 0
	for _, n := range w.nodes {
		if !n.up && !n.dead && !n.refused && !n.removed {
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
		// Every node but those down for good and those that lost their
		// disk and are not members again; a follower whose member is dead
		// too: it catches up from the other voters.
		if !n.dead && !n.lost && !(n.removed && !w.inv.ms.listed(n)) && n.disk.state.NextIndex <= uint64(p.ackedIndex) {
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
		if n.dead {
			st = "down for good"
		} else if n.up {
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
				w.fail("final logs differ at index %d: node %d has %s, others %s", i, n.id, brief(e), brief(canon[i]))
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
