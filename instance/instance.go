// Package instance is the single entry point of the protocol core, the
// paxosd equivalent of etcd-io/raft's RawNode: it ties one node's acceptor,
// proposer, learner and catch-up together, routes every message by its
// instance ID, runs the master lease, and hands back a Ready: records to
// persist, messages to send (some at once, some only after the persist), and
// outcomes of proposals.
//
// It is pure: no goroutines, no clock (time is Tick), no randomness but
// Config.Rand, no I/O but reading durable chosen values through Config.Log.
// Given the same inputs it makes the same outputs.
//
// The contract with the caller, on which safety rests: take a Ready, send its
// Messages, persist its records in one atomic write — synced when MustSync
// says so — and only then send its After messages and deliver its Results,
// and call Advance. The Results of a Ready that need not sync may go before
// its write (MustSync). Take the next Ready only after Advance. The writes
// must reach the disk in the order of the Readies (a crash keeps a prefix of
// them), as a write-ahead journal does.
package instance

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/paxosd/paxosd/acceptor"
	"github.com/paxosd/paxosd/catchup"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/learner"
	"github.com/paxosd/paxosd/lease"
	"github.com/paxosd/paxosd/members"
	"github.com/paxosd/paxosd/proposer"
)

// Durable is the state a node restarts from, as its storage holds it.
type Durable struct {
	Promised idgen.Ballot
	Accepted []core.InstanceValue // open instances (at or above State.Applied)
	State    core.ApplyState
	Dedup    []core.DedupEntry
	// Base is the instance the durable base was taken before
	// (Ready.Base.State.Applied): chosen values below it may be gone.
	Base uint64
}

// Proposal is a client append.
type Proposal struct {
	Req      uint64 // unique among this node's outstanding requests
	Entries  [][]byte
	ClientID uint64 // 0: no exactly-once
	Seq      uint64
	// Expected, when HasExpected, makes the append conditional on its first
	// entry getting index Expected (else core.ErrConflict).
	Expected    uint64
	HasExpected bool
}

// Result is the outcome of a Proposal.
type Result struct {
	Req         uint64
	First, Last uint64
	Duplicate   bool
	Err         error
}

// Ready is what the core asks of its caller.
type Ready struct {
	// Messages may be sent at once: they depend on nothing in this Ready.
	Messages []core.Message
	// Records to persist in one atomic batch (synced if MustSync).
	Promised idgen.Ballot         // the new promise, zero if unchanged
	Accepted []core.InstanceValue // accepted values of open instances
	Chosen   []core.InstanceValue // values of newly applied instances, in order
	Entries  []core.Entry         // user entries of newly applied instances, in index order
	Dedup    []core.DedupEntry    // dedup rows written; their Recent slices never change after (storage keeps them)
	State    *core.ApplyState     // the apply state after this Ready; nil if unchanged
	// Install, when set, replaces the apply state and the whole dedup table
	// with a peer's base before the records above are applied over it (they
	// are all for instances at or after Install.State.Applied). Base is then
	// set too.
	Install *core.Snapshot
	// Base, when set, is the node's new base: the state and dedup table
	// right after a trim applied (or an Install). Persist it whole, in place
	// of the old one; chosen values below Base.State.Applied may then be
	// deleted, and peers behind it are sent the base instead.
	Base *core.Snapshot
	// Staged are user entries of a base being fetched, at or above the
	// applied log's end: store them (they are chosen), though the log does
	// not reach them until an Install.
	Staged []core.Entry
	// After the persist is durable: messages and proposal outcomes.
	After   []core.Message
	Results []Result
}

// MustSync reports whether the Ready's records must be durable before its
// After messages and Results go out: when it holds a promise or accepted
// values (a vote must survive a crash) or messages that wait for them. A
// Ready that only learns chosen values need not be synced: a chosen value
// lives in a quorum's synced accepted records until they have applied it, so
// a crash that loses the local copy only sends the node back to learn it
// again. Its write must still be atomic and ordered before later writes.
// Its Results may be delivered before that write: each outcome rests on
// values chosen (so on a quorum's synced records) or on nothing durable,
// never on this write, which a crash may lose all the same.
func (r *Ready) MustSync() bool {
	return r.Promised != 0 || len(r.Accepted) > 0 || len(r.After) > 0
}

// HasRecords reports whether the Ready holds anything to persist.
func (r *Ready) HasRecords() bool {
	return r.Promised != 0 || r.State != nil || r.Install != nil || r.Base != nil ||
		len(r.Accepted)+len(r.Chosen)+len(r.Entries)+len(r.Dedup)+len(r.Staged) > 0
}

// Status describes the node.
type Status struct {
	ID         uint64
	Role       string // "master", "candidate", "acceptor" or "follower"
	Master     uint64 // the lease holder this node knows of (0: none)
	Phase      string
	Ballot     idgen.Ballot
	Promised   idgen.Ballot
	Applied    uint64 // applied instances
	NextIndex  uint64 // user entries applied (the next index)
	FirstIndex uint64
	InFlight   int
	Waiting    int
	Behind     bool
	// Exactly-once: duplicates answered from the dedup table since start,
	// and clients in it.
	DedupHits    uint64
	DedupClients int
	Counters     Counters
	// LeaseTicks is how many ticks the lease this node counts (its own
	// while master, else the master's) still runs (0: none).
	LeaseTicks uint64
	// Unapplied counts instances learned chosen but not applied yet (a
	// gap below them is still open).
	Unapplied int
	// Members is the membership as applied here (zero when the state
	// holds none: a static follower that has not learned it).
	Members members.History
	// Peers is what this node knows of each peer it learns from: the
	// applied frontier it last reported, and whether it was heard from
	// recently (the catch-up Live bound).
	Peers []PeerProgress
}

// PeerProgress is a peer's applied frontier as last reported, and whether
// it was heard from recently.
type PeerProgress struct {
	ID, Applied uint64
	Live        bool
}

// Counters count this node's protocol events since it started.
type Counters struct {
	Elections     uint64 // phase 1s started
	PhaseTimeouts uint64 // phase 1s abandoned: no quorum of promises in time
	Behind        uint64 // phase 1s ended: an acceptor had applied past their start
	Outbid        uint64 // phases ended by a higher ballot
	AcceptsResent uint64 // Accepts sent again for want of a quorum
}

// Node is one node's protocol core.
type Node struct {
	cfg        Config
	id         uint64
	rules      members.Rules
	voters     []uint64          // every voter of the configurations deciding open instances
	quorums    [][]uint64        // the voter sets a phase needs a majority of each of
	voter      bool              // this node votes: a voter in one of those configurations, with its incarnation
	slot       uint64            // its ballot slot while it votes
	member     bool              // listed in the newest configuration
	wasMember  bool              // listed in one since this core started: no longer listed means removed
	target     uint64            // a follower: the member it follows
	lastFollow uint64            // a follower: when it last asked its member to push
	followers  map[uint64]uint64 // a member: followers that asked for pushes -> when they last asked
	now        uint64
	counters   Counters
	yieldUntil uint64 // proposer.PrepareTimeout after this node last promised or accepted another proposer's ballot
	wall       uint64 // the runtime's wall clock (Unix ms), for lease commands
	epoch      uint64 // random per incarnation: tells the holder its own lease proposals apart
	acc        *acceptor.Acceptor
	prop       *proposer.Proposer
	learn      *learner.Learner
	cu         *catchup.Catchup
	commitTo   []uint64 // voters to send commits to

	lease         *lease.View // the lease in the log, as this node counts it
	guard         lease.Guard // the acceptor's lease guard
	handoverTo    uint64      // as the master: hand the lease to this voter when no lease is in flight
	electionArmed bool
	electionAt    uint64

	reqs       map[uint64]bool     // outstanding proposals
	byInstance map[uint64][]uint64 // instance -> proposals placed there

	catchupTokens int64                   // bytes of catch-up this node may still serve
	deferredLearn map[uint64]core.Message // catch-up requests waiting for budget, one per peer

	rd             Ready
	stateChanged   bool
	commits        []proposer.Chosen // instances this node saw chosen at its ballot, to announce (Value unused)
	commitsDue     bool              // commits are held and a tick came since: announce them in the next Ready
	local          []core.Message
	readyApplied   uint64
	durableApplied uint64 // applied frontier as of the last Advance: what Log can serve
	readyBase      uint64
	durableBase    uint64 // the base as of the last Advance: Log holds chosen values from there on
}

// New returns a node restored from its durable state.
func New(cfg Config, d Durable) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, id: cfg.ID, epoch: cfg.Rand.Uint64() | 1, reqs: map[uint64]bool{}, byInstance: map[uint64][]uint64{}}
	// A change chosen in instance i decides from i + ChangeDelay on: no
	// node proposes or accepts an instance ChangeDelay or more past its
	// applied frontier (MaxAhead is at most that), so whoever proposes or
	// accepts an instance has applied every change that decides it
	// (docs/protocol.md §10).
	n.rules = members.Rules{Delay: ChangeDelay, K: cfg.K, PlantSlotReuse: cfg.Bug == BugSlotReuse}
	if cfg.Bug == BugChangeAtOnce {
		n.rules.Delay = 1
	}
	n.followers = map[uint64]uint64{}
	n.deferredLearn = map[uint64]core.Message{}
	for _, f := range cfg.Followers {
		if f.ID == cfg.ID {
			n.target = f.Target
		}
	}
	n.learn = learner.New(d.State, d.Dedup, cfg.MaxAhead)
	n.learn.SetMembershipRules(n.rules)
	n.learn.SetMembers(genesis(cfg))
	if err := slotsBelow(n.learn.State().Members, cfg.K); err != nil {
		return nil, err
	}
	// A directory the cluster was created with was a member: if the
	// configuration no longer lists it, it was removed (also after a
	// restart). A directory that joined is a member once it applied the
	// change that added it.
	n.wasMember = !cfg.Joined && slices.ContainsFunc(cfg.Members, func(m Member) bool { return m.ID == cfg.ID })
	n.learn.SetClientLimits(learner.Limits{ClientTTL: cfg.ClientTTLMillis, ClientRetry: cfg.ClientRetryMillis, MaxClients: cfg.MaxClients, LogTimeStep: cfg.LogTimeStepMillis})
	if cfg.Bug == BugSkipDedup {
		n.learn.PlantSkipDedup()
	}
	if cfg.Bug == BugLogTimeJump {
		n.learn.PlantLogTimeJump()
	}
	if cfg.Bug == BugDedupLatestOnly {
		n.learn.PlantDedupLatestOnly()
	}
	n.acc = acceptor.New(d.Promised, d.Accepted, cfg.MaxAhead)
	if cfg.Bug == BugAcceptBelowPromise {
		n.acc.PlantAcceptBelowPromise()
	}
	n.cu = catchup.New(catchup.Config{
		Interval: cfg.LearnInterval, Timeout: 4 * cfg.PhaseTimeout,
		Grace: cfg.PhaseTimeout, Slack: uint64(cfg.Window), Batch: cfg.CatchupBatch,
		Live: 3 * cfg.LearnInterval, Stall: 3*cfg.LearnInterval + 8*cfg.PhaseTimeout,
		CountDeadPeers: cfg.Bug == BugBehindDeadPeer,
	})
	n.lease = lease.NewView(lease.Config{Ticks: cfg.LeaseTicks, Margin: cfg.LeaseMargin}, cfg.ID, n.epoch)
	if cfg.Bug == BugReproposedLease {
		n.lease.PlantKeepOwn()
	}
	if cfg.Bug == BugHandoverKeepsLease {
		n.lease.PlantKeepOnHandover()
	}
	if cfg.Bug == BugGuardOldLease {
		n.guard.PlantAnyOrder()
	}
	if d.State.LeaseHolder != 0 {
		// We do not know when the lease was last renewed: assume just now.
		n.lease.Restore(0)
	}
	// The leases applied and accepted before the restart guard a full lease
	// from now (lease.Guard.Restore). Every node keeps the guard, voter or
	// not: a follower promoted to voter guards the leases it applied.
	n.guard.Restore(0, cfg.LeaseTicks, d.State.LeaseHolder, d.Accepted)
	n.reconfigure()
	n.readyApplied, n.durableApplied = d.State.Applied, d.State.Applied
	n.readyBase, n.durableBase = d.Base, d.Base
	return n, nil
}

// genesis is the membership of a new cluster: the voters of cfg.Members,
// with their slots, deciding every instance. Members the cluster was
// created with carry incarnation 0: their peers learn their directories'
// incarnations on first contact (the runtime's check), and a member added
// later carries its own.
func genesis(cfg Config) members.History {
	c := members.Config{}
	for _, m := range slices.SortedFunc(slices.Values(cfg.Members), func(a, b Member) int { return cmp.Compare(a.ID, b.ID) }) {
		c.Members = append(c.Members, members.Member{ID: m.ID, Addr: m.Addr, Role: members.Voter, Slot: m.Slot})
		c.NextSlot = max(c.NextSlot, m.Slot+1)
	}
	return members.NewHistory(c, 0)
}

// slotsBelow refuses a membership (from the durable state) that gives a
// voter a ballot slot the stride k does not have: its proposer could not
// be built (idgen), and the state was written with another K.
func slotsBelow(h members.History, k uint64) error {
	cfgs := []members.Config{h.Cur}
	if h.Next != nil {
		cfgs = append(cfgs, *h.Next)
	}
	for _, c := range cfgs {
		for _, m := range c.Members {
			if m.Role == members.Voter && m.Slot >= k {
				return fmt.Errorf("instance: the membership gives voter %d slot %d, beyond the stride K=%d", m.ID, m.Slot, k)
			}
		}
	}
	return nil
}

// mayVote reports whether this node may vote as m: m names this
// directory's incarnation, or none while the directory is one the cluster
// was created with.
func (n *Node) mayVote(m members.Member) bool {
	// Incarnation 0 names a directory the cluster was created with, never
	// one that joined, even one whose own incarnation was left 0.
	return m.Role == members.Voter && n.isMe(m)
}

// isMe reports whether m, a member with this node's ID, is this node's
// directory: it names this directory's incarnation, or none while the
// directory is one the cluster was created with.
func (n *Node) isMe(m members.Member) bool {
	return m.Incarnation != 0 && m.Incarnation == n.cfg.Incarnation || m.Incarnation == 0 && !n.cfg.Joined
}

// Removed reports whether this node was a member and no configuration
// deciding open instances, nor the newest, lists it any more (Status's role
// "removed").
func (n *Node) Removed() bool { return n.wasMember && !n.member }

// Departed reports whether this node is removed and may stop: a majority
// of the voters of the configuration in effect reported that they applied
// the instance it took effect at. Until then the removed node serves
// catch-up: a voter that has not learned the last instances chosen before
// the removal took effect needs the old configuration, this node's vote
// included, to choose anything, and only learning them ends that; the
// node that stopped at once could leave the others stuck for good (found
// by the simulator: a removal, then another voter down for good).
func (n *Node) Departed() bool {
	if !n.Removed() {
		return false
	}
	h := n.learn.State().Members
	if _, pending := h.Pending(); pending {
		return false
	}
	at, count := h.CurFrom, 0
	for _, v := range h.Cur.Voters() {
		if f, _ := n.cu.Frontier(n.now, v); f >= at {
			count++
		}
	}
	return count >= h.Cur.Quorum()
}

// reconfigure makes the node's roles follow the membership it applied: who
// it sends to and learns from, the voter sets a phase needs, and whether it
// votes. A proposer that now needs a majority of a voter set its phase 1
// did not gather steps down (a lease holder runs phase 1 again at once).
func (n *Node) reconfigure() {
	h := n.learn.State().Members
	cfgs := h.ForPrepare(n.learn.Applied())
	var voters []uint64
	var quorums [][]uint64
	voting, slot := false, uint64(0)
	for _, c := range cfgs {
		vs := c.Voters()
		quorums = append(quorums, vs)
		for _, v := range vs {
			if !slices.Contains(voters, v) {
				voters = append(voters, v)
			}
		}
		if m, ok := c.Get(n.id); ok && n.mayVote(m) {
			voting, slot = true, m.Slot
		}
	}
	slices.Sort(voters)
	// Listed as this directory: a node that joined replays the log from
	// the start, and an earlier directory with its ID may be added and
	// removed there before its own addition.
	// And listed until a removal takes effect, not once it is chosen: the
	// configuration before it still decides instances up to then, and may
	// need this node's vote to choose them (the simulator found a cluster
	// stuck for good, a removed voter gone while its vote was needed).
	n.member = false
	for _, c := range append(cfgs, h.Latest()) {
		if mm, ok := c.Get(n.id); ok && n.isMe(mm) {
			n.member = true
		}
	}
	n.wasMember = n.wasMember || n.member
	grown := false
	for _, q := range quorums {
		if !slices.ContainsFunc(n.quorums, func(o []uint64) bool { return slices.Equal(o, q) }) {
			grown = true
		}
	}
	if n.prop != nil && n.prop.Phase() != proposer.Idle && (grown || !voting || slot != n.slot) {
		n.stepDown()
		n.electionArmed = false // a lease holder resumes at once (maybeElect)
	}
	n.voters, n.quorums = voters, quorums
	if voting && (n.prop == nil || slot != n.slot) {
		floor := n.acc.Promised()
		if n.cfg.Bug == BugBallotReuse && floor > 0 {
			floor-- // the planted off-by-one: NextAbove(promise-1) can be the promise itself
		}
		n.prop = proposer.New(proposer.Config{
			ID: n.id, Window: n.cfg.Window,
			MaxBatchEntries: n.cfg.MaxBatchEntries, MaxBatchBytes: n.cfg.MaxBatchBytes, PhaseTimeout: n.cfg.PhaseTimeout,
		}, idgen.NewGenerator(slot, n.cfg.K, floor))
		if n.cfg.Bug == BugIgnoreAccepted {
			n.prop.PlantIgnoreAccepted()
		}
	}
	n.voter, n.slot = voting, slot
	if n.prop != nil {
		n.prop.SetVoters(voters, quorums)
	}
	n.commitTo = n.commitTo[:0]
	for _, v := range voters {
		if v != n.id {
			n.commitTo = append(n.commitTo, v)
		}
	}
	// Learn from every other member of the configurations in play, and
	// from the member a static follower follows.
	var peers []uint64
	add := func(id uint64) {
		if id != n.id && id != 0 && !slices.Contains(peers, id) {
			peers = append(peers, id)
		}
	}
	add(n.target)
	for _, c := range append(cfgs, h.Latest()) {
		for _, m := range c.Members {
			add(m.ID)
		}
	}
	n.cu.SetPeers(peers)
}

// followTarget is the voter a non-voter asks to push chosen values to it:
// a static follower's member; otherwise the master it knows of, or the
// lowest-ID voter.
func (n *Node) followTarget() uint64 {
	if n.target != 0 {
		return n.target
	}
	if m := n.Master(); m != 0 && m != n.id {
		return m
	}
	for _, v := range n.voters {
		if v != n.id {
			return v
		}
	}
	return 0
}

// ID returns the node's ID.
func (n *Node) ID() uint64 { return n.id }

// Now returns the node's tick count.
func (n *Node) Now() uint64 { return n.now }

// IsMaster reports whether this node is the master: it completed phase 1,
// it holds the lease in the log, and by its own clock the lease has not
// expired, and it is not handing the lease over (TransferMaster). Only the
// master takes proposals and serves linearizable reads.
func (n *Node) IsMaster() bool {
	return n.voter && n.prop.Phase() == proposer.Leading && n.handoverTo == 0 &&
		n.learn.State().LeaseHolder == n.id && n.lease.Held(n.now)
}

// Campaign returns the proposer's phase and ballot and whether this node is
// master: the cheap part of Status, for a runtime that watches for role
// changes after every event.
func (n *Node) Campaign() (phase proposer.Phase, ballot idgen.Ballot, master bool) {
	if !n.voter {
		return proposer.Idle, 0, false
	}
	return n.prop.Phase(), n.prop.Ballot(), n.IsMaster()
}

// Master returns the master this node believes in, 0 if none.
func (n *Node) Master() uint64 {
	st := n.learn.State()
	if st.LeaseHolder == n.id {
		if n.IsMaster() {
			return n.id
		}
		return 0
	}
	if st.LeaseHolder != 0 && n.lease.OtherValid(n.now) {
		return st.LeaseHolder
	}
	return 0
}

// ReadIndex allows a linearizable read: if this node is the master it
// returns the user log length as of now (everything acknowledged is applied
// and below it). A read is linearizable when served from state that has
// applied at least that far.
func (n *Node) ReadIndex() (nextIndex uint64, err error) {
	if n.cfg.Bug == BugStaleRead && n.voter && n.learn.State().LeaseHolder == n.id {
		// The planted bug: the lease in the applied state names this node,
		// so it serves without checking that the lease is still valid by
		// its clock or that it still leads (a deposed master reads stale).
		return n.learn.State().NextIndex, nil
	}
	if !n.IsMaster() {
		return 0, &core.NotMasterError{Master: n.Master()}
	}
	return n.learn.State().NextIndex, nil
}

// Applied returns the applied state.
func (n *Node) Applied() core.ApplyState { return n.learn.State() }

// SetWallClock tells the core the wall-clock time (Unix ms). The master
// writes it into lease commands, which gives every replica the same clock
// for expiring idle clients' dedup rows. It is never used for timing.
func (n *Node) SetWallClock(unixMillis uint64) { n.wall = unixMillis }

// Tick advances the node's clock by one tick.
func (n *Node) Tick() {
	n.now++
	n.commitsDue = len(n.commits) > 0 // held for at most a tick
	n.refillCatchup()
	if !n.voter && (n.lastFollow == 0 || n.now-n.lastFollow >= n.cfg.LearnInterval) {
		n.lastFollow = n.now
		if to := n.followTarget(); to != 0 {
			n.send(core.Message{Type: core.MsgFollow, To: to}, false)
		}
	}
	for _, m := range n.cu.Tick(n.now, n.learn.Applied()) {
		n.send(m, false)
	}
	if n.voter {
		msgs, abandoned := n.prop.Tick(n.now)
		for _, m := range msgs {
			if m.Type == core.MsgAccept {
				n.counters.AcceptsResent++
			}
			n.send(m, false)
		}
		if abandoned {
			n.counters.PhaseTimeouts++
			n.backoff()
		}
	}
	n.settle()
}

// Propose asks the master to append p. The outcome comes in a later Ready's
// Results. A non-master returns a *core.NotMasterError naming the master it
// knows.
func (n *Node) Propose(p Proposal) error {
	if len(p.Entries) == 0 {
		return core.ErrEmpty
	}
	if !n.IsMaster() {
		return &core.NotMasterError{Master: n.Master()}
	}
	if n.reqs[p.Req] {
		return fmt.Errorf("instance: request %d is already outstanding", p.Req)
	}
	c := core.Command{Kind: core.CmdUser, Entries: p.Entries, ClientID: p.ClientID, Seq: p.Seq, Origin: n.id, Epoch: n.epoch, Req: p.Req}
	if p.HasExpected {
		c.Expect = p.Expected + 1
	}
	if c.Size() > n.cfg.MaxCommandBytes {
		// The runtime bounds appends below this; a larger value could make
		// messages that no peer accepts.
		return fmt.Errorf("instance: an append of %d encoded bytes is over MaxCommandBytes %d", c.Size(), n.cfg.MaxCommandBytes)
	}
	if r, ok := n.learn.Answered(c); ok {
		// A retry of an append already applied: answered now, as apply
		// would, not after the queue (see learner.Answered).
		n.rd.Results = append(n.rd.Results, Result{Req: p.Req, First: r.First, Last: r.Last, Duplicate: r.Duplicate, Err: r.Err})
		return nil
	}
	n.reqs[p.Req] = true
	n.prop.Propose(c)
	return nil
}

// ProposeTrim asks the master to drop user entries below before. The
// Result's First is the first index after the trim. A before past the end
// of the log is refused with a *core.TrimPastEndError naming the end: the
// master's applied state holds everything acknowledged (its lease command
// applied after it), so its next index is the log's end, whereas another
// node's may lag. (Apply still clamps a trim to the next index.)
func (n *Node) ProposeTrim(req, before uint64) error {
	if !n.IsMaster() {
		return &core.NotMasterError{Master: n.Master()}
	}
	if end := n.learn.State().NextIndex; before > end {
		return &core.TrimPastEndError{Before: before, End: end}
	}
	if n.reqs[req] {
		return fmt.Errorf("instance: request %d is already outstanding", req)
	}
	n.reqs[req] = true
	n.prop.Propose(core.Command{Kind: core.CmdTrim, Before: before, Origin: n.id, Epoch: n.epoch, Req: req})
	return nil
}

// ErrRemovingMaster refuses a change that removes the master itself: it
// must hand its lease over first (TransferMaster), and the new master
// removes it.
var ErrRemovingMaster = errors.New("instance: the master cannot remove itself: hand the lease over first, then remove it through the new master")

// ProposeChange asks the master to change the membership (members.Change).
// The Result's First is the first instance the change decides. A change
// that cannot take effect is refused before it is proposed, with an error
// that says why: another change is pending, it does not apply to the
// configuration (an unknown ID, a member that exists, the last voter), the
// follower to promote is behind or silent, or the voters heard from
// recently would not make a quorum of the new configuration. A change that
// passes here may still be refused when it applies (another change chosen
// first): the Result's Err then says so, and nothing changed.
func (n *Node) ProposeChange(req uint64, ch members.Change) error {
	if !n.IsMaster() {
		return &core.NotMasterError{Master: n.Master()}
	}
	if n.reqs[req] {
		return fmt.Errorf("instance: request %d is already outstanding", req)
	}
	cmd := core.Command{Kind: core.CmdMember, Change: ch, Origin: n.id, Epoch: n.epoch, Req: req}
	if cmd.Size() > n.cfg.MaxCommandBytes {
		// As Propose: a larger value could make messages no peer accepts.
		return fmt.Errorf("%w: a change of %d encoded bytes is over MaxCommandBytes %d", members.ErrBadChange, cmd.Size(), n.cfg.MaxCommandBytes)
	}
	st := n.learn.State()
	if st.Members.IsZero() {
		return learner.ErrNoMembership
	}
	if ch.Kind == members.Remove && ch.ID == n.id {
		return ErrRemovingMaster
	}
	// Whether the change applies at all first (an unknown ID, a voter to
	// promote), then whether the follower to promote has caught up.
	if err := st.Members.Check(st.Applied, ch, 0, 0, n.rules); err != nil {
		return err
	}
	var lag uint64
	if ch.Kind == members.Promote {
		f, live := n.cu.Frontier(n.now, ch.ID)
		if !live {
			return fmt.Errorf("member %d: %w (not heard from for %d ticks)", ch.ID, members.ErrBehind, n.cfg.LearnInterval*3)
		}
		lag = st.Applied - min(f, st.Applied)
	}
	if err := st.Members.Check(st.Applied, ch, lag, n.rules.Delay/2, n.rules); err != nil {
		return err
	}
	next, _ := st.Members.Settle(st.Applied).Cur.Apply(ch, n.cfg.K)
	live := 0
	for _, v := range next.Voters() {
		if _, ok := n.cu.Frontier(n.now, v); ok || v == n.id {
			live++
		}
	}
	if live < next.Quorum() {
		return fmt.Errorf("%s: %w: %d of its %d voters were heard from recently, a quorum is %d", ch, members.ErrNoQuorum, live, len(next.Voters()), next.Quorum())
	}
	n.reqs[req] = true
	n.prop.Propose(cmd)
	return nil
}

// ErrNoSuccessor: no other voter was heard from recently enough to take the
// master's lease.
var ErrNoSuccessor = errors.New("instance: no other voter is live to take over")

// TransferMaster asks the master to hand its lease to voter to, or, when to
// is 0, to the other voter that has applied the most among those heard from
// within the catch-up Live bound (the lowest ID on a tie). It returns the
// successor. The master stops serving at once (its lease no longer
// counts), proposes a lease naming the successor (as soon as no lease of
// its own is in flight), and steps down when that applies; the successor,
// holding the lease in its applied state, runs phase 1 at once and then
// proposes a lease of its own. Nobody else may take over in between: the
// acceptors that accepted the handover guard the successor. If the
// handover is not chosen, or fails its compare-and-set, the master renews
// its own lease. A successor that never takes over costs what a dead
// master costs: the others wait for its lease to run out.
func (n *Node) TransferMaster(to uint64) (uint64, error) {
	if !n.IsMaster() {
		return 0, &core.NotMasterError{Master: n.Master()}
	}
	if to == n.id {
		return n.id, nil // nothing to do
	}
	// A voter a pending change drops stops voting once it takes effect:
	// holding the lease then, it would leave the others to wait it out.
	h := n.learn.State().Members
	staying := func(v uint64) bool {
		m, ok := h.Latest().Get(v)
		return h.IsZero() || ok && m.Role == members.Voter
	}
	if to != 0 && (!slices.Contains(n.voters, to) || !staying(to)) {
		return 0, fmt.Errorf("instance: node %d is not a voter of the newest configuration; voters are %v", to, h.Latest().Voters())
	}
	if to == 0 {
		var best uint64
		for _, v := range n.voters {
			if f, live := n.cu.Frontier(n.now, v); v != n.id && live && staying(v) && (to == 0 || f > best) {
				to, best = v, f
			}
		}
		if to == 0 {
			return 0, ErrNoSuccessor
		}
	}
	n.handoverTo = to
	n.leaderDuties()
	return to, nil
}

// PeerDown takes a failure detector's report that peer is down: a hint for
// catch-up and for this node's view of who is live (which voter a master
// hands over to, whether a change leaves a live quorum), withdrawn by the
// peer's next message. Leases and quorums never read it, so a false report
// costs no safety (catchup.Catchup.PeerDown).
func (n *Node) PeerDown(peer uint64) {
	if peer == n.id {
		return
	}
	n.cu.PeerDown(peer)
	if n.cfg.Bug == BugHintEndsLease && n.learn.State().LeaseHolder == peer {
		n.guard.PlantForget(peer)
		n.lease.PlantForgetOther()
	}
}

// Step feeds a message from a peer.
func (n *Node) Step(m core.Message) error {
	if m.To != n.id {
		return fmt.Errorf("instance: message for %d stepped into %d", m.To, n.id)
	}
	if m.Type < core.MsgPrepare || m.Type > core.MaxMsgType {
		return fmt.Errorf("instance: unknown message type %d", m.Type)
	}
	n.step(m)
	n.settle()
	return nil
}

func (n *Node) step(m core.Message) {
	if m.From != n.id {
		n.cu.Observe(n.now, m.From, m.Committed)
		if m.Type == core.MsgAccept || m.Type == core.MsgCommit {
			n.cu.SetMaster(n.now, m.From) // only a proposer sends these
		}
	}
	if n.voter {
		n.prop.Observe(m.Ballot)
	}
	applied := n.learn.Applied()
	switch m.Type {
	case core.MsgPrepare:
		if !n.voter {
			return
		}
		if n.guard.Refuses(n.now, m.From) {
			// Refuse without promising: the lease we accepted is still on.
			n.send(core.Message{Type: core.MsgPromise, To: m.From, Ballot: m.Ballot, Instance: m.Instance, Reject: true, Promised: n.acc.Promised()}, false)
			return
		}
		limit := n.cfg.CatchupBytes
		if n.cfg.Bug == BugUnboundedPromise {
			limit = 0
		}
		reply, changed := n.acc.Prepare(m, applied, limit)
		if changed {
			n.rd.Promised = n.acc.Promised()
			n.outbidBy(n.acc.Promised())
		}
		if !reply.Reject {
			n.heardProposer(m.From)
		}
		reply.To = m.From
		n.send(reply, true)
	case core.MsgPromise:
		if !n.voter {
			return
		}
		outcome, msgs := n.prop.OnPromise(n.now, m)
		if outcome == proposer.PromiseLeading {
			n.lease.Refound(n.now, n.prop.Refound())
			n.lease.Reproposed(msgs)
		}
		for _, a := range msgs {
			n.send(a, false)
		}
		switch outcome {
		case proposer.PromiseBehind:
			n.counters.Behind++
			n.backoff()
		case proposer.PromiseOutbid:
			n.counters.Outbid++
			n.backoff()
		}
	case core.MsgAccept:
		if !n.voter {
			return
		}
		reply, rec, changed := n.acc.Accept(m, applied)
		if changed {
			n.rd.Promised = n.acc.Promised()
			n.outbidBy(n.acc.Promised())
		}
		if rec != nil {
			n.rd.Accepted = append(n.rd.Accepted, *rec)
		}
		if !reply.Reject {
			n.guard.Accepted(n.now, n.cfg.LeaseTicks, m.Ballot, m.Instance, m.Value)
			n.lease.Accepted(n.now, m.Instance, m.Ballot, m.Value)
			if rec != nil { // a first acceptance, not a resend
				n.heardProposer(m.From)
			}
		}
		reply.To = m.From
		n.send(reply, true)
	case core.MsgAccepted:
		if !n.voter {
			return
		}
		chosen, outbid := n.prop.OnAccepted(m)
		if outbid {
			n.counters.Outbid++
			n.stepDown()
			n.backoff()
		}
		if chosen != nil {
			n.commits = append(n.commits, proposer.Chosen{Instance: chosen.Instance, Ballot: chosen.Ballot})
			n.learnValue(chosen.Instance, chosen.Value)
		}
	case core.MsgCommit:
		if !n.voter {
			return
		}
		// Learn without transfer: an accepted value at the committed ballot
		// is the value chosen (one value per ballot per instance).
		for i := max(m.Instance, applied); i < m.End && i < applied+n.cfg.MaxAhead; i++ {
			if iv, ok := n.acc.Accepted(i); ok && iv.Ballot == m.Ballot {
				n.learnValue(i, iv.Value)
			}
		}
	case core.MsgProbe:
		n.send(core.Message{Type: core.MsgProbeResp, To: m.From}, false)
	case core.MsgFollow:
		if n.voter && !slices.Contains(n.voters, m.From) {
			n.followers[m.From] = n.now
		}
	case core.MsgProbeResp:
	case core.MsgLearnReq, core.MsgSnapReq:
		n.serveLearn(m)
	case core.MsgLearnResp:
		ended := m.End != 0 && n.cu.OnResponse(n.now, m.From, m.After, len(m.Entries) == 0 && !m.Reject)
		if m.Reject {
			if ended { // a late refusal says nothing of the request outstanding
				n.cu.NeedBase(m.From, n.learn.State().NextIndex)
			}
			return
		}
		for _, e := range m.Entries {
			n.learnValue(e.Instance, e.Value)
		}
	case core.MsgSnapResp:
		stage, base := n.cu.OnChunk(m, n.learn.Applied(), n.learn.State().NextIndex)
		n.rd.Staged = append(n.rd.Staged, stage...)
		if base != nil {
			n.install(*base)
		}
	}
}

// serveLearn answers a catch-up request (LearnReq or SnapReq) from durable
// chosen values or the durable base only. With a catch-up rate set, a
// request that finds no budget waits (one per peer) for a later tick: a peer
// catching up never takes more than its share of this node's disk and links.
func (n *Node) serveLearn(m core.Message) {
	limit := n.cfg.CatchupBytes
	if n.cfg.CatchupBytesPerTick > 0 {
		if n.catchupTokens <= 0 {
			n.deferredLearn[m.From] = m
			return
		}
		limit = min(limit, int(n.catchupTokens))
	}
	if m.Type == core.MsgSnapReq {
		n.serveBase(m, limit)
		return
	}
	reply := core.Message{Type: core.MsgLearnResp, To: m.From, Instance: m.Instance, End: max(m.End, m.Instance+1), After: m.After}
	if m.Instance < n.durableBase {
		// Gone here since a trim: the asker must fetch the base.
		reply.Reject, reply.End = true, n.durableBase
		n.send(reply, false)
		return
	}
	to := min(m.End, n.durableApplied, m.Instance+n.cfg.CatchupBatch)
	if m.Instance < to {
		vals, err := n.cfg.Log.Chosen(m.Instance, to, limit)
		if err != nil {
			return // the store failed; the asker times out and goes elsewhere
		}
		reply.Entries = vals
		for _, v := range vals {
			n.catchupTokens -= int64(v.Value.Size())
		}
	}
	n.send(reply, false)
}

// serveBase answers a SnapReq with a chunk of the durable base.
func (n *Node) serveBase(m core.Message, limit int) {
	ch, err := n.cfg.Log.Snapshot(m.Instance, m.End, m.After, 0, limit)
	if err != nil {
		return // the store failed; the asker times out and goes elsewhere
	}
	n.catchupTokens -= int64(ch.Size())
	n.send(core.Message{Type: core.MsgSnapResp, To: m.From, Instance: m.Instance, End: m.End, After: m.After, Snap: &ch}, false)
}

// install replaces the applied state with a peer's base (fetched whole, and
// ahead of this node). Records of this Ready for instances below it are
// superseded, except user entries, which are kept as staged. Proposals this
// node placed below it can no longer be told apart from others' values.
func (n *Node) install(s core.Snapshot) {
	if s.State.Applied <= n.learn.Applied() {
		return
	}
	if n.cfg.Bug == BugBaseWithoutDedup {
		s.Dedup = nil
	}
	if s.State.Members.IsZero() {
		// A base taken before membership was replicated: no change was
		// ever applied, so the membership is still the cluster's first.
		s.State.Members = n.learn.State().Members
	}
	n.learn.Install(s)
	n.stateChanged = true
	n.rd.Install, n.rd.Base = &s, &s
	n.rd.Staged = append(n.rd.Staged, n.rd.Entries...)
	n.rd.Chosen, n.rd.Entries, n.rd.Dedup = nil, nil, nil
	below := make([]uint64, 0, len(n.byInstance))
	for i := range n.byInstance {
		if i < s.State.Applied {
			below = append(below, i)
		}
	}
	slices.Sort(below) // results in instance order, so that a run replays the same
	for _, i := range below {
		for _, req := range n.byInstance[i] {
			if n.reqs[req] {
				delete(n.reqs, req)
				n.rd.Results = append(n.rd.Results, Result{Req: req, Err: core.ErrUnknownOutcome})
			}
		}
		delete(n.byInstance, i)
	}
	// As after a restart: the lease in the base was renewed we know not
	// when, so count it from now; our own lease, if any, is not ours to use.
	n.lease.Restore(n.now)
	if s.State.LeaseHolder != 0 {
		// Likewise the guard: the base's lease may still run. It was
		// chosen below the base's Applied (instances below it are
		// applied), not in it: a lease chosen in instance Applied, the
		// first this node applies after the base, is a later one and must
		// move the guard (lease.Guard.Applied leaves a guard of the same
		// instance alone).
		n.guard.Applied(n.now, n.cfg.LeaseTicks, s.State.Applied-1, s.State.LeaseHolder)
	}
	if n.voter {
		n.prop.ForgetBelow(s.State.Applied)
	}
	n.reconfigure()
	for n.learn.Ready() {
		n.apply(n.learn.ApplyNext())
	}
}

// refillCatchup adds a tick's catch-up budget (up to one tick's worth of
// burst beyond it) and serves requests that waited for it.
func (n *Node) refillCatchup() {
	if n.cfg.CatchupBytesPerTick == 0 {
		return
	}
	n.catchupTokens = min(n.catchupTokens+int64(n.cfg.CatchupBytesPerTick), 2*int64(n.cfg.CatchupBytesPerTick))
	if len(n.deferredLearn) == 0 || n.catchupTokens <= 0 {
		return
	}
	peers := make([]uint64, 0, len(n.deferredLearn))
	for p := range n.deferredLearn {
		peers = append(peers, p)
	}
	slices.Sort(peers)
	for _, p := range peers {
		m := n.deferredLearn[p]
		delete(n.deferredLearn, p)
		n.serveLearn(m)
	}
}

// learnValue records a chosen value and applies what became contiguous.
func (n *Node) learnValue(i uint64, v core.Value) {
	if !n.learn.Learn(i, v) {
		return
	}
	if n.voter {
		n.prop.Forget(i)
	}
	for n.learn.Ready() {
		n.apply(n.learn.ApplyNext())
	}
}

func (n *Node) apply(a learner.Applied) {
	n.stateChanged = true
	n.rd.Chosen = append(n.rd.Chosen, core.InstanceValue{Instance: a.Instance, Value: a.Value})
	n.rd.Entries = append(n.rd.Entries, a.Entries...)
	n.rd.Dedup = append(n.rd.Dedup, a.Dedup...)
	for _, r := range a.Results {
		if r.Origin == n.id && r.Epoch == n.epoch && n.reqs[r.Req] {
			delete(n.reqs, r.Req)
			n.rd.Results = append(n.rd.Results, Result{Req: r.Req, First: r.First, Last: r.Last, Duplicate: r.Duplicate, Err: r.Err})
		}
	}
	for _, req := range n.byInstance[a.Instance] {
		if n.reqs[req] {
			// Our command was placed here but another value was chosen.
			delete(n.reqs, req)
			n.rd.Results = append(n.rd.Results, Result{Req: req, Err: core.ErrDropped})
		}
	}
	delete(n.byInstance, a.Instance)
	if a.Trimmed {
		// The new base: peers behind it are sent it instead of the values
		// below it, which storage may now delete.
		b := n.learn.Snapshot()
		n.rd.Base = &b
	}
	for _, lc := range a.Leases {
		n.lease.Applied(n.now, a.Instance, lc.Holder, lc.Epoch, lc.Start, lc.OK)
		if lc.OK {
			n.guard.Applied(n.now, n.cfg.LeaseTicks, a.Instance, lc.Holder)
			if lc.Holder != n.id && n.prop != nil {
				n.prop.OtherLeads()
			}
		}
	}
	// A lease the guard follows, accepted in this instance for another
	// holder and not chosen here, never will be (lease.Guard.Decided).
	n.guard.Decided(n.now, n.cfg.LeaseTicks, a.Instance+1, n.learn.State().LeaseHolder)
	if a.Members {
		n.reconfigure()
	}
}

// send routes a message: to this node at once (in memory), to peers now or
// after the persist.
func (n *Node) send(m core.Message, afterPersist bool) {
	m.From = n.id
	if m.To == n.id {
		n.local = append(n.local, m)
		return
	}
	m.Committed = n.learn.Applied()
	if afterPersist && n.cfg.Bug != BugReplyBeforePersist {
		n.rd.After = append(n.rd.After, m)
	} else {
		n.rd.Messages = append(n.rd.Messages, m)
	}
}

// settle runs everything an input set in motion: messages to self, master
// duties, elections.
func (n *Node) settle() {
	for len(n.local) > 0 {
		m := n.local[0]
		n.local = n.local[1:]
		m.Committed = n.learn.Applied()
		n.step(m)
	}
	n.local = nil
	for _, m := range n.cu.Maybe(n.now, n.learn.Applied()) {
		n.send(m, false)
	}
	if !n.voter {
		return
	}
	if n.prop.Phase() == proposer.Leading {
		applied := n.learn.Applied()
		n.prop.ForgetBelow(applied)
		if n.prop.Next() < applied {
			// Instances we never proposed were chosen: a higher ballot is
			// about, and our phase 1 no longer covers the log's end.
			n.counters.Outbid++
			n.stepDown()
			n.backoff()
		} else {
			n.leaderDuties()
		}
	}
	n.maybeElect()
	for len(n.local) > 0 { // an election sends Prepare to self
		m := n.local[0]
		n.local = n.local[1:]
		m.Committed = n.learn.Applied()
		n.step(m)
	}
	n.local = nil
}

// leaderDuties keeps the lease: step down for a valid lease held by another,
// otherwise propose a lease (take over or renew) when due.
func (n *Node) leaderDuties() {
	st := n.learn.State()
	if st.LeaseHolder != n.id && st.LeaseHolder != 0 && n.lease.OtherValid(n.now) {
		if !n.lease.WaitOut(n.now) {
			n.stepDown()
		}
		return
	}
	if n.prop.Next() >= st.Applied+n.rules.Delay {
		// No instance Delay or more past the applied frontier: a change
		// not yet applied here may decide it (after a phase 1 that found
		// values far ahead; lease proposals wait until the log moves).
		return
	}
	if n.handoverTo != 0 {
		if n.lease.InFlight() {
			return // after our lease in flight applies
		}
		start, epoch := n.lease.Proposing(n.now)
		i, msgs := n.prop.ProposeValue(n.now, core.Value{Commands: []core.Command{{
			Kind: core.CmdLease, Holder: n.handoverTo, Prev: st.LeaseVersion, Epoch: epoch, Start: start, Wall: n.wall,
		}}})
		n.lease.HandedOver(i)
		n.handoverTo = 0
		for _, m := range msgs {
			n.send(m, false)
		}
		return
	}
	if !n.lease.Due(n.now, st.Applied, st.LeaseHolder == n.id) {
		return
	}
	start, epoch := n.lease.Proposing(n.now)
	_, msgs := n.prop.ProposeValue(n.now, core.Value{Commands: []core.Command{{
		Kind: core.CmdLease, Holder: n.id, Prev: st.LeaseVersion, Epoch: epoch, Start: start, Wall: n.wall,
	}}})
	for _, m := range msgs {
		n.send(m, false)
	}
}

// eligible reports whether this node may try to become master: no one holds
// a lease it believes valid.
func (n *Node) eligible() bool {
	if n.guard.Refuses(n.now, n.id) {
		// Our own acceptor would refuse our Prepare: our ballot would leave
		// without our own durable promise of it.
		return false
	}
	h := n.learn.State().LeaseHolder
	return h == 0 || h == n.id || !n.lease.OtherValid(n.now)
}

// heardProposer notes that this node's acceptor just promised or accepted
// the ballot of proposer from: that proposer's phase is the newest one here.
// It yields for as long as its own phase 1 would wait for promises
// (proposer.PrepareTimeout): PhaseTimeout, longer while phase 1s keep
// failing on slow disks. Its promise reaches that proposer only after its
// own sync; a yield of PhaseTimeout, counted from the Prepare, ended
// before it, and each node's Prepare outbid the phase it had promised, in
// turn: 12 to 64 s to a master with syncs of 0.6 s (TestSlowDiskElectsMaster).
func (n *Node) heardProposer(from uint64) {
	if from != n.id {
		n.yieldUntil = n.now + n.prop.PrepareTimeout()
	}
}

// yielding reports whether another proposer's phase is under way: this
// node promised or accepted its ballot lately (heardProposer; every piece of
// a long phase 1, every Accept of a phase 2 counts). A phase 1 started now
// would outbid it, and a phase 1 over a window of large values takes
// longer than the election jitter: the two would outbid each other in
// turn. Once the other falls silent for that long (it died, or was
// outbid and backs off), the election timer is armed anew.
func (n *Node) yielding() bool {
	return n.now < n.yieldUntil && n.learn.State().LeaseHolder != n.id
}

func (n *Node) maybeElect() {
	if n.prop.Phase() != proposer.Idle || !n.eligible() || n.yielding() || n.cu.Behind(n.now, n.learn.Applied()) {
		if n.prop.Phase() == proposer.Idle {
			n.electionArmed = false
		}
		return
	}
	if !n.electionArmed {
		n.electionArmed, n.electionAt = true, n.now+1+n.cfg.Rand.Uint64N(n.cfg.ElectionJitter)
		if n.learn.State().LeaseHolder == n.id {
			n.electionAt = n.now // the holder resumes at once
		}
	}
	if n.now < n.electionAt {
		return
	}
	n.electionArmed = false
	n.counters.Elections++
	for _, m := range n.prop.StartPrepare(n.now, n.learn.Applied()) {
		n.send(m, true) // our own promise must be durable before the ballot leaves
	}
}

// backoff delays the next election by a random time, to break duels.
func (n *Node) backoff() {
	n.electionArmed = true
	n.electionAt = n.now + n.cfg.PhaseTimeout + n.cfg.Rand.Uint64N(n.cfg.ElectionJitter)
}

// outbidBy steps down when our own acceptor promised a higher ballot.
func (n *Node) outbidBy(b idgen.Ballot) {
	if n.prop.Phase() != proposer.Idle && b > n.prop.Ballot() {
		n.counters.Outbid++
		n.stepDown()
		n.backoff()
	}
}

// stepDown stops proposing; waiting proposals fail with NotMaster (they
// were never proposed), placed ones resolve when their instance applies.
func (n *Node) stepDown() {
	n.prop.StepDown()
	n.lease.StepDown()
	n.handoverTo = 0
	for _, c := range n.prop.TakePending() {
		if n.reqs[c.Req] {
			delete(n.reqs, c.Req)
			n.rd.Results = append(n.rd.Results, Result{Req: c.Req, Err: &core.NotMasterError{Master: n.Master()}})
		}
	}
}

// HasReady reports whether Ready has anything.
func (n *Node) HasReady() bool {
	r := &n.rd
	return len(r.Messages)+len(r.After)+len(r.Accepted)+len(r.Chosen)+len(r.Results)+len(r.Staged) > 0 || n.commitsDue ||
		r.Promised != 0 || n.stateChanged || n.canFlush()
}

func (n *Node) canFlush() bool {
	return n.voter && n.IsMaster() && n.prop.Next() < n.learn.Applied()+uint64(n.cfg.Window) && (n.prop.Waiting() > 0 || n.changePending())
}

// changePending reports whether a chosen membership change waits for the
// log to reach the first instance it decides.
func (n *Node) changePending() bool {
	from, ok := n.learn.State().Members.Pending()
	return ok && n.prop.Next() < from
}

// fillToChange proposes no-ops, a window at a time, up to the first
// instance a pending change decides, when no append waits: the change takes
// effect within a few round trips rather than after Delay instances of
// traffic.
func (n *Node) fillToChange() {
	from, ok := n.learn.State().Members.Pending()
	for ok && n.prop.Waiting() == 0 && n.prop.Next() < from && n.prop.Next() < n.learn.Applied()+uint64(n.cfg.Window) {
		_, msgs := n.prop.ProposeValue(n.now, core.Value{Commands: []core.Command{{Kind: core.CmdNoop}}})
		for _, m := range msgs {
			n.send(m, false)
		}
	}
}

// Ready returns what the caller must do now. Proposals waiting at this
// moment are packed into instances here: everything that arrived since the
// last Ready shares one instance (group commit).
func (n *Node) Ready() Ready {
	if n.canFlush() {
		msgs, placed := n.prop.Flush(n.now, n.learn.Applied())
		for _, p := range placed {
			for _, c := range p.Value.Commands {
				n.byInstance[p.Instance] = append(n.byInstance[p.Instance], c.Req)
			}
		}
		for _, m := range msgs {
			n.send(m, false)
		}
		n.fillToChange()
		n.settle() // self-accepts
	}
	if len(n.commits) > 0 && (len(n.rd.Messages) > 0 || n.commitsDue) {
		n.announceCommits()
	}
	if len(n.followers) > 0 {
		n.pushToFollowers()
	}
	if n.stateChanged {
		st := n.learn.State()
		n.rd.State = &st
		if n.voter {
			// Once per Ready, not per applied instance: the acceptor ignores
			// instances below the applied frontier anyway.
			n.acc.Forget(st.Applied)
		}
	}
	rd := n.rd
	n.rd, n.stateChanged = Ready{}, false
	n.readyApplied = n.learn.Applied()
	if rd.Base != nil {
		n.readyBase = rd.Base.State.Applied
	}
	return rd
}

// pushToFollowers sends the values applied in this Ready to every follower
// that asked recently; a follower silent for five learn intervals is
// dropped. Pull catch-up covers any gap. The values are chosen, so they go
// at once, like commit notices.
func (n *Node) pushToFollowers() {
	ids := make([]uint64, 0, len(n.followers))
	for id, seen := range n.followers {
		if n.now-seen > 5*n.cfg.LearnInterval {
			delete(n.followers, id)
			continue
		}
		ids = append(ids, id)
	}
	if len(n.rd.Chosen) == 0 {
		return
	}
	slices.Sort(ids)
	// In pieces of at most CatchupBytes (or one value): a Ready may apply
	// many large values at once, and a message over the transport's bound
	// would be dropped.
	for rest := n.rd.Chosen; len(rest) > 0; {
		k, size := 0, 0
		for k < len(rest) && (k == 0 || size+rest[k].Size() <= n.cfg.CatchupBytes) {
			size += rest[k].Size()
			k++
		}
		for _, f := range ids {
			n.send(core.Message{Type: core.MsgLearnResp, To: f, Instance: rest[0].Instance, Entries: rest[:k]}, false) // chosen values: nothing to wait for
		}
		rest = rest[k:]
	}
}

// Followers returns the followers this member pushes to.
func (n *Node) Followers() int { return len(n.followers) }

// announceCommits tells the other voters which instances were chosen at
// our ballot, as ranges of one ballot each. Each carries the ballot it was
// chosen at, so that what was chosen before a step-down (a handover's lease,
// the last appends) is announced all the same.
//
// They are held until a Ready sends messages anyway, so that they
// ride in the batch of the next Accept: with one client appending, a commit
// announced at once costs every peer a batch, a wake-up and a write of its
// own, on the path of the client's next append. They wait at most a tick
// (Tick sets commitsDue). Only what the other voters serve without the master
// (local reads, tails) sees the wait: a linearizable read is the master's.
func (n *Node) announceCommits() {
	slices.SortFunc(n.commits, func(a, b proposer.Chosen) int { return cmp.Compare(a.Instance, b.Instance) })
	for len(n.commits) > 0 {
		start, end, b := n.commits[0].Instance, n.commits[0].Instance+1, n.commits[0].Ballot
		k := 1
		for k < len(n.commits) && n.commits[k].Instance == end && n.commits[k].Ballot == b {
			end++
			k++
		}
		n.commits = n.commits[k:]
		for _, to := range n.commitTo {
			n.send(core.Message{Type: core.MsgCommit, To: to, Ballot: b, Instance: start, End: end}, false)
		}
	}
	n.commits, n.commitsDue = nil, false
}

// Advance tells the core the last Ready was persisted and sent.
func (n *Node) Advance() { n.durableApplied, n.durableBase = n.readyApplied, n.readyBase }

// Status describes the node.
func (n *Node) Status() Status {
	st := n.learn.State()
	s := Status{ID: n.id, Role: "follower", Master: n.Master(), Phase: "idle", Applied: st.Applied,
		NextIndex: st.NextIndex, FirstIndex: st.FirstIndex, LeaseTicks: n.lease.Remaining(n.now), Unapplied: n.learn.Pending(), Behind: n.cu.Behind(n.now, st.Applied),
		DedupHits: n.learn.DuplicateHits(), DedupClients: n.learn.Clients(), Counters: n.counters, Members: st.Members}
	if n.Removed() {
		s.Role = "removed"
	}
	for _, p := range n.cu.Peers() {
		f, live := n.cu.Frontier(n.now, p)
		s.Peers = append(s.Peers, PeerProgress{ID: p, Applied: f, Live: live})
	}
	if n.voter {
		s.Role, s.Phase, s.Ballot, s.Promised = "acceptor", n.prop.Phase().String(), n.prop.Ballot(), n.acc.Promised()
		s.InFlight, s.Waiting = n.prop.InFlight(), n.prop.Waiting()
		if n.IsMaster() {
			s.Role = "master"
		} else if n.prop.Phase() != proposer.Idle {
			s.Role = "candidate"
		}
	}
	return s
}

// Promised returns the acceptor's current (possibly not yet durable) promise.
func (n *Node) Promised() idgen.Ballot { return n.acc.Promised() }

// AcceptedAt returns what this node's acceptor holds for instance i.
func (n *Node) AcceptedAt(i uint64) (core.InstanceValue, bool) { return n.acc.Accepted(i) }

// Check asserts the core's invariants and returns the first one broken. The
// simulator calls it after every event; a runtime may call it in debug builds.
func (n *Node) Check() error {
	if n.voter {
		if err := n.acc.Check(n.learn.Applied()); err != nil {
			return err
		}
		if n.prop.Phase() != proposer.Idle && !idgen.Owns(n.prop.Ballot(), n.slot, n.cfg.K) {
			return fmt.Errorf("instance: node %d proposes with ballot %d it does not own", n.id, n.prop.Ballot())
		}
		if n.prop.Phase() != proposer.Idle && n.acc.Promised() < n.prop.Ballot() {
			// Its Prepares would leave without its own promise of the ballot,
			// and a restart could issue the ballot again.
			return fmt.Errorf("instance: node %d proposes with ballot %d above its own promise %d", n.id, n.prop.Ballot(), n.acc.Promised())
		}
	}
	if n.durableApplied > n.learn.Applied() {
		return fmt.Errorf("instance: durable applied %d ahead of applied %d", n.durableApplied, n.learn.Applied())
	}
	return nil
}
