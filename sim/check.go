package sim

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/lease"
)

// invariants are the safety properties checked after every event:
//
//   - promises never decrease, in memory and on disk, across restarts too;
//   - one value per (instance, ballot), over every Accept sent and every
//     accepted record;
//   - at most one value chosen per instance, where chosen means a quorum of
//     durable accepted records, and every node learns that value;
//   - applied logs are prefixes of one log with no holes;
//   - every acknowledged append is at its returned index, forever;
//   - no (client_id, seq) is applied twice;
//   - no promise or accept reply leaves before its record is durable;
//   - a follower never sends a Prepare, Promise, Accept, Accepted or Commit;
//   - the ballots a node issues only go up, across restarts;
//   - an acceptor never accepts a ballot below the promise it holds;
//   - an acceptor promises no node but the holder of the latest lease it
//     accepted (highest ballot, then highest instance) for LeaseTicks after
//     accepting it (the lease guard), and nothing is chosen at a ballot
//     above that of a node holding a valid lease by its own clock;
//   - bases (the state and dedup table right after a trim) taken at the
//     same instance are identical, and a node installs only a base some
//     node took, unchanged; staged entries are entries of the one log;
//   - a disk holds every chosen value from its base on and every entry of
//     its log, and its first index moves only with a new base (disk.whole).
type invariants struct {
	w          *world
	valueAt    map[[2]uint64]uint64 // (instance, ballot) -> value fingerprint
	acceptedBy map[[2]uint64]uint64 // (instance, ballot) -> bitmask of acceptors with it durable
	chosen     map[uint64]uint64    // instance -> fingerprint chosen by a quorum
	learned    map[uint64]uint64    // instance -> fingerprint some node applied
	canonical  []string             // the one user log
	ackedAt    map[uint64]string    // acknowledged but not yet applied anywhere
	dedupAt    map[[2]uint64][2]uint64
	promise    map[uint64]idgen.Ballot // node -> in-memory promise last seen
	released   map[uint64]idgen.Ballot // node -> highest promise a reply revealed
	prepared   map[uint64][2]uint64    // node -> (highest ballot it sent a Prepare for, incarnation)
	bases      map[uint64]uint64       // instance -> fingerprint of the base taken there
	guards     map[uint64]leaseGuard   // voter -> the lease guard its acceptor must keep
	versions   map[uint64]uint64       // voter -> its applied lease version, last seen
	ms         *membership             // the configurations (sim/members.go)
	buf        []byte
}

func newInvariants(w *world) *invariants {
	return &invariants{
		w:       w,
		valueAt: map[[2]uint64]uint64{}, acceptedBy: map[[2]uint64]uint64{}, chosen: map[uint64]uint64{},
		learned: map[uint64]uint64{}, ackedAt: map[uint64]string{}, dedupAt: map[[2]uint64][2]uint64{},
		promise: map[uint64]idgen.Ballot{}, released: map[uint64]idgen.Ballot{}, prepared: map[uint64][2]uint64{},
		bases: map[uint64]uint64{}, guards: map[uint64]leaseGuard{}, versions: map[uint64]uint64{},
	}
}

// leaseGuard is what an acceptor that accepted a lease must keep to
// (docs/protocol.md §5): it promises no node but holder until its clock
// reaches until. Only a lease accepted at a higher ballot, or at the same
// ballot in a higher instance, replaces it: a new master re-proposes stale
// leases below its own at its ballot, a duplicate Accept may come late, and
// a deposed master's own lease (a lower ballot) is never chosen once a newer
// master's value is accepted. The same lease accepted again (a resent
// Accept) does not start the guard over. After a restart whose applied and
// latest accepted leases name different holders, it promises nobody
// (holder lease.Everyone).
//
// A lease chosen in a higher instance than the guarded one, applied (or
// found in an installed base), moves the guard to its holder
// (lease.Guard.Applied). The simulator sees only that the applied lease
// version changed in an event, not in which instance: it then lets the
// acceptor promise either the old holder or the holder of the lease applied
// last (alt), and no one else until the earlier of the two guards' ends.
type leaseGuard struct {
	holder   uint64
	alt      uint64
	ballot   idgen.Ballot
	instance uint64
	until    uint64
}

// allows reports whether g lets its acceptor promise node from at tick now.
func (g leaseGuard) allows(from, now uint64) bool {
	return g.holder == 0 || from == g.holder || from == g.alt || now+guardSlack >= g.until
}

// replacedBy reports whether a lease accepted at (b, i) replaces g.
func (g leaseGuard) replacedBy(b idgen.Ballot, i uint64) bool {
	return g.holder == 0 || b > g.ballot || (b == g.ballot && i > g.instance)
}

// guardSlack: the simulator sees an accepted lease when the Ready holding
// it is taken, up to a sync (three ticks) after the acceptor took it, so
// it ends a guard that much later than the acceptor does.
const guardSlack = 5

func (v *invariants) fp(val core.Value) uint64 {
	v.buf = core.AppendValue(v.buf[:0], val)
	h := fnv.New64a()
	h.Write(v.buf)
	return h.Sum64()
}

func (v *invariants) oneValuePerBallot(i uint64, b idgen.Ballot, fp uint64, where string) {
	k := [2]uint64{i, uint64(b)}
	if old, ok := v.valueAt[k]; ok && old != fp {
		v.w.fail("two values in instance %d at ballot %d (%s)", i, b, where)
		return
	}
	v.valueAt[k] = fp
}

// sent checks a message as it leaves a node.
func (v *invariants) sent(n *node, m core.Message) {
	if !v.ms.voted[n.id] {
		switch m.Type {
		case core.MsgPrepare, core.MsgPromise, core.MsgAccept, core.MsgAccepted, core.MsgCommit:
			v.w.fail("follower %d sent %s: followers never vote or propose", n.id, m.Type)
			return
		}
	}
	switch m.Type {
	case core.MsgPrepare:
		// Ballots a node issues only go up, across restarts too.
		last := v.prepared[n.id]
		if b := uint64(m.Ballot); b < last[0] || (b == last[0] && uint64(n.inc) != last[1]) {
			v.w.fail("node %d (incarnation %d) sent Prepare(%d) after having issued ballot %d (incarnation %d): a ballot reused or gone back",
				n.id, n.inc, b, last[0], last[1])
			return
		}
		v.prepared[n.id] = [2]uint64{uint64(m.Ballot), uint64(n.inc)}
	case core.MsgAccept:
		v.oneValuePerBallot(m.Instance, m.Ballot, v.fp(m.Value), "accept sent")
	case core.MsgPromise, core.MsgAccepted:
		if m.Reject {
			return
		}
		d := n.durable
		if d.promised < m.Ballot {
			v.w.fail("node %d replied %s for ballot %d before persisting it (durable promise %d)", n.id, m.Type, m.Ballot, d.promised)
			return
		}
		if m.Type == core.MsgAccepted && m.Instance >= d.state.Applied {
			if a, ok := d.accepted[m.Instance]; !ok || a.Ballot < m.Ballot {
				v.w.fail("node %d acknowledged accepting instance %d at ballot %d before persisting it", n.id, m.Instance, m.Ballot)
				return
			}
		}
		v.released[n.id] = max(v.released[n.id], m.Ballot)
	}
}

// restarted checks that a node comes back with every promise it revealed.
func (v *invariants) restarted(n *node) {
	if n.disk.promised < v.released[n.id] {
		v.w.fail("node %d restarted with promise %d below the %d it had revealed", n.id, n.disk.promised, v.released[n.id])
	}
	if n.core != nil {
		v.promise[n.id] = n.core.Promised()
	}
	// A restarted acceptor does not know when it last accepted a lease: it
	// guards a full lease from now the holder of its latest accepted lease,
	// or of its applied lease if it accepted none; if the two differ, it
	// cannot tell which is newer and must promise nobody.
	g, ticks := leaseGuard{}, v.w.nodes[0].cfg.LeaseTicks
	for _, a := range n.disk.durable().Accepted {
		if h, ok := lease.HolderIn(a.Value); ok && g.replacedBy(a.Ballot, a.Instance) {
			g = leaseGuard{holder: h, ballot: a.Ballot, instance: a.Instance, until: ticks}
		}
	}
	switch h := n.disk.state.LeaseHolder; {
	case h == 0:
	case g.holder == 0:
		g = leaseGuard{holder: h, until: ticks}
	case g.holder != h:
		g.holder = lease.Everyone
	}
	v.guards[n.id] = g
	v.versions[n.id] = n.disk.state.LeaseVersion
}

// leaseApplied looks at n's applied state at tick now. A lease applied
// since it last looked arms an empty guard (docs/protocol.md §10). Once the
// guarded lease's instance is applied and the state names another holder,
// the guarded lease was never chosen or a later one ended it: the guard
// follows the applied holder (lease.Guard.Decided), and the old holder is
// no longer allowed. A lease applied while the guarded instance is still
// open may be older or newer than the guarded one: either holder is
// allowed (alt) until the earlier of the two guards' ends.
func (v *invariants) leaseApplied(n *node, now uint64) {
	st := n.core.Applied()
	changed := st.LeaseVersion != v.versions[n.id]
	v.versions[n.id] = st.LeaseVersion
	g, h := v.guards[n.id], st.LeaseHolder
	switch {
	case h == 0 || g.holder == h:
	case g.holder == 0:
		if changed {
			v.guards[n.id] = leaseGuard{holder: h, until: now + n.cfg.LeaseTicks}
		}
	case g.instance < st.Applied:
		// The guard's ballot and instance stay: the acceptor counts the
		// applied lease at an instance at or above the guarded one, so an
		// Accept it takes, the model takes too.
		v.guards[n.id] = leaseGuard{holder: h, ballot: g.ballot, instance: g.instance, until: now + n.cfg.LeaseTicks}
	case changed:
		g.alt, g.until = h, min(g.until, now+n.cfg.LeaseTicks)
		v.guards[n.id] = g
	}
}

// readied notes the leases among the values n accepted, from the Ready
// that persists them: those it accepted from peers and from itself.
func (v *invariants) readied(n *node, rd *instance.Ready) {
	for _, a := range rd.Accepted {
		g := v.guards[n.id]
		if h, ok := lease.HolderIn(a.Value); ok && g.replacedBy(a.Ballot, a.Instance) {
			v.guards[n.id] = leaseGuard{holder: h, ballot: a.Ballot, instance: a.Instance, until: n.core.Now() + n.cfg.LeaseTicks}
		}
	}
}

// baseFP fingerprints a base: its state and every dedup row.
func (v *invariants) baseFP(b *core.Snapshot) uint64 {
	v.buf = core.AppendState(v.buf[:0], b.State)
	for _, d := range b.Dedup {
		v.buf = binary.AppendUvarint(v.buf, d.ClientID)
		v.buf = core.AppendDedup(v.buf, d)
	}
	h := fnv.New64a()
	h.Write(v.buf)
	return h.Sum64()
}

// persisted checks the records of a Ready as they become durable.
func (v *invariants) persisted(n *node, rd *instance.Ready) {
	if rd.Install != nil {
		v.w.installs++
		at := rd.Install.State.Applied
		if fp, ok := v.bases[at]; !ok || fp != v.baseFP(rd.Install) {
			v.w.fail("node %d installed a base at instance %d that no node took (taken: %v): state %+v, %d dedup rows",
				n.id, at, ok, rd.Install.State, len(rd.Install.Dedup))
			return
		}
	}
	// A Ready that installs a base and then applies a trim past it takes a
	// new base of its own, as any node applying that trim does.
	if rd.Base != nil && (rd.Install == nil || rd.Base.State.Applied != rd.Install.State.Applied) {
		at, fp := rd.Base.State.Applied, v.baseFP(rd.Base)
		if old, ok := v.bases[at]; ok && old != fp {
			v.w.fail("node %d took a base at instance %d unlike another node's there: apply is not deterministic", n.id, at)
			return
		}
		v.bases[at] = fp
	}
	for _, e := range rd.Staged {
		if e.Index >= uint64(len(v.canonical)) || v.canonical[e.Index] != string(e.Data) {
			v.w.fail("node %d staged %s at index %d, which is not that entry of the log (%d entries applied)", n.id, brief(e.Data), e.Index, len(v.canonical))
			return
		}
	}
	for _, a := range rd.Accepted {
		fp := v.fp(a.Value)
		v.oneValuePerBallot(a.Instance, a.Ballot, fp, "accepted record")
		k := [2]uint64{a.Instance, uint64(a.Ballot)}
		v.acceptedBy[k] |= 1 << n.id
		if quorumOf(v.ms.votersAt(a.Instance), v.acceptedBy[k]) {
			v.choose(a.Instance, fp, "quorum")
			v.leaseRespected(a.Instance, a.Ballot)
		}
	}
	for _, c := range rd.Chosen {
		v.choose(c.Instance, v.fp(c.Value), "learned")
		v.ms.learned(c.Instance, c.Value)
	}
	if rd.State != nil {
		v.memberState(n, rd.State.Members)
	}
	for _, e := range rd.Entries {
		switch {
		case e.Index < uint64(len(v.canonical)):
			if v.canonical[e.Index] != string(e.Data) {
				v.w.fail("node %d applied %s at index %d where another node applied %s", n.id, brief(e.Data), e.Index, brief(v.canonical[e.Index]))
				return
			}
		case e.Index == uint64(len(v.canonical)):
			v.canonical = append(v.canonical, string(e.Data))
			if want, ok := v.ackedAt[e.Index]; ok {
				delete(v.ackedAt, e.Index)
				if want != string(e.Data) {
					v.w.fail("index %d was acknowledged for %s but %s was applied there", e.Index, brief(want), brief(e.Data))
					return
				}
			}
		default:
			v.w.fail("node %d applied index %d past the end of the log (%d)", n.id, e.Index, len(v.canonical))
			return
		}
	}
	for _, d := range rd.Dedup {
		for _, s := range d.Recent {
			k := [2]uint64{d.ClientID, s.Seq}
			at := [2]uint64{s.First, s.Last}
			if old, ok := v.dedupAt[k]; ok && old != at {
				v.w.fail("client %d seq %d applied twice: at %v and at %v", d.ClientID, s.Seq, old, at)
				return
			}
			v.dedupAt[k] = at
		}
	}
}

func (v *invariants) choose(i, fp uint64, how string) {
	if how == "quorum" {
		if old, ok := v.chosen[i]; ok && old != fp {
			v.w.fail("two values chosen in instance %d", i)
			return
		}
		v.chosen[i] = fp
	} else {
		if old, ok := v.learned[i]; ok && old != fp {
			v.w.fail("two values learned in instance %d", i)
			return
		}
		v.learned[i] = fp
	}
	if c, ok := v.chosen[i]; ok {
		if l, ok := v.learned[i]; ok && l != c {
			v.w.fail("instance %d: learned value differs from the value a quorum accepted", i)
		}
	}
}

// leaseRespected checks, as a value is chosen at ballot b, that no node
// holds a valid lease by its own clock (IsMaster: it would serve
// linearizable reads) while leading with a lower ballot. A value chosen at
// b means a quorum promised b, and the acceptors' lease guard must refuse
// every Prepare but the holder's while its lease can still be on
// (docs/protocol.md §5); otherwise the holder serves reads that miss what b
// gets chosen.
func (v *invariants) leaseRespected(i uint64, b idgen.Ballot) {
	for _, x := range v.w.nodes {
		if !x.up || !x.core.IsMaster() {
			continue
		}
		if lb := x.core.Status().Ballot; lb < b {
			v.w.fail("instance %d chosen at ballot %d while node %d holds a valid lease leading with ballot %d: another node completed phase 1 under the lease",
				i, b, x.id, lb)
			return
		}
	}
}

// acked checks an acknowledged append against the log.
func (v *invariants) acked(index uint64, value string) {
	if index < uint64(len(v.canonical)) {
		if v.canonical[index] != value {
			v.w.fail("append %s acknowledged at index %d, which holds %s", brief(value), index, brief(v.canonical[index]))
		}
		return
	}
	v.ackedAt[index] = value
}

// stepped checks an acceptor's handling of a message that arrived at its
// tick now: it promises nobody its lease guard excludes, and never accepts
// a ballot below the promise it held.
func (v *invariants) stepped(n *node, m core.Message, now uint64, promiseBefore idgen.Ballot, hadBefore core.InstanceValue, had bool) {
	if !n.up {
		return
	}
	if m.Type == core.MsgAccept {
		// The acceptor's guard moves when it accepts, before the record is
		// durable: a handover's successor may send its Prepare before the
		// Ready holding the record is taken (readied).
		if iv, ok := n.core.AcceptedAt(m.Instance); ok && iv.Ballot == m.Ballot {
			v.sameConfig(n, m.Instance)
			if h, ok := lease.HolderIn(iv.Value); ok && v.guards[n.id].replacedBy(m.Ballot, m.Instance) {
				v.guards[n.id] = leaseGuard{holder: h, ballot: m.Ballot, instance: m.Instance, until: now + n.cfg.LeaseTicks}
			}
		}
	}
	v.leaseApplied(n, now)
	if g := v.guards[n.id]; m.Type == core.MsgPrepare && m.Ballot > promiseBefore && n.core.Promised() == m.Ballot && !g.allows(m.From, now) {
		v.w.fail("node %d promised node %d's Prepare(%d) at tick %d, while guarding node %d's lease, accepted at ballot %d in instance %d, until tick %d",
			n.id, m.From, m.Ballot, now, g.holder, g.ballot, g.instance, g.until)
		return
	}
	if m.Type != core.MsgAccept || m.Ballot >= promiseBefore {
		return
	}
	if iv, ok := n.core.AcceptedAt(m.Instance); ok && iv.Ballot == m.Ballot && (!had || hadBefore.Ballot != m.Ballot) {
		v.w.fail("node %d accepted instance %d at ballot %d below its promise %d", n.id, m.Instance, m.Ballot, promiseBefore)
	}
}

// afterEvent checks the node the event touched.
func (v *invariants) afterEvent(e *event) {
	id := e.node
	if e.kind == evDeliver {
		id = e.msg.To
	}
	if id == 0 {
		return
	}
	n := v.w.node(id)
	if !n.up {
		return
	}
	if err := n.core.Check(); err != nil {
		v.w.fail("node %d: %v", id, err)
		return
	}
	if n.core.Departed() && !n.removed {
		// As the runtime does: a node removed stops once it may, for
		// good. One that thinks so wrongly is still listed, and the run
		// then fails to make progress on it.
		n.removed = true
		v.w.crash(n, "removed from the cluster")
		return
	}
	p := n.core.Promised()
	if p < v.promise[id] {
		v.w.fail("node %d promise went back from %d to %d", id, v.promise[id], p)
	}
	v.promise[id] = p
	v.leaseApplied(n, n.core.Now())
	if m := n.core.Master(); m == id && n.core.IsMaster() && m != v.w.lastMaster {
		v.w.lastMaster = m
		v.w.masters++
	}
}

// brief quotes a value for a message, cut short: large values are a KiB of
// padding after a recognisable head ("c1-7:...").
func brief[T string | []byte](v T) string {
	if len(v) <= 40 {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%q... (%d bytes)", v[:24], len(v))
}

func popcount(x uint64) int {
	c := 0
	for ; x != 0; x &= x - 1 {
		c++
	}
	return c
}
