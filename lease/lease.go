// Package lease holds the master lease's rules, apart from the rest of the
// core the way etcd-io/raft keeps its quorum and progress rules apart from
// raft.go: the acceptor's guard (Guard) and a node's view of the lease in
// the log, its own or another's (View). It is pure: instance/ tells it what
// was accepted, re-proposed and applied, and when; it answers who may be
// promised, whether this node holds a valid lease, and when to renew.
//
// The invariants it keeps (docs/protocol.md §5): a guard moves only to a
// lease accepted at a higher ballot, or at the same ballot in the same or a
// later instance, or to a lease chosen in a later instance once it applies;
// a holder counts its lease only from a lease command of its own
// incarnation, applied above every other node's lease it re-proposed, and
// proposes none while such a lease is still to apply.
package lease

import (
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
)

// Config is the lease's length and the holder's margin for clock drift, in
// ticks.
type Config struct {
	Ticks  uint64 // how long a lease lasts from when it was proposed (holder) or applied (others)
	Margin uint64 // the holder stops counting its lease this much early
}

// HolderIn returns the holder named by the last lease command in v.
func HolderIn(v core.Value) (holder uint64, ok bool) {
	for _, c := range v.Commands {
		if c.Kind == core.CmdLease {
			holder, ok = c.Holder, true
		}
	}
	return holder, ok
}

// Guard is an acceptor's lease guard: having accepted a lease for a
// holder, it promises no one else for a full lease from that moment. The
// holder serves only after applying its lease, so after a quorum accepted
// it: every phase-1 quorum then holds a guarding acceptor until the guard
// ends, and no other node completes phase 1 while the holder's lease runs.
type Guard struct {
	holder, until, instance uint64
	ballot                  idgen.Ballot
	anyOrder                bool // planted: any accepted lease moves the guard
}

// Everyone is the holder of a guard that refuses every Prepare: after a
// restart, when the lease in the applied state and the latest accepted one
// name different holders, and which is newer cannot be told.
const Everyone = ^uint64(0)

// PlantAnyOrder makes every accepted lease move the guard, whatever its
// ballot and instance, and an applied lease never (Applied would mend the
// guard as soon as the lease after the stale one applies, and hide how
// far the bug reaches before that). Only for tests that prove they catch it.
func (g *Guard) PlantAnyOrder() { g.anyOrder = true }

// PlantForget drops the guard if it guards holder's lease: the planted bug
// that lets a failure detector's report end a lease. Only for tests that
// prove they catch it.
func (g *Guard) PlantForget(holder uint64) {
	if g.holder == holder {
		g.holder, g.until = 0, 0
	}
}

// Accepted notes that the acceptor accepted v at ballot b in instance i at
// tick now. A lease in v moves the guard only if it was accepted at a higher
// ballot than the one guarded, or at the same ballot in the same or a later
// instance. Paxos makes a new master re-propose old values, stale leases
// among them, in instances below its own lease (same ballot, lower
// instance); a duplicate Accept of one may arrive late; and a lease of an
// older ballot may sit in a higher instance than a newer master's lease
// (accepted there before the newer master's phase 1, which did not see it).
// None of these may take the guard from the holder of the later lease.
// The same lease accepted again (a resent Accept) does not start the guard
// over: the holder counts its lease from when it proposed it, and a master
// that can no longer hear the replies, resending for ever, must not keep
// every acceptor guarding it for ever.
func (g *Guard) Accepted(now, ticks uint64, b idgen.Ballot, i uint64, v core.Value) {
	if !g.anyOrder && (b < g.ballot || b == g.ballot && i <= g.instance && g.holder != 0) {
		return
	}
	if h, ok := HolderIn(v); ok {
		g.holder, g.until, g.ballot, g.instance = h, now+ticks, b, i
	}
}

// Applied notes that a lease for holder, chosen in instance i, applied at
// tick now (its compare-and-set matched: holder is the lease's holder from
// now on). What the guard does depends on where the lease it follows was
// accepted:
//
//   - nowhere (no guard), or in a lower instance: the guard moves to holder
//     for a full lease from now. The guarded lease was decided before i, and
//     a lease chosen after it ended it (its holder's phase 1 passed the
//     guards of a quorum, or the holder handed it over, or the master that
//     re-proposed it stopped counting its own). Without this, a voter that
//     restarted or fell behind, and so accepted none of the newer lease,
//     would guard the old holder (often the master that just handed over)
//     for a full lease and refuse the new one. An empty guard is armed, and
//     one of the same holder renewed: a node that applied a lease it never
//     accepted (a follower, one that was behind) and then votes (promoted
//     to voter) guards it, so that a quorum of a configuration two changes
//     later still holds a guard of every lease that may be on
//     (docs/protocol.md §10).
//   - in instance i itself, for another holder: another value was chosen
//     there, so the guarded lease never was and nobody counts it. The guard
//     moves to holder, as above.
//   - in instance i or above, for the same holder: it is left alone.
//   - above i, for another holder: the guarded lease may yet be chosen, and
//     then it is the newer one, or never. Until its instance is decided
//     (Decided), which of the two leases is on cannot be told: the guard
//     refuses everyone, until the later of the two guards' ends.
func (g *Guard) Applied(now, ticks, i, holder uint64) {
	switch {
	case g.anyOrder:
	case g.holder == 0 || g.instance < i || g.instance == i && g.holder != holder:
		g.holder, g.until, g.instance = holder, now+ticks, i
	case g.holder != holder:
		g.holder, g.until = Everyone, max(g.until, now+ticks)
	}
}

// Decided notes that every instance below applied is applied, at tick now,
// and that holder (0: none) holds the lease in the applied state. A guard
// of a lease accepted below applied for another holder follows a lease
// that was never chosen (chosen, it would have moved the guard or named
// the holder) or that a later one ended: it moves to holder for a full
// lease from now. A guard of a lease at applied or above may be newer, and
// is left alone.
func (g *Guard) Decided(now, ticks, applied, holder uint64) {
	if g.anyOrder || holder == 0 || g.holder == 0 || g.holder == holder || g.instance >= applied {
		return
	}
	g.holder, g.until, g.instance = holder, now+ticks, applied-1
}

// Restore rebuilds the guard at a restart, at tick now: applied is the
// holder of the lease in the applied state (0: none), accepted the durable
// accepted records, in any order. The guard lasts a full lease from now,
// since when the acceptor last accepted a lease is not known. The latest
// accepted lease (by ballot, then instance) is newer than the applied one
// when both name the same holder or the applied one names none. When they
// differ, either may be the newer: an older ballot's lease may sit in a
// higher instance than the lease since chosen and applied at a newer ballot,
// whose ballot the applied state does not keep. Then the guard refuses
// everyone for that lease: whichever holder's lease is on is guarded.
func (g *Guard) Restore(now, ticks, applied uint64, accepted []core.InstanceValue) {
	*g = Guard{anyOrder: g.anyOrder}
	for _, a := range accepted {
		g.Accepted(now, ticks, a.Ballot, a.Instance, a.Value)
	}
	switch {
	case applied == 0:
	case g.holder == 0:
		g.holder, g.until = applied, now+ticks
	case g.holder != applied && !g.anyOrder:
		g.holder = Everyone
	}
}

// Refuses reports whether the guard refuses a Prepare from node from at
// tick now: it guards another holder's lease that may still run.
func (g *Guard) Refuses(now, from uint64) bool {
	return g.holder != 0 && from != g.holder && now < g.until
}

// View is a node's view of the lease in the log: how long it counts its own
// lease (as the holder) or another's (as everyone else), and its own lease
// proposal in flight.
type View struct {
	cfg       Config
	id, epoch uint64
	// otherUntil: a lease applied for another node counts until then.
	// holderUntil: this node's own lease counts until then.
	otherUntil, holderUntil uint64
	// foreignEnd is one past the highest instance in which this node, after
	// a phase 1, re-proposed a lease naming another node (0: none).
	foreignEnd uint64
	// reproposedEnd is foreignEnd as Reproposed left it in this term
	// (handovers aside); otherReproposed: the lease that set otherUntil applied below it, so
	// it is one this node re-proposed after a phase 1 (or older).
	reproposedEnd   uint64
	otherReproposed bool
	// sightings: the lease values this node's acceptor accepted, by
	// instance: the ballot, and when it first accepted that (instance,
	// ballot). seen: for the leases this term re-proposed, by instance,
	// when this node first saw that value (accepted it, or else found it).
	sightings  map[uint64]sighting
	seen       map[uint64]seenLease
	inFlight   bool   // a lease proposal of ours is in flight
	start      uint64 // when it was proposed
	keepOwn    bool   // planted: a re-proposed foreign lease changes nothing
	keepOnOver bool   // planted: a handover leaves our lease counting
}

// seenLease: when this node first saw a re-proposed lease, and which one.
type seenLease struct{ at, holder, epoch, start uint64 }

type sighting struct {
	ballot idgen.Ballot
	at     uint64
}

// NewView returns the view of node id in incarnation epoch (which tells its
// own lease proposals from those of its earlier lives).
func NewView(cfg Config, id, epoch uint64) *View {
	return &View{cfg: cfg, id: id, epoch: epoch}
}

// PlantKeepOwn makes a re-proposed foreign lease leave the holder's own
// lease counting. Only for tests that prove they catch it.
func (v *View) PlantKeepOwn() { v.keepOwn = true }

// PlantKeepOnHandover makes a handover leave the master's own lease
// counting. Only for tests that prove they catch it.
func (v *View) PlantKeepOnHandover() { v.keepOnOver = true }

// Held reports whether this node's own lease counts at tick now.
func (v *View) Held(now uint64) bool { return now < v.holderUntil }

// Remaining returns how many ticks from now the lease this node counts
// runs on: its own while it holds one, else another node's (0: none).
func (v *View) Remaining(now uint64) uint64 {
	switch {
	case now < v.holderUntil:
		return v.holderUntil - now
	case now < v.otherUntil:
		return v.otherUntil - now
	}
	return 0
}

// PlantForgetOther ends another node's lease at once: the planted bug
// that lets a failure detector's report end a lease. Only for tests that
// prove they catch it.
func (v *View) PlantForgetOther() { v.otherUntil = 0 }

// OtherValid reports whether a lease applied for another node counts at
// tick now.
func (v *View) OtherValid(now uint64) bool { return now < v.otherUntil }

// Restore starts the view over at tick now, when the lease in the applied
// state was renewed we know not when (a restart, a base installed): the
// lease counts a full lease from now for everyone but its holder, who
// counts nothing until it renews.
func (v *View) Restore(now uint64) {
	v.otherUntil, v.holderUntil, v.inFlight, v.otherReproposed = now+v.cfg.Ticks, 0, false, false
	v.sightings, v.seen = nil, nil
}

// Accepted notes that this node's acceptor accepted val at ballot b in
// instance i at tick now. A lease in it was proposed before now: if this
// node later re-proposes that same value, it counts the lease from now,
// not from when the re-proposal applies (Refound).
func (v *View) Accepted(now, i uint64, b idgen.Ballot, val core.Value) {
	if _, ok := HolderIn(val); !ok {
		return
	}
	if s, ok := v.sightings[i]; ok && s.ballot == b {
		return // a resent Accept: the first sighting stands
	}
	if v.sightings == nil {
		v.sightings = map[uint64]sighting{}
	}
	v.sightings[i] = sighting{ballot: b, at: now}
}

// Refound notes, at tick now, the values a phase 1 found and this node
// re-proposes, each with the ballot it was found at. For each lease among
// them it keeps when it first saw that value: when its acceptor accepted
// the same (instance, ballot), else now. Either way the lease's holder
// proposed it before, so it counts the lease, once applied, a full lease
// from that moment at most: a dead master's renewal that was in flight
// costs the survivors one lease from its acceptance, not a second one from
// its re-proposal.
func (v *View) Refound(now uint64, found []core.InstanceValue) {
	for _, f := range found {
		if _, ok := HolderIn(f.Value); !ok {
			continue
		}
		at := now
		if s, ok := v.sightings[f.Instance]; ok && s.ballot == f.Ballot {
			at = s.at
		}
		if v.seen == nil {
			v.seen = map[uint64]seenLease{}
		}
		sl := seenLease{at: at}
		for _, c := range f.Value.Commands {
			if c.Kind == core.CmdLease {
				sl.holder, sl.epoch, sl.start = c.Holder, c.Epoch, c.Start
			}
		}
		v.seen[f.Instance] = sl
	}
}

// Applied takes in a lease command applied in instance at tick now: its
// holder, incarnation and start, and whether its compare-and-set matched
// (only then did the lease change). Our own proposal is no longer in
// flight either way.
func (v *View) Applied(now, instance, holder, epoch, start uint64, ok bool) {
	if epoch == v.epoch && start == v.start {
		v.inFlight = false
	}
	for i := range v.sightings {
		if i < instance {
			delete(v.sightings, i)
		}
	}
	for i := range v.seen {
		if i < instance {
			delete(v.seen, i)
		}
	}
	if !ok {
		return
	}
	from := now
	if sl, ok := v.seen[instance]; ok && sl.at < now && sl.holder == holder && sl.epoch == epoch && sl.start == start {
		from = sl.at // the lease this term re-proposed, seen before now
	}
	v.otherUntil, v.holderUntil = from+v.cfg.Ticks, 0
	v.otherReproposed = instance < v.reproposedEnd
	if holder == v.id && epoch == v.epoch && instance >= v.foreignEnd {
		// Counted from when we proposed it, less the drift margin.
		v.holderUntil = start + v.cfg.Ticks - v.cfg.Margin
	}
}

// Reproposed looks at the Accepts that re-propose what a phase 1 found. A
// lease naming another node among them, once accepted, moves the
// acceptors' guard to that node: its ballot is higher than the one that
// chose any lease of ours so far, whatever the instances. So from now on
// our own lease no longer counts: we stop before the Accepts leave, and
// count again only a lease of ours proposed after them (in an instance
// above every one re-proposed), never one chosen before or re-proposed
// with them.
func (v *View) Reproposed(accepts []core.Message) {
	if v.keepOwn {
		return
	}
	var end uint64
	foreign := false
	for _, m := range accepts {
		if m.Type != core.MsgAccept || m.To != v.id {
			continue
		}
		end = max(end, m.Instance+1)
		if h, ok := HolderIn(m.Value); ok && h != v.id {
			foreign = true
		}
	}
	if foreign {
		v.foreignEnd, v.holderUntil = max(v.foreignEnd, end), 0
		v.reproposedEnd = max(v.reproposedEnd, end)
	}
}

// WaitOut reports whether a leading node should wait at tick now for
// another node's lease to run out, rather than step down: the lease counts
// and it applied below the end of what this node re-proposed after its
// phase 1, so it is one of those (a dead master's renewal that was in
// flight, say). Stepping
// down would only run another phase 1 once the lease ran out, against the
// other voters, which wait it out too; staying, the node proposes its own
// lease as soon as the other's runs out (Due), in one round trip. It waits
// as long as stepping down would have: it proposes nothing for clients
// until its own lease applies.
func (v *View) WaitOut(now uint64) bool { return v.OtherValid(now) && v.otherReproposed }

// Due reports whether a leading node that applied the instances below
// applied should propose a lease at tick now: none of its own is in flight,
// none naming another node that it re-proposed or handed over is still to
// apply, and it does not hold one (mine: the lease in the applied state
// names it) with more than half the lease left. A lease of ours proposed
// above a foreign one still to apply would carry the lease version from
// before that one applies and fail its compare-and-set, yet every acceptor
// that accepted it would guard us for a full lease: the node the foreign
// lease names could not take over until then.
func (v *View) Due(now, applied uint64, mine bool) bool {
	if v.inFlight || applied < v.foreignEnd && !v.keepOwn {
		return false
	}
	return !mine || now >= v.holderUntil || v.holderUntil-now <= v.cfg.Ticks/2
}

// Proposing notes that we propose a lease command at tick now; it returns
// the Start and Epoch the command carries.
func (v *View) Proposing(now uint64) (start, epoch uint64) {
	v.inFlight, v.start = true, now
	return now, v.epoch
}

// HandedOver notes that the lease command just proposed (Proposing), in
// instance, names another node: the master hands its lease over. Acceptors
// that accept it guard that node (the same ballot, a higher instance than
// our lease), so our own lease stops counting now, before the Accepts
// leave, and counts again only from a lease of ours in a higher instance
// (if the handover's compare-and-set fails, we renew).
func (v *View) HandedOver(instance uint64) {
	if v.keepOnOver {
		return
	}
	v.holderUntil, v.foreignEnd = 0, max(v.foreignEnd, instance+1)
}

// InFlight reports whether a lease proposal of ours is in flight.
func (v *View) InFlight() bool { return v.inFlight }

// StepDown forgets our lease proposal in flight, and what this term
// re-proposed: a new term proposes anew.
func (v *View) StepDown() { v.inFlight, v.reproposedEnd, v.seen = false, 0, nil }
