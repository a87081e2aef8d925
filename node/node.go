// Package node is the runtime around the protocol core: one goroutine (the
// loop) that ticks the core, steps peer messages, takes proposals, persists
// each Ready with one synced write and then sends and delivers what waited
// for it. Client calls (Append, Read, Tail, Trim, Status) reach the loop
// through channels; reads are served from storage so that a slow reader never
// stalls the loop.
//
// It must never release a reply before the Ready that produced it is
// durable, and never go on after a failed write: a storage error stops the
// node. The one invariant it keeps: the core's contract (instance package
// comment) is followed exactly, in one goroutine.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
	"github.com/paxosd/paxosd/proposer"
	"github.com/paxosd/paxosd/storage"
)

// Transport carries peer messages. rpc.Transport implements it.
type Transport interface {
	Send(m core.Message) // never blocks; may drop
}

// Config configures a node.
type Config struct {
	ID        uint64
	ClusterID uint64
	// Members are the voting members, ID -> address. A follower is not in it.
	Members   map[uint64]string
	Followers []instance.Follower
	DataDir   string
	// MaxEntryBytes bounds one entry (default 1 MiB); MaxAppendBytes bounds
	// one Append call (default 4 MiB).
	MaxEntryBytes  int
	MaxAppendBytes int
	Tick           time.Duration // default 10 ms
	// RetainEntries, when non-zero, makes the master trim the log to about
	// the last RetainEntries entries (it trims when 10% more have piled up).
	RetainEntries uint64
	// RetainBytes, when non-zero, makes the master trim the log to about
	// the newest RetainBytes bytes of entry data, and RetainAge to the
	// entries applied within RetainAge of log time (each trims when 10%
	// more have piled up). Both measure with the store's progress rows
	// (storage.Store.RetainBytes, RetainAge), checked every RetainCheck.
	RetainBytes uint64
	RetainAge   time.Duration
	// RetainCheck is how often the master measures the log for RetainBytes
	// and RetainAge (default 1 s).
	RetainCheck time.Duration
	// Core tunes the protocol; ID, Members, Followers, Rand and Log are
	// filled in by the node.
	Core instance.Config
	// Logger receives the node's events (package event; docs/operations.md,
	// "Logs and events"); the node adds its ID to every line. Nil discards.
	Logger *slog.Logger
	// SlowSyncThreshold: a synced write of one Ready that takes longer is
	// logged (event.SlowFsync, at most once per SlowSyncEvery). Default
	// DefaultSlowSyncThreshold.
	SlowSyncThreshold time.Duration
	// WallClockOffset is added to the wall clock the node gives the core
	// (for lease commands, which age idle clients' dedup rows). It exists
	// for fault tests only: a node whose clock is hours off.
	WallClockOffset time.Duration
	// OnMembers, when set, is called by the loop with the membership the
	// node applied, once at Run and then after every Ready that changed it,
	// once that Ready is durable (the transport and API server follow it).
	// It runs in the loop: it must not block.
	OnMembers func(members.History)
	// MinFreeBytes, when non-zero, is the free space the data directory's
	// file system must keep: below it, Append refuses new entries with a
	// *NoSpaceError before proposing them (master), and the loop declines
	// Accepts that carry user entries (acceptor; see declineAccept).
	// Lease renewals, trims, membership changes and chosen values learned
	// from peers are written regardless: a trim is how space comes back.
	MinFreeBytes uint64
	// DiskFree returns the free bytes of the data directory's file system
	// (default: statfs of DataDir, the bytes an unprivileged user may
	// write). Tests replace it.
	DiskFree func() (uint64, error)
	// Metrics, when set, are the node's Prometheus metrics (NewMetrics).
	Metrics *Metrics
}

// DefaultSlowSyncThreshold is the synced write that counts as slow: the
// master renews its lease (3 s by default) every 1.5 s and each renewal
// waits for synced writes on a quorum, so a sync of 500 ms, a third of that
// gap, threatens the lease, while a healthy disk syncs in milliseconds.
const DefaultSlowSyncThreshold = 500 * time.Millisecond

// SlowSyncEvery bounds how often a slow sync is logged: a disk that stays
// slow makes one line per interval, with the count of the others.
const SlowSyncEvery = 10 * time.Second

// RemovedGrace bounds how long a removed node keeps serving catch-up when
// it does not hear that a majority of the voters left applied past its
// removal.
const RemovedGrace = 30 * time.Second

// Errors callers branch on.
var (
	// ErrRemoved stops a node that a membership change removed, once a
	// majority of the voters left applied past the change (or after
	// RemovedGrace).
	ErrRemoved  = errors.New("node: removed from the cluster by a membership change; its data directory can be deleted")
	ErrStopped  = errors.New("node stopped")
	ErrTooLarge = errors.New("entry too large")
	ErrEmpty    = errors.New("empty append")
	// ErrNoSpace: the data directory's free space is below MinFreeBytes;
	// nothing was proposed. Append returns it as a *NoSpaceError.
	ErrNoSpace = errors.New("no space")
)

// NoSpaceError is ErrNoSpace with the free bytes and the threshold.
type NoSpaceError struct {
	Dir       string
	Free, Min uint64
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("no space: data directory %s has %d bytes free, below --min-free-bytes %d", e.Dir, e.Free, e.Min)
}

// Unwrap makes errors.Is(err, ErrNoSpace) work.
func (e *NoSpaceError) Unwrap() error { return ErrNoSpace }

// StoppedError is what a proposal still waiting when the loop stopped gets:
// it was proposed, so its outcome is unknown (it may be chosen by the
// others, and this node may even have applied it in a write that was
// durable before the failure). It matches ErrStopped and unwraps to why
// the loop stopped as well.
type StoppedError struct{ Cause error }

func (e *StoppedError) Error() string {
	return fmt.Sprintf("node stopped with the proposal in flight, its outcome unknown: %v", e.Cause)
}

// Unwrap returns ErrStopped and the cause.
func (e *StoppedError) Unwrap() []error { return []error{ErrStopped, e.Cause} }

// EntryError names the entry of an append that was refused.
type EntryError struct {
	Index int
	Err   error
}

func (e *EntryError) Error() string { return e.Err.Error() }

// Unwrap returns the reason (ErrEmpty or ErrTooLarge).
func (e *EntryError) Unwrap() error { return e.Err }

// applied is the durable apply state, for reads and tails.
type applied struct {
	next, first uint64
	instance    uint64          // the applied frontier: instances below it are applied
	members     members.History // the membership as of the same state
	changed     chan struct{}   // closed when next, first or instance moves
	// answered is the applied frontier of the last Ready whose answers
	// went before its write (handleReady): a local read waits until
	// instance reaches it, so that the node that acknowledged an append
	// (or a trim) serves what it acknowledged.
	answered uint64
}

// Node is a running node.
type Node struct {
	cfg   Config
	log   *slog.Logger // cfg.Logger with the node's ID
	core  *instance.Node
	store *storage.Store
	tr    Transport

	inbox    chan core.Message
	downs    chan uint64 // failure detector's reports (PeerDown)
	props    chan *proposal
	readIdx  chan chan readIndexReply
	statusCh chan chan instance.Status
	xferCh   chan transferReq
	stop     chan struct{}
	done     chan struct{}
	err      error // why the loop ended

	mu  sync.Mutex
	app applied

	nextReq uint64
	waiting map[uint64]*proposal
	// retaining is the outstanding automatic trim, if any.
	retaining *proposal
	// retainChecked is when retain last measured the log by bytes and age.
	retainChecked time.Time
	// removedAt: when the node found itself removed (zero: it is not).
	removedAt time.Time
	// declined: the instances whose Accepts (carrying user entries) this
	// acceptor declined for want of space, and when it first did.
	declined    map[uint64]time.Time
	declinedLog time.Time // when it last logged a decline
	// space caches the free-space check for one turn of the loop (one
	// event and what drain takes with it), so that a batch of appends and
	// Accepts costs one statfs. turn counts the turns.
	turn  uint64
	space struct {
		turn uint64
		free uint64
		low  bool
	}
	// role, phase and ballot as last seen by watch (events.go).
	role   string
	phase  proposer.Phase
	ballot idgen.Ballot
	// lastMaster is the last master this node knew of (Metrics);
	// knownMaster the one it knows of now (0: none).
	lastMaster, knownMaster uint64
	// counters are the core's counters as of the last role change (watch
	// tells why a phase ended by what moved since).
	counters instance.Counters
	// handoverTo: the voter this master handed its lease to (0: none).
	handoverTo uint64
	// catching: the catch-up in progress (nil: none).
	catching *catchupRun
	// slowSyncs keeps slow sync events to one per SlowSyncEvery.
	slowSyncs *event.Limiter[struct{}]
}

// catchupRun is a catch-up in progress: where and when it started, and the
// bytes of chosen values applied since.
type catchupRun struct {
	from  uint64
	began time.Time
	bytes int
}

type proposal struct {
	p      instance.Proposal
	trim   uint64
	change *members.Change
	result chan instance.Result
	at     time.Time // when the loop proposed it (with Metrics only)
}

type readIndexReply struct {
	next uint64
	err  error
}

// Open opens the data directory and restores the core; Run starts it.
func Open(cfg Config, store *storage.Store, tr Transport) (*Node, error) {
	cfg = withDefaults(cfg)
	d, err := store.Load()
	if err != nil {
		return nil, err
	}
	cc := cfg.Core
	cc.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	cc.Log = store
	// The directory says who this node is: its incarnation, and whether it
	// joined a running cluster (then it votes only where the configuration
	// names its incarnation).
	cc.Incarnation = store.Incarnation()
	_, cc.Joined = store.Joined()
	c, err := instance.New(cc, d)
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg: cfg, log: cfg.Logger.With(event.KeyNode, cfg.ID), core: c, store: store, tr: tr,
		slowSyncs: event.NewLimiter[struct{}](SlowSyncEvery),
		inbox:     make(chan core.Message, 8192), downs: make(chan uint64, 64), props: make(chan *proposal, 1024),
		readIdx: make(chan chan readIndexReply), statusCh: make(chan chan instance.Status), xferCh: make(chan transferReq),
		stop: make(chan struct{}), done: make(chan struct{}),
		nextReq: rand.Uint64() >> 1, waiting: map[uint64]*proposal{}, declined: map[uint64]time.Time{},
	}
	if cfg.Metrics != nil {
		if err := cfg.Metrics.reg.Register(collector{n}); err != nil {
			return nil, fmt.Errorf("node metrics: %w", err)
		}
		cfg.Metrics.initPeers(cfg.ID, cfg.Members)
	}
	st := c.Applied() // the stored state, with the genesis membership if it had none
	n.app = applied{next: st.NextIndex, first: st.FirstIndex, instance: st.Applied, members: st.Members, changed: make(chan struct{})}
	return n, nil
}

// withDefaults fills in what cfg leaves zero, the core's config included
// (all but Rand and Log).
func withDefaults(cfg Config) Config {
	if cfg.RetainCheck == 0 {
		cfg.RetainCheck = time.Second
	}
	if cfg.Tick == 0 {
		cfg.Tick = instance.DefaultTickMillis * time.Millisecond
	}
	if cfg.MaxEntryBytes == 0 {
		cfg.MaxEntryBytes = api.DefaultMaxEntryBytes
	}
	if cfg.MaxAppendBytes == 0 {
		cfg.MaxAppendBytes = max(api.DefaultMaxAppendBytes, cfg.MaxEntryBytes)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SlowSyncThreshold == 0 {
		cfg.SlowSyncThreshold = DefaultSlowSyncThreshold
	}
	if cfg.DiskFree == nil {
		dir := cfg.DataDir
		cfg.DiskFree = func() (uint64, error) { return StatfsFree(dir) }
	}
	if cfg.Core.Window == 0 {
		cfg.Core = instance.DefaultConfig()
	}
	// Every append the node takes fits a command of this size (Append
	// refuses larger ones), which bounds the largest message.
	cfg.Core.MaxCommandBytes = instance.CommandBytesFor(cfg.MaxAppendBytes)
	cfg.Core.ID, cfg.Core.Followers = cfg.ID, cfg.Followers
	cfg.Core.Members = Members(cfg.Members)
	return cfg
}

// MaxMessageBytes is the largest peer message a node with cfg sends: the
// transport must carry messages of this size.
func MaxMessageBytes(cfg Config) int {
	cc := withDefaults(cfg).Core
	return cc.MaxMessageBytes()
}

// Members turns an ID -> address map of the voters a cluster was created
// with into the core's member list: slots are the positions of the IDs in
// sorted order, the same on every node, and each keeps its address (the
// genesis membership records it).
func Members(m map[uint64]string) []instance.Member {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]instance.Member, len(ids))
	for i, id := range ids {
		out[i] = instance.Member{ID: id, Slot: uint64(i), Addr: m[id]}
	}
	return out
}

// Deliver hands a peer message to the loop. It never blocks: when the inbox
// is full the message is dropped, which Paxos tolerates.
func (n *Node) Deliver(m core.Message) {
	select {
	case n.inbox <- m:
	default:
	}
}

// PeerDown hands the loop a failure detector's report (gossip) that peer
// is down: a hint for catch-up and for who counts as live, withdrawn by the
// peer's next message (instance.Node.PeerDown). It never blocks: a report
// that finds the queue full is dropped, which costs only the time the
// node's own Live bound takes to find the same.
func (n *Node) PeerDown(peer uint64) {
	select {
	case n.downs <- peer:
	default:
	}
}

// Run runs the loop until ctx is done, Stop is called or storage fails. It
// returns nil on a clean stop.
func (n *Node) Run(ctx context.Context) error {
	defer close(n.done)
	if n.cfg.OnMembers != nil {
		n.cfg.OnMembers(n.Members())
	}
	if n.core.Removed() {
		n.removedAt = time.Now() // removed before it stopped last time
	}
	tick := time.NewTicker(n.cfg.Tick)
	defer tick.Stop()
	last := time.Now()
	// catchUp ticks the core once per tick of monotonic time since the last
	// one: the core's clock keeps up with real time even when the ticker
	// drops ticks (a busy loop) or the process was paused (SIGSTOP).
	catchUp := func(now time.Time) {
		for now.Sub(last) >= n.cfg.Tick {
			last = last.Add(n.cfg.Tick)
			n.core.Tick()
		}
	}
	for {
		n.turn++
		select {
		case <-ctx.Done():
			n.log.Info(event.NodeStopped, event.KeyReason, context.Cause(ctx).Error())
			n.shutdown(ErrStopped)
			return nil
		case <-n.stop:
			n.log.Info(event.NodeStopped, event.KeyReason, "stop requested")
			n.shutdown(ErrStopped)
			return nil
		case now := <-tick.C:
			n.core.SetWallClock(uint64(now.Add(n.cfg.WallClockOffset).UnixMilli()))
			catchUp(time.Now())
			n.retain()
			n.watchCatchup(now)
			n.slowSyncs.Flush(now)
		case m := <-n.inbox:
			n.step(m)
			n.drain()
		case peer := <-n.downs:
			n.core.PeerDown(peer)
		case p := <-n.props:
			n.propose(p)
			n.drain()
		case ch := <-n.readIdx:
			catchUp(time.Now())
			next, err := n.core.ReadIndex()
			ch <- readIndexReply{next: next, err: err}
		case ch := <-n.statusCh:
			ch <- n.core.Status()
		case r := <-n.xferCh:
			catchUp(time.Now())
			to, err := n.core.TransferMaster(r.to)
			if err == nil {
				n.handoverTo = to
			}
			r.reply <- transferReply{to: to, err: err}
		}
		err := n.handleReady()
		if err == nil && !n.removedAt.IsZero() && (n.core.Departed() || time.Since(n.removedAt) > RemovedGrace) {
			// Removed, and the voters left have what they need from this
			// node (instance.Node.Departed), or it waited long enough.
			err = ErrRemoved
		}
		if err != nil {
			n.log.Error(event.NodeStopped, event.KeyReason, err.Error())
			n.err = err
			n.shutdown(err)
			return err
		}
		n.watch()
	}
}

// drain takes the peer messages and proposals already queued, so that one
// Ready — one write, one fsync — covers all of them (group commit).
func (n *Node) drain() {
	for i := 0; i < 1024; i++ {
		select {
		case m := <-n.inbox:
			n.step(m)
		case p := <-n.props:
			n.propose(p)
		default:
			return
		}
	}
}

func (n *Node) step(m core.Message) {
	if n.declineAccept(m, time.Now()) {
		return
	}
	if err := n.core.Step(m); err != nil {
		n.log.Debug(event.MessageDropped, event.KeyPeer, m.From, event.KeyErr, err)
	}
}

func (n *Node) propose(p *proposal) {
	n.nextReq++
	p.p.Req = n.nextReq
	var err error
	switch {
	case p.change != nil:
		err = n.checkPromote(*p.change)
		if err == nil {
			err = n.core.ProposeChange(p.p.Req, *p.change)
		}
	case p.trim != 0:
		err = n.core.ProposeTrim(p.p.Req, p.trim)
	default:
		// Only the master proposes: a node that is not returns
		// NotMaster (the API server forwards), whatever its own disk.
		if free, low := n.spaceLow(); low && n.core.IsMaster() {
			err = &NoSpaceError{Dir: n.cfg.DataDir, Free: free, Min: n.cfg.MinFreeBytes}
		} else {
			err = n.core.Propose(p.p)
		}
	}
	if err != nil {
		p.result <- instance.Result{Err: err}
		return
	}
	if n.cfg.Metrics != nil {
		p.at = time.Now()
	}
	n.waiting[p.p.Req] = p
}

// checkPromote says, at the master, what is wrong with the ID of a
// promotion before the core asks whether the member is caught up (it would
// call an unknown ID, or a voter, "behind").
func (n *Node) checkPromote(ch members.Change) error {
	if ch.Kind != members.Promote || !n.core.IsMaster() {
		return nil
	}
	switch m, ok := n.core.Applied().Members.Latest().Get(ch.ID); {
	case !ok:
		return fmt.Errorf("member %d: %w", ch.ID, members.ErrUnknownMember)
	case m.Role != members.Follower:
		return fmt.Errorf("member %d is a %s: %w", ch.ID, m.Role, members.ErrNotFollower)
	}
	return nil
}

// retain trims the log when this node is master and the log has grown 10%
// past a retention bound: RetainEntries entries, RetainBytes bytes or
// RetainAge of log time. The trim goes to the highest point any bound
// asks for.
func (n *Node) retain() {
	if n.retaining != nil {
		select {
		case <-n.retaining.result:
			n.retaining = nil
		default:
			return
		}
	}
	if n.cfg.RetainEntries == 0 && n.cfg.RetainBytes == 0 && n.cfg.RetainAge == 0 || !n.core.IsMaster() {
		return
	}
	st := n.core.Applied()
	var before uint64
	if keep := n.cfg.RetainEntries; keep != 0 && st.NextIndex-st.FirstIndex > keep+keep/10 {
		before = st.NextIndex - keep
	}
	if (n.cfg.RetainBytes != 0 || n.cfg.RetainAge != 0) && time.Since(n.retainChecked) >= n.cfg.RetainCheck {
		n.retainChecked = time.Now()
		before = max(before, n.retainPoint(st))
	}
	if before <= st.FirstIndex || before > st.NextIndex {
		return
	}
	p := &proposal{trim: before, result: make(chan instance.Result, 1)}
	n.propose(p)
	n.retaining = p
}

// retainPoint is where RetainBytes and RetainAge would trim the log of
// state st to (0: nowhere yet). It reads the store: the master's own
// progress rows, which are about as fresh as st.
func (n *Node) retainPoint(st core.ApplyState) uint64 {
	var before uint64
	if keep := n.cfg.RetainBytes; keep != 0 {
		b, held, err := n.store.RetainBytes(keep)
		if err != nil {
			n.log.Warn(event.RetainFailed, event.KeyReason, "--retain-bytes", event.KeyErr, err)
		} else if held > keep+keep/10 {
			before = b
		}
	}
	if age := uint64(n.cfg.RetainAge.Milliseconds()); age != 0 && st.LogTime > age+age/10 {
		// Trim only when entries older than 110% of the age exist, then to
		// the age.
		old, err := n.store.RetainAge(st.LogTime - age - age/10)
		if err == nil && old > st.FirstIndex {
			old, err = n.store.RetainAge(st.LogTime - age)
		}
		if err != nil {
			n.log.Warn(event.RetainFailed, event.KeyReason, "--retain-age", event.KeyErr, err)
		} else if old > st.FirstIndex {
			before = max(before, old)
		}
	}
	return before
}

// handleReady follows the core's contract: send Messages, persist, send
// After, deliver Results, Advance.
func (n *Node) handleReady() error {
	for n.core.HasReady() {
		rd := n.core.Ready()
		for _, m := range rd.Messages {
			n.tr.Send(m)
		}
		// The outcomes of a Ready that need not sync go before its write
		// (instance.Ready.MustSync): with one client, the write of the
		// apply is then off the path of its answer.
		early := !rd.MustSync()
		if early {
			if rd.State != nil && len(rd.Results) > 0 {
				n.mu.Lock()
				n.app.answered = max(n.app.answered, rd.State.Applied)
				n.mu.Unlock()
			}
			n.deliver(rd.Results)
		}
		began := time.Now()
		if err := n.store.Save(&rd); err != nil {
			n.log.Error(event.StorageFailure, event.KeyInstance, n.core.Applied().Applied, event.KeyErr, err)
			return fmt.Errorf("persist: %w", err)
		}
		took := time.Since(began)
		if n.cfg.Metrics != nil {
			n.cfg.Metrics.observeReady(&rd, rd.MustSync(), took)
		}
		n.observeReady(&rd, took)
		for _, m := range rd.After {
			n.tr.Send(m)
		}
		if !early {
			n.deliver(rd.Results)
		}
		n.core.Advance()
		if rd.State != nil {
			if changed := n.publish(*rd.State); changed {
				if n.cfg.OnMembers != nil {
					n.cfg.OnMembers(rd.State.Members)
				}
				if n.core.Removed() && n.removedAt.IsZero() {
					n.removedAt = time.Now()
					n.log.Warn(event.Removed, event.KeyInstance, rd.State.Applied, event.KeyReason,
						"serving catch-up until a majority of the voters applied past the removal")
				}
			}
		}
	}
	return nil
}

// deliver hands each result to the proposal waiting for it.
func (n *Node) deliver(results []instance.Result) {
	for _, r := range results {
		if p, ok := n.waiting[r.Req]; ok {
			delete(n.waiting, r.Req)
			if n.cfg.Metrics != nil && r.Err == nil && p.trim == 0 && p.change == nil {
				n.cfg.Metrics.commitSeconds.Observe(time.Since(p.at).Seconds())
			}
			p.result <- r
		}
	}
}

// publish wakes readers, tails and membership waiters waiting for the
// durable state to move. It reports whether the membership changed.
func (n *Node) publish(st core.ApplyState) (membersChanged bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	membersChanged = !sameHistory(st.Members, n.app.members)
	if st.NextIndex == n.app.next && st.FirstIndex == n.app.first && st.Applied == n.app.instance && !membersChanged {
		return false
	}
	n.app.next, n.app.first, n.app.instance, n.app.members = st.NextIndex, st.FirstIndex, st.Applied, st.Members
	close(n.app.changed)
	n.app.changed = make(chan struct{})
	return membersChanged
}

// sameHistory reports whether a and b hold the same configurations.
func sameHistory(a, b members.History) bool {
	sameConfig := func(x, y members.Config) bool {
		return x.NextSlot == y.NextSlot && slices.Equal(x.Members, y.Members)
	}
	if a.CurFrom != b.CurFrom || (a.Next == nil) != (b.Next == nil) || !sameConfig(a.Cur, b.Cur) {
		return false
	}
	return a.Next == nil || a.NextFrom == b.NextFrom && sameConfig(*a.Next, *b.Next)
}

// Members returns the membership as of the durable applied state.
func (n *Node) Members() members.History {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.app.members
}

// ChangeMembers asks this node, if it is the master, to make a membership
// change, and waits until the change is in effect here (this node's
// durable applied frontier reached the first instance the change decides)
// or ctx ends. It returns that instance. A non-master returns a
// *core.NotMasterError; a change that cannot take effect is refused before
// it is proposed (instance.Node.ProposeChange says why, with the members
// package's errors). A ctx that ends after the change was proposed leaves
// its outcome unknown: read the membership to learn it.
func (n *Node) ChangeMembers(ctx context.Context, ch members.Change) (first uint64, err error) {
	r, err := n.submit(ctx, &proposal{change: &ch})
	if err != nil {
		return 0, err
	}
	if err := n.waitInstance(ctx, r.First); err != nil {
		return r.First, fmt.Errorf("waiting for the change to take effect at instance %d: %w", r.First, err)
	}
	return r.First, nil
}

// waitInstance waits until the durable applied frontier reaches i.
func (n *Node) waitInstance(ctx context.Context, i uint64) error {
	for {
		n.mu.Lock()
		cur, ch := n.app.instance, n.app.changed
		n.mu.Unlock()
		if cur >= i {
			return nil
		}
		if ch == nil {
			return ErrStopped
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (n *Node) shutdown(err error) {
	n.slowSyncs.Flush(time.Now().Add(SlowSyncEvery)) // the slow syncs held back: the log ends on them
	for req, p := range n.waiting {
		delete(n.waiting, req)
		p.result <- instance.Result{Err: &StoppedError{Cause: err}}
	}
	n.mu.Lock()
	close(n.app.changed)
	n.app.changed = nil // a stopped node: waiters see nil and give up
	n.mu.Unlock()
}

// Stop stops the loop and waits for it.
func (n *Node) Stop() {
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	<-n.done
}

// Err returns why the loop stopped, nil for a clean stop.
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.err
	default:
		return nil
	}
}

// Done is closed when the loop has stopped.
func (n *Node) Done() <-chan struct{} { return n.done }

// Append appends entries through this node if it is the master. Otherwise it
// returns a *core.NotMasterError naming the master it knows (the API server
// forwards).
// expected, when not nil, makes the append conditional on its first entry
// getting that index (else core.ErrConflict, with the end index in First).
func (n *Node) Append(ctx context.Context, entries [][]byte, clientID, seq uint64, expected *uint64) (instance.Result, error) {
	if len(entries) == 0 {
		return instance.Result{}, ErrEmpty
	}
	total := 0
	for i, e := range entries {
		if len(e) == 0 {
			return instance.Result{}, &EntryError{Index: i, Err: fmt.Errorf("%w: entry %d is empty", ErrEmpty, i)}
		}
		if len(e) > n.cfg.MaxEntryBytes {
			return instance.Result{}, &EntryError{Index: i, Err: fmt.Errorf("%w: entry %d is %d bytes, the limit is %d", ErrTooLarge, i, len(e), n.cfg.MaxEntryBytes)}
		}
		total += len(e)
	}
	if total > n.cfg.MaxAppendBytes {
		return instance.Result{}, fmt.Errorf("%w: %d bytes in one append, the limit is %d", ErrTooLarge, total, n.cfg.MaxAppendBytes)
	}
	p := &proposal{p: instance.Proposal{Entries: entries, ClientID: clientID, Seq: seq}}
	if expected != nil {
		p.p.Expected, p.p.HasExpected = *expected, true
	}
	if n.cfg.Metrics == nil {
		return n.submit(ctx, p)
	}
	began := time.Now()
	r, err := n.submit(ctx, p)
	if err == nil {
		n.cfg.Metrics.appendSeconds.Observe(time.Since(began).Seconds())
	}
	return r, err
}

// Trim asks the master to drop user entries below before.
func (n *Node) Trim(ctx context.Context, before uint64) (instance.Result, error) {
	if before == 0 {
		return instance.Result{}, errors.New("trim: before must be above 0")
	}
	return n.submit(ctx, &proposal{trim: before})
}

func (n *Node) submit(ctx context.Context, p *proposal) (instance.Result, error) {
	p.result = make(chan instance.Result, 1)
	select {
	case n.props <- p:
	case <-ctx.Done():
		return instance.Result{}, ctx.Err()
	case <-n.done:
		return instance.Result{}, ErrStopped
	}
	select {
	case r := <-p.result:
		return r, r.Err
	case <-ctx.Done():
		// The outcome is unknown: the proposal may still be chosen.
		return instance.Result{}, ctx.Err()
	case <-n.done:
		// The loop stopped: it delivered the result of every proposal it
		// had taken before closing done; one it never took stays queued.
		select {
		case r := <-p.result:
			return r, r.Err
		default:
			return instance.Result{}, ErrStopped
		}
	}
}

// ReadIndex confirms this node is the master and returns the log length
// that a linearizable read must see.
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	ch := make(chan readIndexReply, 1)
	select {
	case n.readIdx <- ch:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.done:
		return 0, ErrStopped
	}
	r := <-ch
	return r.next, r.err
}

// Status returns the core's status.
func (n *Node) Status(ctx context.Context) (instance.Status, error) {
	ch := make(chan instance.Status, 1)
	select {
	case n.statusCh <- ch:
	case <-ctx.Done():
		return instance.Status{}, ctx.Err()
	case <-n.done:
		return instance.Status{}, ErrStopped
	}
	return <-ch, nil
}

type transferReq struct {
	to    uint64
	reply chan transferReply
}

type transferReply struct {
	to  uint64
	err error
}

// TransferMaster asks this node, if it is the master, to hand its lease to
// voter to (0: the best caught-up live voter), and returns the successor.
// It returns once the handover is proposed: this node has stopped serving;
// the successor is master once it has run phase 1 and its own lease is
// chosen (poll Status, or AwaitMaster). A non-master returns a
// *core.NotMasterError.
func (n *Node) TransferMaster(ctx context.Context, to uint64) (uint64, error) {
	r := transferReq{to: to, reply: make(chan transferReply, 1)}
	select {
	case n.xferCh <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-n.done:
		return 0, ErrStopped
	}
	rep := <-r.reply
	return rep.to, rep.err
}

// Bounds returns the durable log's first index and next index (one past the
// last entry).
func (n *Node) Bounds() (first, next uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.app.first, n.app.next
}

// WaitApplied waits until the durable log holds index next-1 (next entries)
// or ctx ends. It returns the current next index.
func (n *Node) WaitApplied(ctx context.Context, next uint64) (uint64, error) {
	for {
		n.mu.Lock()
		cur, ch := n.app.next, n.app.changed
		n.mu.Unlock()
		if cur >= next {
			return cur, nil
		}
		if ch == nil {
			return cur, ErrStopped
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return cur, ctx.Err()
		}
	}
}

// Read returns durable entries from index from, bounded by count and bytes.
// Linearizable reads are confirmed by the master first. A local read waits
// only for a write whose answers already went (handleReady answers a Ready
// that need not sync before its write): the node that acknowledged an
// append serves it to a local read issued after the answer.
func (n *Node) Read(ctx context.Context, from uint64, maxCount, maxBytes int, linearizable bool) ([]core.Entry, error) {
	if linearizable {
		next, err := n.ReadIndex(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := n.WaitApplied(ctx, next); err != nil {
			return nil, err
		}
	} else {
		n.mu.Lock()
		answered := n.app.answered
		n.mu.Unlock()
		if err := n.waitInstance(ctx, answered); err != nil {
			return nil, err
		}
	}
	return n.store.Entries(from, maxCount, maxBytes)
}

// Tail calls fn with durable entries from index from on, in order, as they
// are applied, until ctx ends or fn returns an error. It reads from storage
// at its own pace, so a slow tail never holds the loop back.
func (n *Node) Tail(ctx context.Context, from uint64, maxBatch, maxBytes int, fn func([]core.Entry) error) error {
	for {
		if _, err := n.WaitApplied(ctx, from+1); err != nil {
			return err
		}
		ents, err := n.store.Entries(from, maxBatch, maxBytes)
		if err != nil {
			return err
		}
		if len(ents) == 0 {
			continue
		}
		if err := fn(ents); err != nil {
			return err
		}
		from = ents[len(ents)-1].Index + 1
	}
}

// Store returns the node's storage (for tests and status).
func (n *Node) Store() *storage.Store { return n.store }

// DeclineFor is how long an acceptor below MinFreeBytes declines the
// Accepts of one instance that carry user entries. Then it votes: a value
// that a quorum of full acceptors declined for good would stop the log at
// that instance, and with it the lease renewals and trims chosen after it
// (a trim is how space comes back). With a quorum below the threshold,
// appends slow to a window of instances per DeclineFor instead of stopping
// everything; the master's own check (Append) is what refuses them.
const DeclineFor = time.Second

// spaceLow reports the free bytes of the data directory's file system and
// whether they are below MinFreeBytes. Only the loop calls it. A failed
// check counts as not low (the write that follows fails, if the disk is
// gone, and stops the node as any failed write does).
func (n *Node) spaceLow() (free uint64, low bool) {
	if n.cfg.MinFreeBytes == 0 {
		return 0, false
	}
	if n.space.turn == n.turn {
		return n.space.free, n.space.low
	}
	free, err := n.cfg.DiskFree()
	if err != nil {
		n.log.Warn(event.DiskCheckFailed, event.KeyErr, err)
		free, n.space.low = 0, false
	} else {
		n.space.low = free < n.cfg.MinFreeBytes
	}
	n.space.turn, n.space.free = n.turn, free
	return free, n.space.low
}

// declineAccept reports whether the loop drops m, an Accept carrying user
// entries that arrived while the free space is below MinFreeBytes: the
// acceptor does not vote, as if the message were lost (Paxos tolerates
// that; the master resends). It declines one instance for at most
// DeclineFor, then votes. Accepts of lease renewals, trims, no-ops and
// membership changes always pass: they are small and keep the cluster
// able to serve, renew its lease and free space.
func (n *Node) declineAccept(m core.Message, now time.Time) bool {
	if m.Type != core.MsgAccept || !hasUser(m.Value) {
		return false
	}
	free, low := n.spaceLow()
	if !low {
		clear(n.declined)
		return false
	}
	first, seen := n.declined[m.Instance]
	if !seen {
		if len(n.declined) >= 4096 { // a bound; the oldest are long past DeclineFor
			for i, at := range n.declined {
				if now.Sub(at) > DeclineFor {
					delete(n.declined, i)
				}
			}
		}
		n.declined[m.Instance] = now
		first = now
	}
	if now.Sub(first) >= DeclineFor {
		return false
	}
	if now.Sub(n.declinedLog) >= 10*time.Second {
		n.declinedLog = now
		n.log.Warn(event.AcceptsDeclined, event.KeyInstance, m.Instance, "free_bytes", free, "min_free_bytes", n.cfg.MinFreeBytes,
			"dir", n.cfg.DataDir, event.KeyReason, "trim the log, add disk or lower --min-free-bytes")
	}
	return true
}

// hasUser reports whether v carries user entries.
func hasUser(v core.Value) bool {
	for _, c := range v.Commands {
		if c.Kind == core.CmdUser {
			return true
		}
	}
	return false
}

// Disk returns the free bytes of the data directory's file system (as
// DiskFree reports them), the bytes the data directory's files take, and
// MinFreeBytes. Any goroutine may call it.
func (n *Node) Disk() (free, used, min uint64, err error) {
	if free, err = n.cfg.DiskFree(); err != nil {
		return 0, 0, n.cfg.MinFreeBytes, err
	}
	used, err = dirBytes(n.cfg.DataDir)
	return free, used, n.cfg.MinFreeBytes, err
}

// dirBytes is the size of the regular files in dir (storage keeps no
// subdirectories).
func dirBytes(dir string) (uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			total += uint64(fi.Size())
		}
	}
	return total, nil
}

// StatfsFree returns the bytes of dir's file system that an unprivileged
// user may still write (statfs: available blocks times block size).
func StatfsFree(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
