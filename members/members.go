// Package members holds the cluster's membership as state chosen through the
// log: which members vote, which follow, each one's address, ballot slot and
// the incarnation of its data directory; the changes that move it (add a
// follower, promote a follower to voter, remove a member), which are valid
// and which are not; and which configuration decides which instance. It is
// kept apart from instance/ the way etcd-io/raft keeps confchange/ and
// tracker/ apart from raft.go, and is pure: no clock, no I/O.
//
// The rules it keeps (docs/protocol.md, membership):
//   - a configuration changes only by a Change chosen in an instance, one at a
//     time: a change waits until the one before it took effect;
//   - a change chosen in instance i decides instances from i + Window on;
//     instances below are decided by the configuration before it. The master
//     proposes instance j only once it applied every instance below
//     j - Window, so whoever proposes an instance knows its configuration;
//   - a voter's ballot slot is never handed out again: slots come from a
//     counter that only goes up, so no ballot of a removed voter can ever be
//     issued by another member;
//   - one voter more or less per change, so that a quorum of the old voters
//     and a quorum of the new ones always share a voter;
//   - a change never leaves no voter, and a follower is promoted only when
//     caught up.
package members

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Role is what a member does.
type Role uint8

// The roles.
const (
	Follower Role = iota + 1 // mirrors the log; never votes
	Voter                    // votes (promises and accepts) and may become master
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Voter:
		return "voter"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Member is one member of the cluster.
type Member struct {
	ID   uint64
	Addr string
	Role Role
	// Slot is a voter's ballot slot (idgen): unique for the cluster's life.
	// A follower gets one when promoted.
	Slot uint64
	// Incarnation is the random ID of the member's data directory, drawn
	// when the directory was created: a member that lost its directory comes
	// back with another one, and may not vote with the state it lost.
	Incarnation uint64
}

// Config is a configuration: every member, by ID, and the next ballot slot
// to hand out.
type Config struct {
	Members  []Member // sorted by ID
	NextSlot uint64   // every slot below it was handed out once, for good
}

// New returns the configuration of a new cluster whose members are all
// voters, with slots 0, 1, ... in ID order.
func New(voters ...Member) (Config, error) {
	var c Config
	for _, m := range slices.SortedFunc(slices.Values(voters), byID) {
		if m.ID == 0 {
			return Config{}, errors.New("members: member ID 0 is reserved")
		}
		if _, ok := c.Get(m.ID); ok {
			return Config{}, fmt.Errorf("members: member %d twice", m.ID)
		}
		m.Role, m.Slot = Voter, c.NextSlot
		c.NextSlot++
		c.Members = append(c.Members, m)
	}
	if len(c.Members) == 0 {
		return Config{}, errors.New("members: a cluster needs a voter")
	}
	return c, nil
}

func byID(a, b Member) int {
	switch {
	case a.ID < b.ID:
		return -1
	case a.ID > b.ID:
		return 1
	}
	return 0
}

// Get returns the member with id.
func (c Config) Get(id uint64) (Member, bool) {
	i, ok := slices.BinarySearchFunc(c.Members, Member{ID: id}, byID)
	if !ok {
		return Member{}, false
	}
	return c.Members[i], true
}

// Voters returns the voters' IDs, in order.
func (c Config) Voters() []uint64 {
	var out []uint64
	for _, m := range c.Members {
		if m.Role == Voter {
			out = append(out, m.ID)
		}
	}
	return out
}

// Quorum returns how many voters make a majority.
func (c Config) Quorum() int { return len(c.Voters())/2 + 1 }

// HasQuorum reports whether the voters in acks make a majority of c's
// voters (acks may hold anyone; only c's voters count).
func (c Config) HasQuorum(acks map[uint64]bool) bool {
	n := 0
	for _, v := range c.Voters() {
		if acks[v] {
			n++
		}
	}
	return n >= c.Quorum()
}

// String prints c, one member a line, for tests and logs.
func (c Config) String() string {
	var b strings.Builder
	for _, m := range c.Members {
		fmt.Fprintf(&b, "%d %s %s", m.ID, m.Role, m.Addr)
		if m.Role == Voter {
			fmt.Fprintf(&b, " slot=%d", m.Slot)
		}
		fmt.Fprintf(&b, " inc=%d\n", m.Incarnation)
	}
	fmt.Fprintf(&b, "next slot %d", c.NextSlot)
	return b.String()
}

// Kind is what a Change does.
type Kind uint8

// The kinds of change.
const (
	AddFollower Kind = iota + 1 // a new member, as a follower (ID, Addr, Incarnation)
	Promote                     // a follower becomes a voter, with a new slot (ID)
	Remove                      // a member leaves (ID)
)

func (k Kind) String() string {
	switch k {
	case AddFollower:
		return "add-follower"
	case Promote:
		return "promote"
	case Remove:
		return "remove"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Change is one membership change, as a system command carries it.
type Change struct {
	Kind        Kind
	ID          uint64
	Addr        string // AddFollower
	Incarnation uint64 // AddFollower
}

func (ch Change) String() string {
	if ch.Kind == AddFollower {
		return fmt.Sprintf("%s %d %s inc=%d", ch.Kind, ch.ID, ch.Addr, ch.Incarnation)
	}
	return fmt.Sprintf("%s %d", ch.Kind, ch.ID)
}

// The reasons a change is refused. Each names what to do instead.
var (
	ErrUnknownMember  = errors.New("no member has this ID")
	ErrMemberExists   = errors.New("a member with this ID exists: remove it first, or pick another ID")
	ErrNotFollower    = errors.New("only a follower can be promoted")
	ErrLastVoter      = errors.New("it is the last voter: add and promote another first")
	ErrSlotsExhausted = errors.New("every ballot slot of the cluster's stride was handed out once")
	ErrBadChange      = errors.New("malformed change")
	ErrNoIncarnation  = errors.New("the member's data directory is not known (incarnation 0): start the node with --join, which records it, then promote it")
)

// MaxAddrBytes bounds a member's address (a DNS name is at most 253
// bytes, and gossip carries at most 255): every configuration travels in
// the applied state, in each base chunk, so its size must stay small.
const MaxAddrBytes = 255

// Apply returns c with ch made, or an error (and c unchanged) when ch is
// not valid in c. k is the ballot stride: slots run from 0 to k-1.
func (c Config) Apply(ch Change, k uint64) (Config, error) {
	m, exists := c.Get(ch.ID)
	out := Config{Members: slices.Clone(c.Members), NextSlot: c.NextSlot}
	switch ch.Kind {
	case AddFollower:
		if ch.ID == 0 || ch.Addr == "" {
			return c, fmt.Errorf("%w: add-follower needs an ID above 0 and an address", ErrBadChange)
		}
		if len(ch.Addr) > MaxAddrBytes {
			return c, fmt.Errorf("%w: address of %d bytes, the limit is %d", ErrBadChange, len(ch.Addr), MaxAddrBytes)
		}
		if exists {
			return c, fmt.Errorf("member %d: %w", ch.ID, ErrMemberExists)
		}
		out.Members = append(out.Members, Member{ID: ch.ID, Addr: ch.Addr, Role: Follower, Incarnation: ch.Incarnation})
		slices.SortFunc(out.Members, byID)
	case Promote:
		if !exists {
			return c, fmt.Errorf("member %d: %w", ch.ID, ErrUnknownMember)
		}
		if m.Role != Follower {
			return c, fmt.Errorf("member %d is a %s: %w", ch.ID, m.Role, ErrNotFollower)
		}
		if m.Incarnation == 0 {
			return c, fmt.Errorf("member %d: %w", ch.ID, ErrNoIncarnation)
		}
		if out.NextSlot >= k {
			return c, fmt.Errorf("member %d: %w (K=%d)", ch.ID, ErrSlotsExhausted, k)
		}
		i, _ := slices.BinarySearchFunc(out.Members, Member{ID: ch.ID}, byID)
		out.Members[i].Role, out.Members[i].Slot = Voter, out.NextSlot
		out.NextSlot++
	case Remove:
		if !exists {
			return c, fmt.Errorf("member %d: %w", ch.ID, ErrUnknownMember)
		}
		if m.Role == Voter && len(c.Voters()) == 1 {
			return c, fmt.Errorf("member %d: %w", ch.ID, ErrLastVoter)
		}
		out.Members = slices.DeleteFunc(out.Members, func(x Member) bool { return x.ID == ch.ID })
	default:
		return c, fmt.Errorf("%w: kind %d", ErrBadChange, ch.Kind)
	}
	return out, nil
}

// reuseSlot is the planted bug: voter id takes the lowest slot no other
// voter holds now.
func (c Config) reuseSlot(id uint64) Config {
	held := map[uint64]bool{}
	for _, m := range c.Members {
		if m.Role == Voter && m.ID != id {
			held[m.Slot] = true
		}
	}
	slot := uint64(0)
	for held[slot] {
		slot++
	}
	out := Config{Members: slices.Clone(c.Members), NextSlot: c.NextSlot}
	for i := range out.Members {
		if out.Members[i].ID == id {
			out.Members[i].Slot = slot
		}
	}
	return out
}

// ErrChangePending refuses a change while the one before it has not taken
// effect: one change at a time.
var ErrChangePending = errors.New("a membership change is in progress: wait until it takes effect")

// ErrNoQuorum refuses a change after which the voters heard from recently
// would not make a quorum: the cluster would stop.
var ErrNoQuorum = errors.New("the change would leave too few live voters for a quorum")

// ErrBehind refuses to promote a follower that has not caught up.
var ErrBehind = errors.New("the follower is behind: promote it once it has caught up")

// Rules are the constants every replica applies changes with: Delay, the
// number of instances between the one that chooses a change and the first
// one it decides, and K, the ballot stride (slots run from 0 to K-1).
type Rules struct {
	Delay, K uint64
	// PlantSlotReuse makes a promotion take the lowest slot no voter holds
	// now instead of a new one. Only for tests that prove the simulator
	// catches it.
	PlantSlotReuse bool
}

// History is the configuration in effect and the one chosen but not yet in
// effect, and the instances each decides. It is part of the replicated
// state: a value, never changed in place (its configurations are shared by
// copies), and the same on every replica that applied the same instances.
type History struct {
	Cur      Config
	CurFrom  uint64  // the first instance Cur decides
	Next     *Config // chosen, deciding instances from NextFrom on; nil when none is pending
	NextFrom uint64
}

// NewHistory returns the history of a cluster whose configuration c
// decides every instance from from on.
func NewHistory(c Config, from uint64) History { return History{Cur: c, CurFrom: from} }

// IsZero reports whether h holds no configuration (a state written before
// membership was part of it, or a node that has not learned it yet).
func (h History) IsZero() bool { return len(h.Cur.Members) == 0 }

// Settle returns h with the pending configuration made current once
// instance i is at or past the first instance it decides.
func (h History) Settle(i uint64) History {
	if h.Next != nil && i >= h.NextFrom {
		return History{Cur: *h.Next, CurFrom: h.NextFrom}
	}
	return h
}

// At returns the configuration that decides instance i. i must not be
// below an instance already passed to Apply (the caller asks about open
// instances, at or above its applied frontier).
func (h History) At(i uint64) Config {
	if h.Next != nil && i >= h.NextFrom {
		return *h.Next
	}
	return h.Cur
}

// Latest returns the newest configuration chosen, in effect or not.
func (h History) Latest() Config {
	if h.Next != nil {
		return *h.Next
	}
	return h.Cur
}

// Pending reports whether a chosen change has not taken effect yet, and
// from which instance it will.
func (h History) Pending() (from uint64, pending bool) {
	if h.Next == nil {
		return 0, false
	}
	return h.NextFrom, true
}

// ForPrepare returns the configurations a phase 1 that starts at instance
// from needs a quorum of: every one that decides an instance at or above
// from. A phase 1 that spans a pending change needs a quorum of the old
// voters and one of the new, which share a voter since a change adds or
// removes at most one.
func (h History) ForPrepare(from uint64) []Config {
	if h.Next == nil || from >= h.NextFrom {
		return []Config{h.At(from)}
	}
	return []Config{h.Cur, *h.Next}
}

// Apply returns h after a change chosen in instance i, applied in instance
// order. Every replica applies the same changes in the same order, so they
// agree on each instance's configuration. A change that is not valid then
// (another is pending, or it does not apply to the configuration) changes
// nothing, on every replica alike: the error says why.
func (h History) Apply(i uint64, ch Change, r Rules) (History, error) {
	h = h.Settle(i)
	if h.Next != nil {
		return h, fmt.Errorf("%s: %w (from instance %d)", ch, ErrChangePending, h.NextFrom)
	}
	next, err := h.Cur.Apply(ch, r.K)
	if err != nil {
		return h, err
	}
	if r.PlantSlotReuse && ch.Kind == Promote {
		next = next.reuseSlot(ch.ID)
	}
	h.Next, h.NextFrom = &next, i+r.Delay
	return h, nil
}

// Check is what the master asks before it proposes ch, with its applied
// frontier applied: whether ch would take effect if chosen next. lag is how
// far behind the log's end the member ch names is (for Promote), maxLag
// the most a follower may lag to be promoted.
func (h History) Check(applied uint64, ch Change, lag, maxLag uint64, r Rules) error {
	h = h.Settle(applied)
	if h.Next != nil {
		return fmt.Errorf("%s: %w (from instance %d)", ch, ErrChangePending, h.NextFrom)
	}
	if ch.Kind == Promote && lag > maxLag {
		return fmt.Errorf("member %d is %d instances behind (at most %d): %w", ch.ID, lag, maxLag, ErrBehind)
	}
	_, err := h.Cur.Apply(ch, r.K)
	return err
}

// ErrInvalid says a configuration or history is one that no sequence of
// changes makes: a state read from disk or a peer's base that holds one is
// refused.
var ErrInvalid = errors.New("members: impossible membership")

// Validate reports what makes c impossible: a member ID 0, members not in
// strictly increasing ID order, a role out of range, no voter, two voters
// with one slot, or a voter slot at or above NextSlot.
func (c Config) Validate() error {
	slots := map[uint64]uint64{}
	for i, m := range c.Members {
		switch {
		case m.ID == 0:
			return fmt.Errorf("%w: member ID 0", ErrInvalid)
		case i > 0 && m.ID <= c.Members[i-1].ID:
			return fmt.Errorf("%w: member %d after member %d", ErrInvalid, m.ID, c.Members[i-1].ID)
		case m.Role != Voter && m.Role != Follower:
			return fmt.Errorf("%w: member %d with %s", ErrInvalid, m.ID, m.Role)
		case m.Role != Voter:
			continue
		case m.Slot >= c.NextSlot:
			return fmt.Errorf("%w: voter %d holds slot %d, not below the next slot %d", ErrInvalid, m.ID, m.Slot, c.NextSlot)
		}
		if o, dup := slots[m.Slot]; dup {
			return fmt.Errorf("%w: voters %d and %d hold slot %d", ErrInvalid, o, m.ID, m.Slot)
		}
		slots[m.Slot] = m.ID
	}
	if len(slots) == 0 {
		return fmt.Errorf("%w: no voter", ErrInvalid)
	}
	return nil
}

// Validate reports what makes h impossible: an invalid configuration, or a
// pending one that does not decide from after the current one. The zero
// History (no membership) is valid.
func (h History) Validate() error {
	if h.IsZero() && h.Next == nil {
		return nil
	}
	if err := h.Cur.Validate(); err != nil {
		return fmt.Errorf("current configuration: %w", err)
	}
	if h.Next == nil {
		return nil
	}
	if err := h.Next.Validate(); err != nil {
		return fmt.Errorf("pending configuration: %w", err)
	}
	if h.NextFrom <= h.CurFrom {
		return fmt.Errorf("%w: the pending configuration decides from instance %d, not after the current one's %d", ErrInvalid, h.NextFrom, h.CurFrom)
	}
	return nil
}
