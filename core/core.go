// Package core is the vocabulary the protocol roles share: messages between
// nodes, the values chosen in instances and the commands inside them, and the
// records a node persists. It holds types and their encodings only; the
// decisions live in acceptor, proposer, learner, catchup and instance.
//
// It must never do I/O or keep state. Its one invariant: Decode(Encode(x))
// is x, and a decoder never panics on any input (fuzzed).
package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/members"
)

// MsgType says what a Message is.
type MsgType uint8

// The message types. Requests and their replies are adjacent.
const (
	MsgPrepare   MsgType = iota + 1 // phase 1a: Ballot, Instance = first instance the promise covers
	MsgPromise                      // phase 1b: Ballot, Reject/Promised, Entries = accepted values ≥ Instance
	MsgAccept                       // phase 2a: Ballot, Instance, Value
	MsgAccepted                     // phase 2b: Ballot, Instance, Reject/Promised
	MsgCommit                       // chosen: every instance in [Instance, End) was chosen at Ballot with the value the sender proposed at Ballot
	MsgProbe                        // catch-up: "what have you applied?" (Committed carries the asker's)
	MsgProbeResp                    // catch-up: the answer is in Committed
	MsgLearnReq                     // catch-up: send chosen values from Instance, at most End-Instance of them
	MsgLearnResp                    // catch-up or follower push: Entries = chosen values in instance order
	MsgFollow                       // a follower asks its member to push chosen values to it (renewed every learn interval)
	MsgSnapReq                      // catch-up below the peer's base: Instance = base being fetched (0: any), End = next user index wanted, After = dedup rows after this client ID
	MsgSnapResp                     // a chunk of the sender's base (Snap), echoing the request's Instance, End and After
)

// MaxMsgType is the highest message type.
const MaxMsgType = MsgSnapResp

var msgTypeNames = [...]string{"?", "Prepare", "Promise", "Accept", "Accepted", "Commit", "Probe", "ProbeResp", "LearnReq", "LearnResp", "Follow", "SnapReq", "SnapResp"}

func (t MsgType) String() string {
	if int(t) < len(msgTypeNames) {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MsgType(%d)", t)
}

// Message is one protocol message between two nodes. Fields that a type does
// not use are zero. Every message carries the sender's applied frontier in
// Committed, so any message can tell a node that it is behind.
type Message struct {
	Type      MsgType
	From, To  uint64
	Ballot    idgen.Ballot // the proposer's ballot the message is about
	Reject    bool         // Promise/Accepted: refused. LearnResp: the values asked for are below the sender's base (End holds it): fetch the base
	Promised  idgen.Ballot // Promise/Accepted: the acceptor's promise when it refused
	Instance  uint64
	End       uint64
	After     uint64 // SnapReq/SnapResp: the dedup cursor. LearnReq: the request's number, which the LearnResp echoes
	Committed uint64 // sender's applied frontier: every instance below it is chosen and applied there
	Value     Value  // Accept
	Entries   []InstanceValue
	Snap      *SnapChunk // SnapResp
}

func (m Message) String() string {
	return fmt.Sprintf("%s %d->%d b=%d i=%d end=%d rej=%v p=%d c=%d n=%d", m.Type, m.From, m.To, m.Ballot, m.Instance, m.End, m.Reject, m.Promised, m.Committed, len(m.Entries))
}

// InstanceValue is a value in an instance: accepted at Ballot (Promise) or
// chosen (LearnResp, where Ballot is zero).
type InstanceValue struct {
	Instance uint64
	Ballot   idgen.Ballot
	Value    Value
}

// Size is the number of bytes iv adds to an encoded message's Entries.
func (iv InstanceValue) Size() int {
	return uvarintLen(iv.Instance) + uvarintLen(uint64(iv.Ballot)) + iv.Value.Size()
}

// CommandKind says what a Command does when applied.
type CommandKind uint8

// The command kinds. Only CmdUser takes log indexes.
const (
	CmdUser   CommandKind = iota + 1 // client entries
	CmdNoop                          // fills a hole left by a previous master
	CmdLease                         // master lease: Holder, Prev (compare-and-set on the version), Epoch/Start
	CmdTrim                          // drop user entries below Before
	CmdMember                        // a membership change (Change), with Origin/Epoch/Req for the result
)

// Command is one operation inside a chosen value.
type Command struct {
	Kind CommandKind
	// CmdUser.
	Entries  [][]byte
	ClientID uint64 // 0: no exactly-once
	Seq      uint64
	Origin   uint64 // node that proposed it (user and trim commands), with Epoch
	Req      uint64 // request ID at Origin, to route the result back
	// Expect, when non-zero, makes the append conditional: it applies only if
	// its first entry gets index Expect-1.
	Expect uint64
	// Epoch is the proposing node's incarnation (random per start): results
	// and lease timings are only trusted by the incarnation that proposed.
	Epoch uint64
	// CmdLease. Start is the holder's local tick when it proposed the lease;
	// only the holder interprets it.
	// Wall is the holder's wall clock (Unix ms) when it proposed: it moves
	// ApplyState.LogTime.
	Holder, Prev, Start, Wall uint64
	// CmdTrim.
	Before uint64
	// CmdMember.
	Change members.Change
}

// Value is what one instance chooses: a batch of commands.
type Value struct {
	Commands []Command
}

// Size is the encoded size of v in bytes.
func (v Value) Size() int {
	n := 1 + uvarintLen(uint64(len(v.Commands)))
	for _, c := range v.Commands {
		n += c.Size()
	}
	return n
}

// IsZero reports whether v holds no command.
func (v Value) IsZero() bool { return len(v.Commands) == 0 }

// ApplyState is the replicated state machine minus the log entries: where
// apply has reached, the user index counter, the trim point, the lease, the
// log's clock and the membership.
type ApplyState struct {
	Applied    uint64 // instances below it are applied
	NextIndex  uint64 // the next user entry gets this index
	FirstIndex uint64 // user entries below it are trimmed
	LeaseHolder,
	LeaseVersion uint64
	// LogTime is the highest wall-clock time (Unix ms) a master wrote into a
	// lease command: a clock every replica agrees on, for expiring clients.
	LogTime uint64
	// Members is the configuration that decides the open instances and the
	// change pending, if any. Zero in a state written before membership
	// was replicated: the node then takes its configuration from its flags.
	Members members.History
}

// Snapshot is the replicated state as of an instance, without the log
// entries: State.Applied is the instance it was taken before, Dedup the
// table then (in client ID order). A node's base is the snapshot after the
// last trim it applied; it keeps chosen values only from there on, and a
// peer that is behind its base installs the base instead of replaying.
type Snapshot struct {
	State ApplyState
	Dedup []DedupEntry
}

// SnapChunk is one piece of a base, sent in order: first the user entries
// [State.FirstIndex, State.NextIndex) from where the asker is, then the
// dedup rows in client ID order. Every chunk carries the base's State, so
// the asker notices when the base changed under it.
type SnapChunk struct {
	State   ApplyState
	Entries []Entry      // user entries from the index asked for
	Dedup   []DedupEntry // once the entries are done: rows after the client asked after
	Done    bool         // this chunk ends the base
}

// Size is about the encoded size of c, for rate limits.
func (c *SnapChunk) Size() int {
	n := 64
	for _, e := range c.Entries {
		n += SnapEntrySize(e)
	}
	for _, d := range c.Dedup {
		n += SnapRowSize(d)
	}
	return n
}

// SnapEntrySize is what one entry adds to a SnapChunk's Size.
func SnapEntrySize(e Entry) int { return 10 + len(e.Data) }

// SnapRowSize is what one dedup row adds to a SnapChunk's Size: at most
// its encoded size (client ID and LastUsed, 10 bytes each, the count, and
// per seq three uvarints and the 4-byte checksum).
func SnapRowSize(d DedupEntry) int { return 21 + 34*len(d.Recent) }

// DedupWindow is how many of a client's most recent sequence numbers the
// dedup table remembers: a client may have that many appends in flight, and
// they may land in any order.
const DedupWindow = 32

// SeqIndexes is where one applied (client, seq) landed, and a checksum of
// its entries (EntriesSum): a repeat of the seq with other entries is not a
// retry but a client that reused the seq (ErrSeqReused).
type SeqIndexes struct {
	Seq, First, Last uint64
	Sum              uint32
}

// EntriesSum is the checksum a dedup row keeps of a command's entries: a
// CRC32C over the count, then each entry's length and bytes, so that entries
// split differently sum differently. It is part of the replicated state, so
// it must never change.
func EntriesSum(entries [][]byte) uint32 {
	var buf [binary.MaxVarintLen64]byte
	sum := crc32.Update(0, castagnoli, binary.AppendUvarint(buf[:0], uint64(len(entries))))
	for _, e := range entries {
		sum = crc32.Update(sum, castagnoli, binary.AppendUvarint(buf[:0], uint64(len(e))))
		sum = crc32.Update(sum, castagnoli, e)
	}
	return sum
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// DedupEntry is one client's row in the dedup table.
type DedupEntry struct {
	ClientID uint64
	// Recent are the applied seqs within DedupWindow of the highest, in
	// ascending order; the last one is the highest applied seq.
	Recent []SeqIndexes
	// LastUsed is the LogTime of the client's last append.
	LastUsed uint64
	// Deleted marks, in a Ready, a row that expired and must be deleted.
	Deleted bool
}

// Seq returns the highest applied seq of the client.
func (d DedupEntry) Seq() uint64 {
	if len(d.Recent) == 0 {
		return 0
	}
	return d.Recent[len(d.Recent)-1].Seq
}

// Entry is one user log entry, as applied.
type Entry struct {
	Index uint64
	Data  []byte
}

// Errors the core returns.
var (
	ErrNotMaster = errors.New("not the master")
	ErrDropped   = errors.New("proposal dropped: mastership changed, outcome decided by whoever is master now")
	// ErrUnknownOutcome: the instance holding the proposal was skipped by
	// installing a peer's base, so this node cannot tell whether it was
	// applied. An exactly-once retry finds out.
	ErrUnknownOutcome = errors.New("outcome unknown: this node installed a snapshot past the instance holding the append; retry with the same client_id and seq to learn it")
	ErrStaleSeq       = errors.New("sequence number too old: below the dedup window of this client, it may have been applied already; not applied again")
	ErrEmpty          = errors.New("empty proposal")
	// ErrConflict: a conditional append found the log at another index; the
	// Result's First holds the log's end index.
	ErrConflict = errors.New("expected index does not match the end of the log")
	// ErrTooManyClients: the dedup table is at its cap and every row in it
	// may still be retried by its client, so none can make room for a new
	// client; nothing was applied. Apply returns it as a
	// *TooManyClientsError, which names the cap.
	ErrTooManyClients = errors.New("too many exactly-once clients")
	// ErrSeqReused: a known (client, seq) came again with other entries, so it
	// is not a retry; nothing was applied.
	ErrSeqReused = errors.New("this (client_id, seq) was already applied with different entries: a client restarted with a fixed " +
		"client ID must continue its seq above the last one it used; nothing applied")
	// ErrTrimPastEnd: a trim's before is past the end of the log, as the
	// master has applied it; nothing was proposed. instance.ProposeTrim
	// returns it as a *TrimPastEndError, which names the end.
	ErrTrimPastEnd = errors.New("trim past the end of the log")
)

// TrimPastEndError is ErrTrimPastEnd with the trim's before and the log's
// end index (the index the next append gets).
type TrimPastEndError struct{ Before, End uint64 }

func (e *TrimPastEndError) Error() string {
	return fmt.Sprintf("trim before %d is past the end of the log, which ends at index %d (the index the next append gets); nothing trimmed", e.Before, e.End)
}

// Unwrap makes errors.Is(err, ErrTrimPastEnd) work.
func (e *TrimPastEndError) Unwrap() error { return ErrTrimPastEnd }

// TooManyClientsError is ErrTooManyClients with the cap.
type TooManyClientsError struct{ Max int }

func (e *TooManyClientsError) Error() string {
	return fmt.Sprintf("too many exactly-once clients: the dedup table holds its cap of %d clients (MaxClients), each of which "+
		"appended within the client retry window and may still retry; nothing applied: retry later, or raise MaxClients on every node", e.Max)
}

// Unwrap makes errors.Is(err, ErrTooManyClients) work.
func (e *TooManyClientsError) Unwrap() error { return ErrTooManyClients }

// NotMasterError is ErrNotMaster with the master this node believes in (0 if none).
type NotMasterError struct{ Master uint64 }

func (e *NotMasterError) Error() string {
	if e.Master == 0 {
		return "not the master (no master known)"
	}
	return fmt.Sprintf("not the master (master is %d)", e.Master)
}

// Unwrap makes errors.Is(err, ErrNotMaster) work.
func (e *NotMasterError) Unwrap() error { return ErrNotMaster }
