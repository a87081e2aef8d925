package instance

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/learner"
)

// Member is a voting member of a new cluster: its node ID, its ballot slot
// and its address (for the membership; the core never dials).
type Member struct {
	ID   uint64
	Slot uint64
	Addr string
}

// Follower is a non-voting node and the member that pushes chosen values to it.
type Follower struct {
	ID     uint64
	Target uint64
}

// LogReader reads durable chosen values and the durable base, to answer
// catch-up requests.
type LogReader interface {
	// Chosen returns the chosen values of instances in [from, to) in order,
	// stopping before maxBytes is exceeded (but returning at least one value
	// when there is one).
	Chosen(from, to uint64, maxBytes int) ([]core.InstanceValue, error)
	// Snapshot returns a chunk of the durable base (the last Ready.Base
	// persisted), all read at one moment: the base's State; the user
	// entries from max(index, State.FirstIndex) below State.NextIndex, at
	// most maxCount and stopping before maxBytes (but at least one); and,
	// only when index is at or past State.NextIndex, the dedup rows with a
	// client ID above after — above 0 when base is not State.Applied, that
	// is when the asker was fetching another base — at most maxCount and
	// stopping before maxBytes, with Done set when the last row is in. A
	// node that never persisted a base has the zero one (Done, no rows).
	Snapshot(base, index, after uint64, maxCount, maxBytes int) (core.SnapChunk, error)
}

// Bug plants one known protocol bug, so that tests can show the simulator
// (and later the fault tests) catch it. Never set outside tests.
type Bug int

// The plantable bugs.
const (
	BugNone               Bug = iota
	BugReplyBeforePersist     // promises and accepts leave before their records are durable
	BugBallotReuse            // after a restart the proposer may reissue its last ballot
	BugIgnoreAccepted         // a new master ignores accepted values found in phase 1
	BugAcceptBelowPromise     // the acceptor accepts ballots below its promise
	BugSkipDedup              // apply ignores the dedup table
	BugStaleRead              // a node that holds the lease in its applied state serves linearizable reads without confirming it is still master
	BugBaseWithoutDedup       // a node that installs a peer's base leaves out its dedup table
	BugUnboundedPromise       // a Promise carries every accepted value, however large (no pieces)
	BugBehindDeadPeer         // a node counts itself behind a peer that stopped answering, for good
	BugGuardOldLease          // a lease accepted at an older (ballot, instance) moves the acceptor's lease guard
	BugLogTimeJump            // log time takes a lease's wall clock unbounded: a master hours ahead expires live clients
	BugReproposedLease        // a master that re-proposes another node's lease after phase 1 keeps counting its own
	BugHandoverKeepsLease     // a master that hands its lease over keeps counting it until the handover applies
	BugChangeAtOnce           // a membership change decides the instance right after the one that chose it, not Delay later
	BugSlotReuse              // a promoted follower takes the lowest slot no voter holds now, not a new one
	BugWipedVotes             // the simulator's transport skips the runtime's incarnation check: a wiped node votes with what it lost
	BugHintEndsLease          // a failure detector's report that the lease holder is down ends its lease on the node told
	BugDedupLatestOnly        // the dedup table answers only a client's highest seq: an older one sent again is applied again
)

var bugNames = [...]string{"none", "reply-before-persist", "ballot-reuse", "ignore-accepted", "accept-below-promise", "skip-dedup", "stale-read", "base-without-dedup",
	"unbounded-promise", "behind-dead-peer", "guard-old-lease", "log-time-jump", "reproposed-lease", "handover-keeps-lease",
	"change-at-once", "slot-reuse", "wiped-votes", "hint-ends-lease", "dedup-latest-only"}

func (b Bug) String() string { return bugNames[b] }

// Bugs lists every plantable bug.
func Bugs() []Bug {
	return []Bug{BugReplyBeforePersist, BugBallotReuse, BugIgnoreAccepted, BugAcceptBelowPromise, BugSkipDedup, BugStaleRead, BugBaseWithoutDedup,
		BugUnboundedPromise, BugBehindDeadPeer, BugGuardOldLease, BugLogTimeJump, BugReproposedLease, BugHandoverKeepsLease,
		BugChangeAtOnce, BugSlotReuse, BugWipedVotes, BugHintEndsLease, BugDedupLatestOnly}
}

// Config configures one node's core. Durations are in ticks; the runtime
// decides how long a tick is (DefaultTickMillis).
type Config struct {
	ID uint64
	// Members are the voting members the cluster was created with, this
	// node included unless it is a follower or joined later. Once the
	// applied state holds a membership (members.History), that decides
	// who votes; these only seed a state that has none.
	Members   []Member
	Followers []Follower // non-voting nodes outside the membership (static followers, pushed to by Target)
	K         uint64     // ballot stride, fixed at cluster creation

	// Incarnation is the random ID of this node's data directory. The
	// node votes as a member only where the configuration names this
	// incarnation, or names none (0: a member the cluster was created
	// with) while Joined is false.
	Incarnation uint64
	// Joined: this directory joined a running cluster (it was added as a
	// follower), so it was never one of the members the cluster was created
	// with, whatever their IDs.
	Joined bool

	// Window is how many instances the master keeps in flight.
	Window int
	// MaxBatchEntries and MaxBatchBytes bound the commands packed in one instance.
	MaxBatchEntries int
	MaxBatchBytes   int
	// MaxAhead bounds how far beyond its applied frontier a node holds
	// accepted or chosen values; it bounds memory. At least 2*Window.
	MaxAhead uint64

	// LeaseTicks is the master lease. The holder counts it from when it
	// proposed the lease, less LeaseMargin (clock drift); the others count
	// it from when they applied it. The holder renews at half of it.
	LeaseTicks  uint64
	LeaseMargin uint64
	// PhaseTimeout: a phase without a quorum for this long is retried.
	PhaseTimeout uint64
	// ElectionJitter: a node that may take over waits a random 1..ElectionJitter
	// ticks first, so that nodes rarely duel.
	ElectionJitter uint64
	// LearnInterval: how often a node asks its peers how far they are.
	LearnInterval uint64
	// CatchupBatch bounds the instances of one catch-up response.
	// CatchupBytes bounds the payload of every message that carries many
	// values: a catch-up response, a Promise, a push to a follower, a chunk
	// of a base. Each stops before it would pass CatchupBytes, but carries at
	// least one item, so that any value can travel (see MaxMessageBytes).
	CatchupBatch uint64
	CatchupBytes int
	// MaxCommandBytes is the largest encoded user command (one append) the
	// node proposes; the runtime refuses larger appends before they reach
	// the core. With MaxBatchBytes it bounds the largest value, and so the
	// largest message. Every node of a cluster must use the same limits.
	MaxCommandBytes int
	// CatchupBytesPerTick bounds the chosen values this node serves to
	// peers catching up (0: no bound), so that a peer catching up leaves
	// room for the master's own traffic.
	CatchupBytesPerTick int

	// ClientTTLMillis and MaxClients bound the dedup table: a client idle
	// that long (of log time) is forgotten, and beyond MaxClients the least
	// recently used is. They must be the same on every node.
	ClientTTLMillis uint64
	MaxClients      int
	// ClientRetryMillis: a client must stop retrying one seq within this
	// much log time of first sending it (default 15 minutes; the Go client
	// stops after 10 rounds over the endpoints, at most 5 s per call: 4.3
	// minutes at worst with 5 endpoints). At MaxClients a new client replaces the least recently
	// used row only if that one is idle longer; otherwise it is refused
	// (core.ErrTooManyClients). Below ClientTTLMillis; the same on every
	// node.
	ClientRetryMillis uint64
	// LogTimeStepMillis is the most one lease command moves log time, however
	// wrong the master's wall clock, so that no node's clock can expire a
	// live client (docs/protocol.md §7). The same on every node.
	LogTimeStepMillis uint64

	Rand *rand.Rand // the only source of randomness
	Log  LogReader  // durable chosen values
	Bug  Bug
}

// ChangeDelay is how many instances after the one that chose it a
// membership change decides: a change chosen in instance i decides from
// i + ChangeDelay on. It is part of the replicated state machine, the same
// on every node of every version, so it is a constant and not a setting;
// MaxAhead, which bounds how far past its applied frontier a node accepts,
// may not exceed it.
const ChangeDelay = 256

// DefaultTickMillis is the tick length the defaults below assume.
const DefaultTickMillis = 10

// DefaultConfig returns a config with the defaults filled in; the caller sets
// ID, Members, Followers, Rand and Log.
func DefaultConfig() Config {
	return Config{
		K:               idgen.DefaultK,
		Window:          32,
		MaxBatchEntries: 4096,
		MaxBatchBytes:   4 << 20,
		MaxAhead:        256,
		LeaseTicks:      300, // 3 s
		LeaseMargin:     75,
		PhaseTimeout:    20, // 200 ms
		ElectionJitter:  30,
		LearnInterval:   100, // 1 s
		CatchupBatch:    1024,
		CatchupBytes:    4 << 20,
		MaxCommandBytes: CommandBytesFor(4 << 20),
		ClientTTLMillis: learner.DefaultClientTTL,
		MaxClients:      learner.DefaultMaxClients,

		ClientRetryMillis: learner.DefaultClientRetry,
		LogTimeStepMillis: learner.DefaultLogTimeStep, // a little over the time between renewals
	}
}

// Validate says which field is wrong, if any.
func (c *Config) Validate() error {
	if c.ID == 0 {
		return errors.New("config: ID must be non-zero")
	}
	if len(c.Members) == 0 {
		return errors.New("config: Members is empty")
	}
	ids, slots := map[uint64]bool{}, map[uint64]bool{}
	for _, m := range c.Members {
		if m.ID == 0 || ids[m.ID] || slots[m.Slot] || m.Slot >= c.K {
			return fmt.Errorf("config: member %d (slot %d): IDs and slots must be unique, non-zero IDs, slots below K=%d", m.ID, m.Slot, c.K)
		}
		ids[m.ID], slots[m.Slot] = true, true
	}
	for _, f := range c.Followers {
		if f.ID == 0 || ids[f.ID] || !slices.ContainsFunc(c.Members, func(m Member) bool { return m.ID == f.Target }) {
			return fmt.Errorf("config: follower %d must have a unique ID and follow a member (target %d)", f.ID, f.Target)
		}
		ids[f.ID] = true
	}
	if !ids[c.ID] && !c.Joined {
		return fmt.Errorf("config: ID %d is neither a member nor a follower, and did not join", c.ID)
	}
	switch {
	case c.Window < 1:
		return errors.New("config: Window must be at least 1")
	case c.MaxBatchEntries < 1 || c.MaxBatchBytes < 1:
		return errors.New("config: MaxBatchEntries and MaxBatchBytes must be positive")
	case c.MaxAhead < 2*uint64(c.Window) || c.MaxAhead > ChangeDelay:
		return fmt.Errorf("config: MaxAhead %d must be at least 2*Window and at most ChangeDelay %d", c.MaxAhead, ChangeDelay)
	case c.LeaseTicks < 4 || c.LeaseMargin == 0 || c.LeaseMargin >= c.LeaseTicks/2:
		return errors.New("config: LeaseTicks must be at least 4 and LeaseMargin in (0, LeaseTicks/2)")
	case c.PhaseTimeout == 0 || c.ElectionJitter == 0 || c.LearnInterval == 0:
		return errors.New("config: PhaseTimeout, ElectionJitter and LearnInterval must be positive")
	case c.CatchupBatch == 0 || c.CatchupBytes <= 0:
		return errors.New("config: CatchupBatch and CatchupBytes must be positive")
	case c.MaxCommandBytes < minCommandBytes:
		return fmt.Errorf("config: MaxCommandBytes %d must be at least %d (a lease or trim command must fit)", c.MaxCommandBytes, minCommandBytes)
	case c.MaxMessageBytes() > maxMessageCeiling:
		return fmt.Errorf("config: CatchupBytes %d, MaxBatchBytes %d and MaxCommandBytes %d make messages of up to %d bytes, over the %d-byte ceiling",
			c.CatchupBytes, c.MaxBatchBytes, c.MaxCommandBytes, c.MaxMessageBytes(), maxMessageCeiling)
	case c.ClientTTLMillis == 0 || c.MaxClients < 1:
		return errors.New("config: ClientTTLMillis and MaxClients must be positive")
	case c.ClientRetryMillis == 0 || c.ClientRetryMillis >= c.ClientTTLMillis:
		return fmt.Errorf("config: ClientRetryMillis %d must be positive and below ClientTTLMillis %d", c.ClientRetryMillis, c.ClientTTLMillis)
	case c.LogTimeStepMillis == 0:
		return errors.New("config: LogTimeStepMillis must be positive")
	case c.Rand == nil:
		return errors.New("config: Rand is nil")
	case c.Log == nil:
		return errors.New("config: Log is nil")
	}
	return nil
}

// Bounds of the message size.
const (
	// minCommandBytes: system commands (lease, trim, no-op) are far smaller.
	minCommandBytes = 256
	// maxMessageCeiling keeps every message well inside what gRPC and the
	// transport's batches carry (and inside an int on every platform).
	maxMessageCeiling = 1 << 30
	// itemOverhead bounds the bytes one item adds to a message beyond its
	// value or data: an instance and a ballot (catch-up, Promise), an index
	// and a length (base entries), a client ID (base rows).
	itemOverhead = 32
	// headerOverhead bounds a message's fixed fields and a base chunk's state.
	headerOverhead = 1 << 10
)

// CommandBytesFor is the MaxCommandBytes of a node that accepts appends of
// up to appendBytes bytes of entry data: each entry's length prefix adds at
// most one byte per byte of data (an entry of one byte has a one-byte
// prefix; longer entries add far less), and the command's own fields are
// a few dozen bytes.
func CommandBytesFor(appendBytes int) int { return 2*appendBytes + minCommandBytes }

// MaxValueBytes is the largest encoded value the proposer makes: a batch
// stops before MaxBatchBytes unless its first command alone is larger.
func (c *Config) MaxValueBytes() int {
	return max(c.MaxBatchBytes, c.MaxCommandBytes) + 16
}

// MaxMessageBytes is the largest encoded message the core emits: the
// payload bound CatchupBytes, plus the one item that may pass it (a whole
// value), plus per-item and fixed overheads. The transport must carry
// messages of this size; one it dropped for its size could stall phase 1 or
// catch-up for good. It is derived here, in one place, from the window and
// entry limits.
func (c *Config) MaxMessageBytes() int {
	items := max(int(c.CatchupBatch), int(c.MaxAhead))
	return c.CatchupBytes + c.MaxValueBytes() + itemOverhead*(items+1) + headerOverhead
}
