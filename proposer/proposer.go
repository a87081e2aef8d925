// Package proposer is one node's Paxos proposer: phase 1 over every open
// instance at once, phase 2 for a window of instances in flight, batching of
// waiting commands into one value per instance, and retries.
//
// It is pure: it returns messages and decisions; instance/ decides when it
// may run (mastership, lease, catch-up) and routes and persists.
//
// The invariant it keeps: after phase 1 at ballot b it proposes, in each
// instance, the highest-ballot value any promiser reported (a no-op only
// where none did), and it proposes at most one value per (instance, ballot).
package proposer

import (
	"fmt"
	"slices"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
)

// Config sets what a proposer may do.
type Config struct {
	ID     uint64
	Voters []uint64 // every voting member, this one included if it votes: whom to send to
	// Quorums, when set, are the voter sets a phase needs a majority of
	// each of (while a membership change is pending, the configurations
	// before and after it); unset, a majority of Voters.
	Quorums [][]uint64
	// Window is the number of instances in flight at once: deep enough to
	// keep the disks and links busy, small enough to bound re-proposal work.
	Window int
	// MaxBatchEntries and MaxBatchBytes bound one instance value.
	MaxBatchEntries int
	MaxBatchBytes   int
	// PhaseTimeout is how long (ticks) a phase waits before retrying.
	PhaseTimeout uint64
}

// Phase is where the proposer is.
type Phase int

// The phases.
const (
	Idle      Phase = iota // not proposing
	Preparing              // phase 1 at Ballot in progress
	Leading                // phase 1 done at Ballot: phase 2 only, until rejected
)

func (p Phase) String() string { return [...]string{"idle", "preparing", "leading"}[p] }

type flight struct {
	value core.Value
	acks  map[uint64]bool
	sent  uint64
	tries int // resends so far: each waits twice as long as the one before
}

// Chosen is an instance this proposer saw chosen: a quorum accepted Value at Ballot.
type Chosen struct {
	Instance uint64
	Ballot   idgen.Ballot
	Value    core.Value
}

// Proposer is the proposer state.
type Proposer struct {
	cfg    Config
	gen    *idgen.Generator
	phase  Phase
	ballot idgen.Ballot

	// Preparing.
	prepFrom uint64
	prepSent uint64
	// timeouts counts the phase 1s abandoned in a row for want of a
	// quorum of promises (PrepareTimeout); a phase 1 that completes, or
	// another node's lease chosen (OtherLeads), clears it.
	timeouts int
	promised map[uint64]bool
	// pieces: acceptors whose Promise came in pieces -> where the next
	// piece starts (the After we asked with). Their promise counts once
	// the last piece is in. pieceSent: when that piece was last asked for.
	pieces    map[uint64]uint64
	pieceSent map[uint64]uint64
	found     map[uint64]core.InstanceValue

	// refound: what the phase 1 that made us leading found and re-proposed.
	refound []core.InstanceValue

	// Leading.
	next     uint64
	inflight map[uint64]*flight
	pending  []core.Command
	// ignoreAccepted plants the bug "a new master ignores an accepted value".
	ignoreAccepted bool
}

// New returns an idle proposer issuing ballots from gen.
func New(cfg Config, gen *idgen.Generator) *Proposer {
	return &Proposer{cfg: cfg, gen: gen, inflight: map[uint64]*flight{}}
}

// PlantIgnoreAccepted makes phase 1 ignore reported accepted values. Only for
// tests that prove the simulator catches it.
func (p *Proposer) PlantIgnoreAccepted() { p.ignoreAccepted = true }

// Phase returns the current phase.
func (p *Proposer) Phase() Phase { return p.phase }

// Ballot returns the ballot of the current phase (zero when idle).
func (p *Proposer) Ballot() idgen.Ballot { return p.ballot }

// Next returns the next instance the leader would propose in.
func (p *Proposer) Next() uint64 { return p.next }

// InFlight returns the number of instances proposed and not yet chosen.
func (p *Proposer) InFlight() int { return len(p.inflight) }

// Waiting returns the number of commands waiting for a slot in the window.
func (p *Proposer) Waiting() int { return len(p.pending) }

// hasQuorum reports whether acks hold a majority of every voter set the
// proposer needs (Config.Quorums).
func (p *Proposer) hasQuorum(acks map[uint64]bool) bool {
	if p.cfg.Quorums == nil {
		return majority(p.cfg.Voters, acks)
	}
	for _, q := range p.cfg.Quorums {
		if !majority(q, acks) {
			return false
		}
	}
	return true
}

func majority(voters []uint64, acks map[uint64]bool) bool {
	n := 0
	for _, v := range voters {
		if acks[v] {
			n++
		}
	}
	return n >= len(voters)/2+1
}

// SetVoters changes whom the proposer sends to and the voter sets it needs
// a majority of (Config.Voters and Quorums), as membership changes take
// effect. A phase in progress counts its replies by the new sets from now
// on; the caller steps down first when the new sets need promises that the
// phase 1 behind it did not gather.
func (p *Proposer) SetVoters(voters []uint64, quorums [][]uint64) {
	p.cfg.Voters, p.cfg.Quorums = voters, quorums
}

// Observe records a ballot seen in any message so the next one is above it.
func (p *Proposer) Observe(b idgen.Ballot) { p.gen.Observe(b) }

// StartPrepare begins phase 1 with a fresh ballot for every instance at or
// above from, and returns the Prepare messages (one per voter, this node
// included).
func (p *Proposer) StartPrepare(now, from uint64) []core.Message {
	p.reset()
	p.phase, p.ballot = Preparing, p.gen.Next()
	p.prepFrom, p.prepSent = from, now
	p.promised, p.pieces, p.pieceSent, p.found = map[uint64]bool{}, map[uint64]uint64{}, map[uint64]uint64{}, map[uint64]core.InstanceValue{}
	out := make([]core.Message, 0, len(p.cfg.Voters))
	for _, v := range p.cfg.Voters {
		out = append(out, core.Message{Type: core.MsgPrepare, To: v, Ballot: p.ballot, Instance: from})
	}
	return out
}

// PromiseOutcome says what a Promise did.
type PromiseOutcome int

// The outcomes of OnPromise.
const (
	PromiseCounted PromiseOutcome = iota // nothing decided yet (or the reply was stale)
	PromiseLeading                       // a quorum promised: now leading
	PromiseBehind                        // an acceptor has applied past our start: catch up first
	PromiseOutbid                        // an acceptor promised a higher ballot
)

// OnPromise handles a phase 1b reply. On PromiseLeading it returns the
// Accepts re-proposing every open instance. A Promise that came in pieces
// (End set: the acceptor stopped at its message bound) returns the Prepare
// asking for the next piece; the acceptor's promise counts only when its
// last piece is in, so the quorum's reports are whole.
func (p *Proposer) OnPromise(now uint64, m core.Message) (PromiseOutcome, []core.Message) {
	p.gen.Observe(m.Promised)
	if p.phase != Preparing || m.Ballot != p.ballot {
		return PromiseCounted, nil
	}
	if m.Reject {
		if m.Committed > p.prepFrom {
			p.reset()
			return PromiseBehind, nil
		}
		if m.Promised > p.ballot {
			p.reset()
			return PromiseOutbid, nil
		}
		return PromiseCounted, nil
	}
	if p.promised[m.From] || m.After != p.pieces[m.From] {
		return PromiseCounted, nil // a duplicate, or a piece we did not ask for (yet)
	}
	for _, e := range m.Entries {
		if e.Instance < p.prepFrom {
			continue
		}
		if cur, ok := p.found[e.Instance]; !ok || e.Ballot > cur.Ballot {
			p.found[e.Instance] = e
		}
	}
	if m.End > m.After && m.End > m.Instance {
		// The acceptor stopped at its message bound: ask for the rest. The
		// phase is making progress, so its timeout starts over (a window of
		// large values may take many pieces; each one moves End forward, and
		// there are at most MaxAhead instances to send).
		p.pieces[m.From], p.pieceSent[m.From], p.prepSent = m.End, now, now
		return PromiseCounted, []core.Message{p.nextPiece(m.From)}
	}
	p.promised[m.From] = true
	if !p.hasQuorum(p.promised) {
		return PromiseCounted, nil
	}
	// Phase 1 done. Re-propose every open instance up to the highest one any
	// promiser accepted, filling holes with no-ops, all at our ballot.
	p.phase, p.next, p.timeouts = Leading, p.prepFrom, 0
	last := p.prepFrom
	for i := range p.found {
		last = max(last, i+1)
	}
	var out []core.Message
	for i := p.prepFrom; i < last; i++ {
		v := core.Value{Commands: []core.Command{{Kind: core.CmdNoop}}}
		if e, ok := p.found[i]; ok && !p.ignoreAccepted {
			v = e.Value
			p.refound = append(p.refound, e)
		}
		out = append(out, p.propose(now, v)...)
	}
	p.promised, p.pieces, p.pieceSent, p.found = nil, nil, nil, nil
	return PromiseLeading, out
}

// Refound returns the accepted values that the phase 1 which made this
// proposer leading found and re-proposed, in instance order, each with the
// ballot it was found at (not the one it is re-proposed at).
func (p *Proposer) Refound() []core.InstanceValue { return p.refound }

// nextPiece asks acceptor for the next piece of its Promise.
func (p *Proposer) nextPiece(acceptor uint64) core.Message {
	return core.Message{Type: core.MsgPrepare, To: acceptor, Ballot: p.ballot, Instance: p.prepFrom, After: p.pieces[acceptor]}
}

// pieceResend is how long a request for a Promise's next piece waits for
// its answer before it is sent again. A phase that needs many pieces would
// rarely finish on a lossy link if one lost piece cost the ballot (the
// phase times out), so each piece gets several tries within PhaseTimeout.
func (p *Proposer) pieceResend() uint64 { return max(1, p.cfg.PhaseTimeout/4) }

// Propose queues user commands for the next Flush.
func (p *Proposer) Propose(cmds ...core.Command) { p.pending = append(p.pending, cmds...) }

// TakePending removes and returns the commands still waiting (on step-down).
func (p *Proposer) TakePending() []core.Command {
	out := p.pending
	p.pending = nil
	return out
}

// Flush packs waiting commands into new instances while the window has room
// (applied is the node's applied frontier) and returns the Accepts. It
// returns, per new instance, the commands placed there.
func (p *Proposer) Flush(now, applied uint64) (msgs []core.Message, placed []Chosen) {
	if p.phase != Leading {
		return nil, nil
	}
	for len(p.pending) > 0 && p.next < applied+uint64(p.cfg.Window) {
		n, bytes := 0, 0
		for n < len(p.pending) && n < p.cfg.MaxBatchEntries {
			sz := p.pending[n].Size()
			if n > 0 && bytes+sz > p.cfg.MaxBatchBytes {
				break
			}
			bytes += sz
			n++
		}
		v := core.Value{Commands: slices.Clone(p.pending[:n])}
		p.pending = p.pending[n:]
		placed = append(placed, Chosen{Instance: p.next, Ballot: p.ballot, Value: v})
		msgs = append(msgs, p.propose(now, v)...)
	}
	if len(p.pending) == 0 {
		p.pending = nil // let the backing array go
	}
	return msgs, placed
}

// ProposeValue proposes v in the next instance now, outside the window (for
// lease renewals, which must not wait behind user traffic). It returns the
// instance and the Accepts.
func (p *Proposer) ProposeValue(now uint64, v core.Value) (uint64, []core.Message) {
	if p.phase != Leading {
		panic("proposer: ProposeValue while not leading")
	}
	i := p.next
	return i, p.propose(now, v)
}

func (p *Proposer) propose(now uint64, v core.Value) []core.Message {
	i := p.next
	p.next++
	if _, dup := p.inflight[i]; dup {
		panic(fmt.Sprintf("proposer: instance %d proposed twice at ballot %d", i, p.ballot))
	}
	p.inflight[i] = &flight{value: v, acks: map[uint64]bool{}, sent: now}
	return p.accepts(i, v, nil)
}

func (p *Proposer) accepts(i uint64, v core.Value, skip map[uint64]bool) []core.Message {
	out := make([]core.Message, 0, len(p.cfg.Voters))
	for _, to := range p.cfg.Voters {
		if !skip[to] {
			out = append(out, core.Message{Type: core.MsgAccept, To: to, Ballot: p.ballot, Instance: i, Value: v})
		}
	}
	return out
}

// OnAccepted handles a phase 2b reply. It returns the instance if this reply
// made it chosen, and whether the proposer was outbid and stepped down.
func (p *Proposer) OnAccepted(m core.Message) (chosen *Chosen, outbid bool) {
	p.gen.Observe(m.Promised)
	if p.phase != Leading || m.Ballot != p.ballot {
		return nil, false
	}
	if m.Reject {
		if m.Promised > p.ballot {
			p.reset()
			return nil, true
		}
		return nil, false // the acceptor is behind or already applied it: not a vote
	}
	f, ok := p.inflight[m.Instance]
	if !ok {
		return nil, false
	}
	f.acks[m.From] = true
	if !p.hasQuorum(f.acks) {
		return nil, false
	}
	delete(p.inflight, m.Instance)
	return &Chosen{Instance: m.Instance, Ballot: p.ballot, Value: f.value}, false
}

// Forget drops an in-flight instance that was learned chosen some other way.
func (p *Proposer) Forget(i uint64) { delete(p.inflight, i) }

// ForgetBelow drops in-flight instances below applied: they are chosen and
// applied, and acceptors refuse them now.
func (p *Proposer) ForgetBelow(applied uint64) {
	for i := range p.inflight {
		if i < applied {
			delete(p.inflight, i)
		}
	}
}

// Tick retries: a phase 1 that timed out is abandoned (the caller backs off
// and starts over with a higher ballot); Accepts that timed out are sent
// again to the voters that have not answered, backing off (acceptResend). It returns the messages and
// whether phase 1 was abandoned.
func (p *Proposer) Tick(now uint64) (msgs []core.Message, abandoned bool) {
	switch p.phase {
	case Preparing:
		if now-p.prepSent >= p.PrepareTimeout() {
			p.timeouts++
			p.reset()
			return nil, true
		}
		for _, a := range p.cfg.Voters { // in a fixed order: a seed replays the same
			if sent, ok := p.pieceSent[a]; ok && !p.promised[a] && now-sent >= p.pieceResend() {
				p.pieceSent[a] = now
				msgs = append(msgs, p.nextPiece(a))
			}
		}
	case Leading:
		for _, i := range p.sortedInflight() {
			f := p.inflight[i]
			if now-f.sent >= p.acceptResend(f.tries) {
				f.sent, f.tries = now, f.tries+1
				msgs = append(msgs, p.accepts(i, f.value, f.acks)...)
			}
		}
	}
	return msgs, false
}

// PrepareTimeout is how long phase 1 waits for a quorum of promises (from
// the Prepare, or from the last piece of a Promise that came in) before it
// is abandoned: PhaseTimeout, doubling with each phase 1 abandoned in a row
// up to 32 x PhaseTimeout. A promise is durable before it is sent, and a
// disk busy with a window of large values can take longer than
// PhaseTimeout to sync it on every acceptor: with a fixed timeout, each
// phase 1 was abandoned before its promises came, and each new one asked
// for another sync, for as long as the disk stayed slow (no master for
// over 30 s in e2e TestTwoKilledForGoodOfFive, with fsyncs of 0.7-1.9 s).
// A phase 1 waits for two syncs in series, the proposer's own promise
// before its Prepare leaves and then the acceptors': a cap of 8 x
// PhaseTimeout (1.6 s) let none complete once syncs took over 0.8 s
// (instance TestSlowDiskElectsMaster); 32 x covers syncs of up to 3.2 s.
// It is also how long this node yields to another proposer's phase
// (instance.Node.heardProposer): that phase waits on the same disks.
func (p *Proposer) PrepareTimeout() uint64 {
	return p.cfg.PhaseTimeout << min(p.timeouts, 5)
}

// OtherLeads starts the count of abandoned phase 1s over: another node's
// lease was chosen, so phase 1s complete at the disks' current speed, and
// a count left from a slow spell would otherwise stay for good on a node
// that never leads, making its next phase 1, and its yield to others,
// wait up to 32 x PhaseTimeout after a master dies.
func (p *Proposer) OtherLeads() { p.timeouts = 0 }

// acceptResend is how long an Accept waits for a quorum before it is sent
// again, after tries resends: PhaseTimeout, then twice as long, then
// 4 x PhaseTimeout from then on. An unanswered Accept is rarely lost (the
// transport is a stream); mostly a voter is down or slow, and resending a
// window of large values every PhaseTimeout to a slow voter only adds the
// same megabytes to the queue it is behind (and to a dead one's). The cap
// is well under half a lease: a renewal sent while its quorum partner was
// cut off is resent in time once the link heals.
func (p *Proposer) acceptResend(tries int) uint64 {
	return p.cfg.PhaseTimeout << min(tries, 2)
}

func (p *Proposer) sortedInflight() []uint64 {
	out := make([]uint64, 0, len(p.inflight))
	for i := range p.inflight {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// StepDown stops proposing. Commands still waiting stay queued for the caller
// to take with TakePending.
func (p *Proposer) StepDown() { p.reset() }

func (p *Proposer) reset() {
	p.phase, p.ballot = Idle, 0
	p.promised, p.pieces, p.pieceSent, p.found, p.refound = nil, nil, nil, nil, nil
	clear(p.inflight)
}
