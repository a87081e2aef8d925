package sim

import (
	"fmt"
	"slices"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
)

// Membership changes and wiped disks (Options.Membership, Options.Wipes).
//
// The driver asks the master, now and then, for a change: add a node that
// is not a member as a follower (a spare, or a member removed before),
// promote a follower, remove a member; instance.ProposeChange refuses what
// cannot take effect. A wiped node loses its whole disk, the incarnation of
// its directory with it, and restarts with the cluster's first --peers, as
// an operator rerunning its old command would. Its peers refuse it (the
// runtime's incarnation check, modelled in admit) and it stops; the driver
// then replaces it as docs/operations.md says: remove it, start it on its
// empty disk as a node that joins, add it as a follower, promote it later.

// spares is how many nodes outside the first configuration a run with
// membership changes starts: they mirror the log until added.
const spares = 2

// incarnationOf is the incarnation of a node's first directory: fixed, so
// that runs without wipes draw nothing more from the seed.
func incarnationOf(id uint64) uint64 { return id*0x9e3779b97f4a7c15 | 1 }

// admit is the runtime's incarnation check on a message from -> to: the
// incarnation the configuration to applied records for from (non-zero) is
// the one accepted; otherwise the one to saw first. A refused sender stops
// (its server exits), until the driver replaces it.
func (w *world) admit(to, from *node) bool {
	if w.opt.Bug == instance.BugWipedVotes || !w.opt.Wipes {
		return true
	}
	// As the runtime's check: only the voters of the configuration the
	// receiver applied are checked (a follower does not vote), and the
	// incarnation the configuration records is authoritative.
	// Both the configuration in effect and a pending one count (a voter
	// being removed still votes until its removal takes effect), the
	// newest's incarnation first, as server.follow does.
	h := to.core.Applied().Members
	m, ok := h.Latest().Get(from.id)
	if cur, inCur := h.Cur.Get(from.id); !ok || inCur && cur.Role == members.Voter && m.Role != members.Voter {
		m, ok = cur, inCur
	}
	if !ok || m.Role != members.Voter {
		return true
	}
	want, known := to.disk.peers[from.id]
	if m.Incarnation != 0 {
		want, known = m.Incarnation, true
	}
	if !known || want == from.incarnation {
		to.disk.peers[from.id] = from.incarnation
		return true
	}
	if from.up && !from.refused && !from.joined && !namesItself(from) {
		// As server.Start: a directory that joined, or one its own
		// membership names, carries on (the peer is behind); a directory
		// the cluster was created with that its membership does not name
		// by its incarnation stops.
		w.tracef("node %d refuses node %d: incarnation %x, known as %x", to.id, from.id, from.incarnation, want)
		from.refused = true
		w.faults["refused"]++
		w.crash(from, "refused by a peer: its directory is not the one the cluster knew")
	}
	return false
}

// wipe deletes n's durable state and restarts it with the cluster's first
// configuration, as a member of it: only the incarnation check keeps it
// from voting with what it lost.
func (w *world) wipe(n *node) {
	w.crash(n, "wiped")
	n.disk, n.durable = newDisks()
	n.incarnation = w.mrng.Uint64() | 1
	n.lost = true // a node that joined restarts with --join, and joins again
	w.inv.wiped(n)
	w.faults["wipe"]++
	w.tracef("wipe %d: new incarnation %x", n.id, n.incarnation)
	w.restartLater(n)
}

// memberChange asks the master for one change: a replacement step for a
// wiped node first, else one drawn at random.
func (w *world) memberChange() {
	m := w.master()
	if m == nil {
		return
	}
	latest := m.core.Applied().Members.Latest()
	var ch members.Change
	for _, x := range w.nodes {
		if !x.lost || x.dead {
			continue
		}
		mm, in := latest.Get(x.id)
		switch {
		case in && mm.Incarnation == x.incarnation:
			continue // added again with its new directory
		case in:
			ch = members.Change{Kind: members.Remove, ID: x.id}
		case !x.joined || !x.up:
			// Start it again on its empty disk as a node that joins: it
			// learns the peers' incarnations from the member it joins.
			if x.up {
				w.crash(x, "stopped to rejoin")
			}
			x.joined, x.refused = true, false
			for id, inc := range m.disk.peers {
				x.disk.peers[id] = inc
			}
			w.tracef("rejoin %d", x.id)
			w.start(x)
			fallthrough
		default:
			ch = members.Change{Kind: members.AddFollower, ID: x.id, Addr: addrOf(x.id), Incarnation: x.incarnation}
		}
		break
	}
	if ch.Kind == 0 && !w.chaosOver {
		ch = w.randomChange(m, latest)
	}
	if ch.Kind == 0 {
		return
	}
	w.nextReq++
	err := m.core.ProposeChange(w.nextReq, ch)
	w.tracef("change %s at %d: %v", ch, m.id, err)
	if err == nil {
		w.faults["change-"+ch.Kind.String()]++
		w.pump(m)
	}
}

// randomChange draws a change for the master m to propose, or none.
func (w *world) randomChange(m *node, latest members.Config) members.Change {
	var outside, followers, voters []*node
	for _, x := range w.nodes {
		mm, ok := latest.Get(x.id)
		switch {
		case x.dead || x.lost || x.static:
		case !ok && (x.removed || !w.inv.ms.everListed[x.id]):
			// Never a member yet (a spare), or removed and stopped: its
			// node is started again below, as an operator would. One
			// removed that has not stopped yet waits.
			outside = append(outside, x)
		case !ok:
		case mm.Role == members.Follower:
			followers = append(followers, x)
		case x.id != m.id && (w.opt.DownForGood == 0 || x.id > uint64(w.opt.Nodes)):
			// With voters down for good (a minority of the first ones),
			// those first voters stay: removing the live ones could make
			// the dead a majority.
			voters = append(voters, x)
		}
	}
	switch w.mrng.IntN(3) {
	case 0:
		if len(outside) > 0 {
			x := outside[w.mrng.IntN(len(outside))]
			if x.removed {
				// A removed node comes back as a new one: on an empty
				// directory that joins (its old one knows it was removed).
				x.disk, x.durable = newDisks()
				x.incarnation, x.joined, x.removed = w.mrng.Uint64()|1, true, false
				for id, inc := range m.disk.peers {
					x.disk.peers[id] = inc
				}
				w.inv.wiped(x)
				w.tracef("restart %d on an empty directory to add it again: incarnation %x", x.id, x.incarnation)
				w.start(x)
			}
			return members.Change{Kind: members.AddFollower, ID: x.id, Addr: addrOf(x.id), Incarnation: x.incarnation}
		}
	case 1:
		if len(followers) > 0 {
			return members.Change{Kind: members.Promote, ID: followers[w.mrng.IntN(len(followers))].id}
		}
	case 2:
		// Keep at least three voters, so that a crash or a partition does
		// not stop the run for want of a quorum more often than before.
		pool := followers
		if len(latest.Voters()) > 3 {
			pool = slices.Concat(followers, voters)
		}
		if len(pool) > 0 {
			return members.Change{Kind: members.Remove, ID: pool[w.mrng.IntN(len(pool))].id}
		}
	}
	return members.Change{}
}

func addrOf(id uint64) string { return fmt.Sprintf("n%d", id) }

// genesisOf is the membership of the cluster the run starts: its voters,
// with their slots, as instance.Node makes it from the same list.
func genesisOf(first []instance.Member) members.History {
	c := members.Config{}
	for _, m := range first {
		c.Members = append(c.Members, members.Member{ID: m.ID, Addr: m.Addr, Role: members.Voter, Slot: m.Slot})
		c.NextSlot = max(c.NextSlot, m.Slot+1)
	}
	return members.NewHistory(c, 0)
}

// membership is what the invariants keep of the configurations: the one
// every replica must compute, applied in instance order from the chosen
// values, and the owner of every slot ever handed out.
type membership struct {
	hist  members.History
	rules members.Rules
	next  uint64                // the next instance to apply to hist
	vals  map[uint64]core.Value // chosen values waiting for the instances below them
	at    map[uint64][]uint64   // instance -> the voters that decided it, once applied
	owner map[uint64]uint64     // slot -> the member it was handed to
	voted map[uint64]bool       // nodes ever listed as voters in a state they applied
	// everListed: nodes any applied configuration ever listed.
	everListed map[uint64]bool
	cache      map[string][]uint64 // one copy of each voter set
}

func newMembership(first members.History, r members.Rules) *membership {
	ms := &membership{hist: first, rules: r, vals: map[uint64]core.Value{}, at: map[uint64][]uint64{},
		owner: map[uint64]uint64{}, voted: map[uint64]bool{}, cache: map[string][]uint64{}, everListed: map[uint64]bool{}}
	for _, m := range first.Cur.Members {
		ms.voted[m.ID], ms.owner[m.Slot] = true, m.ID
	}
	return ms
}

// learned takes in a chosen value and applies every instance now in order.
func (ms *membership) learned(i uint64, v core.Value) {
	if i < ms.next {
		return
	}
	ms.vals[i] = v
	for {
		v, ok := ms.vals[ms.next]
		if !ok {
			return
		}
		delete(ms.vals, ms.next)
		ms.at[ms.next] = ms.intern(ms.hist.At(ms.next).Voters())
		for _, c := range v.Commands {
			if c.Kind == core.CmdMember {
				if h, err := ms.hist.Apply(ms.next, c.Change, ms.rules); err == nil {
					ms.hist = h
				}
			}
		}
		ms.next++
		ms.hist = ms.hist.Settle(ms.next)
	}
}

func (ms *membership) intern(vs []uint64) []uint64 {
	k := fmt.Sprint(vs)
	if c, ok := ms.cache[k]; ok {
		return c
	}
	ms.cache[k] = vs
	return vs
}

// votersAt returns the voters that decide instance i. Any instance a node
// accepted is below every node's applied frontier plus the change delay,
// so the changes that decide it are among those applied here.
func (ms *membership) votersAt(i uint64) []uint64 {
	if vs, ok := ms.at[i]; ok {
		return vs
	}
	return ms.intern(ms.hist.At(i).Voters())
}

// quorumOf reports whether the nodes in mask make a majority of voters.
func quorumOf(voters []uint64, mask uint64) bool {
	n := 0
	for _, v := range voters {
		if mask&(1<<v) != 0 {
			n++
		}
	}
	return n >= len(voters)/2+1
}

// state checks a node's applied membership as it is persisted: no slot is
// ever handed to two members.
func (v *invariants) memberState(n *node, h members.History) {
	cfgs := []members.Config{h.Cur}
	if h.Next != nil {
		cfgs = append(cfgs, *h.Next)
	}
	for _, c := range cfgs {
		for _, m := range c.Members {
			v.ms.everListed[m.ID] = true
			if m.Role != members.Voter {
				continue
			}
			if m.ID == n.id {
				v.ms.voted[n.id] = true
			}
			if x := v.w.node(m.ID); x.lost && m.Incarnation == x.incarnation {
				x.lost = false // a member again, with its new directory
			}
			if o, ok := v.ms.owner[m.Slot]; ok && o != m.ID {
				v.w.fail("node %d applied a configuration that hands slot %d to member %d; it was member %d's", n.id, m.Slot, m.ID, o)
				return
			}
			v.ms.owner[m.Slot] = m.ID
		}
	}
}

// sameConfig checks that node n, which just accepted instance i, counts
// the voters every replica must count there.
func (v *invariants) sameConfig(n *node, i uint64) {
	st := n.core.Applied()
	if i < st.Applied || st.Members.IsZero() {
		return
	}
	got, want := st.Members.At(i).Voters(), v.ms.votersAt(i)
	if !slices.Equal(got, want) {
		v.w.fail("node %d accepted instance %d deciding it by voters %v; the changes chosen make it %v", n.id, i, got, want)
	}
}

// lostVote checks a vote as it is delivered: a node that lost its disk
// never votes until it is a member again with its new directory. dir is
// the directory the vote was sent from: one sent before the wipe, still in
// flight, was cast with the state the old directory held then (as any vote
// of a node whose disk is lost later), not with what was lost.
func (v *invariants) lostVote(from *node, m core.Message, dir uint64) {
	if (m.Type == core.MsgPromise || m.Type == core.MsgAccepted) && !m.Reject && from.lost && dir == from.incarnation {
		v.w.fail("node %d's %s for ballot %d was counted: it lost its disk and is not a member with its new one", from.id, m.Type, m.Ballot)
	}
}

// wiped forgets what the invariants knew of n's lost disk: its promises and
// ballots belong to a directory that is gone.
func (v *invariants) wiped(n *node) {
	delete(v.promise, n.id)
	delete(v.released, n.id)
	delete(v.prepared, n.id)
	delete(v.guards, n.id)
	delete(v.versions, n.id)
}

// listed reports whether the configurations chosen so far list n with its
// directory: then it must keep up with the log.
func (ms *membership) listed(n *node) bool {
	m, ok := ms.hist.Latest().Get(n.id)
	return ok && (m.Incarnation == n.incarnation || m.Incarnation == 0 && !n.joined)
}

// namesItself reports whether the membership n applied names it with its
// directory's incarnation.
func namesItself(n *node) bool {
	m, ok := n.core.Applied().Members.Latest().Get(n.id)
	return ok && m.Incarnation != 0 && m.Incarnation == n.incarnation
}
