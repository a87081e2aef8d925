package node

import (
	"time"

	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/proposer"
)

// The loop derives the node's events (package event) from what the core
// reports after each turn: Campaign, Master and Status for the roles and
// the master, Status's Behind for catch-up, each Ready for trims, bases and
// slow syncs. The core itself never logs.

// watch runs after every turn of the loop: it logs a phase 1 started or
// ended, mastership won, lost or handed over, and a change of the master
// this node knows of (a lease that expired with none after it), and counts
// master changes (Metrics).
func (n *Node) watch() {
	phase, ballot, master := n.core.Campaign()
	known := n.core.Master()
	if phase == n.phase && ballot == n.ballot && master == (n.role == "master") && known == n.knownMaster {
		return // the loop's common case: nothing changed, no Status built
	}
	wasPhase := n.phase
	n.phase = phase
	st := n.core.Status()
	if known != n.knownMaster {
		n.masterChanged(st, known)
	}
	if st.Role == n.role && st.Ballot == n.ballot {
		return
	}
	was, wasBallot, before := n.role, n.ballot, n.counters
	n.role, n.ballot, n.counters = st.Role, st.Ballot, st.Counters
	c := st.Counters
	// A phase that began names its ballot, one that ended the ballot it ran.
	at := []any{event.KeyInstance, st.Applied, event.KeyBallot, uint64(st.Ballot)}
	ended := []any{event.KeyInstance, st.Applied, event.KeyBallot, uint64(wasBallot)}
	switch {
	case st.Role == "candidate" && st.Phase == "preparing":
		n.log.Debug(event.PhaseOneStarted, at...)
	case st.Role == "master":
		n.handoverTo = 0
		n.log.Info(event.MasterElected, append(at, "elections", c.Elections, "phase1_timeouts", c.PhaseTimeouts,
			"outbid", c.Outbid, "behind", c.Behind)...)
	case was == "master" && n.handoverTo != 0:
		n.log.Info(event.MasterHandover, append(ended, event.KeyTo, n.handoverTo)...)
		n.handoverTo = 0
	case was == "master":
		n.log.Warn(event.MasterLost, append(ended, event.KeyReason, lostReason(st, before), event.KeyMaster, st.Master)...)
	case was == "candidate" && wasPhase == proposer.Preparing && st.Phase == "idle":
		n.log.Debug(event.PhaseOneEnded, append(ended, event.KeyReason, lostReason(st, before), event.KeyMaster, st.Master)...)
	}
}

// lostReason says why a master or candidate stopped: what the core's
// counters or state show moved since it became one.
func lostReason(st instance.Status, before instance.Counters) string {
	c := st.Counters
	switch {
	case st.Role == "removed":
		return "removed from the membership"
	case c.Outbid > before.Outbid:
		return "outbid: a higher ballot"
	case c.Behind > before.Behind:
		return "behind: an acceptor applied past its phase 1"
	case c.PhaseTimeouts > before.PhaseTimeouts:
		return "phase 1 timed out: no quorum of promises"
	case st.Master != 0 && st.Master != st.ID:
		return "another node holds the lease"
	case st.Phase == "leading":
		return "lease expired: not renewed in time"
	}
	return "phase " + st.Phase
}

// masterChanged logs a change of the master this node knows of, and counts
// it (Metrics: a lapse with no master known does not count, the next
// master does if it is another node). Its own mastership is watch's.
func (n *Node) masterChanged(st instance.Status, known uint64) {
	prev := n.knownMaster
	n.knownMaster = known
	switch {
	case known == 0 && prev != n.cfg.ID && n.core.Applied().LeaseHolder == prev:
		// Its lease ran out. (A lease handed to another node shows
		// as the new holder's, and is not an expiry.)
		n.log.Warn(event.LeaseExpired, event.KeyInstance, st.Applied, event.KeyBallot, uint64(st.Ballot), "holder", prev)
	case known != 0 && known != n.cfg.ID:
		n.log.Info(event.MasterChanged, event.KeyInstance, st.Applied, event.KeyBallot, uint64(st.Ballot), event.KeyMaster, known, event.KeyPrevious, prev)
	}
	if known != 0 && known != n.lastMaster {
		if n.lastMaster != 0 && n.cfg.Metrics != nil {
			n.cfg.Metrics.masterChanges.Inc()
		}
		n.lastMaster = known
	}
}

// watchCatchup logs a catch-up started (the core finds this node behind a
// live peer) and finished, with its rate. The loop calls it every tick: a
// catch-up shorter than a tick is not logged.
func (n *Node) watchCatchup(now time.Time) {
	st := n.core.Status()
	switch {
	case st.Behind && n.catching == nil:
		n.catching = &catchupRun{from: st.Applied, began: now}
		n.log.Info(event.CatchupStarted, event.KeyInstance, st.Applied, event.KeyBallot, uint64(st.Ballot), "lag", Lag(st))
	case !st.Behind && n.catching != nil:
		run := n.catching
		n.catching = nil
		took := now.Sub(run.began)
		instances := st.Applied - run.from
		secs := max(took.Seconds(), 1e-3)
		n.log.Info(event.CatchupFinished, event.KeyInstance, st.Applied, event.KeyBallot, uint64(st.Ballot),
			"instances", instances, "bytes", run.bytes, event.KeyTook, took,
			"instances_per_sec", int64(float64(instances)/secs), "bytes_per_sec", int64(float64(run.bytes)/secs))
	}
}

// observeReady logs what a persisted Ready shows: a base installed from a
// peer, a trim applied (the base it made), a slow synced write. It counts
// the bytes a catch-up brought: chosen values applied, and the entries of
// a base being fetched.
func (n *Node) observeReady(rd *instance.Ready, took time.Duration) {
	if run := n.catching; run != nil {
		for _, c := range rd.Chosen {
			run.bytes += c.Value.Size()
		}
		for _, e := range rd.Staged { // a base's entries, fetched in chunks
			run.bytes += len(e.Data)
		}
	}
	switch {
	case rd.Install != nil:
		in := rd.Install
		n.log.Info(event.BaseInstalled, event.KeyInstance, in.State.Applied, "first_index", in.State.FirstIndex,
			"next_index", in.State.NextIndex, "clients", len(in.Dedup))
	case rd.Base != nil:
		b := rd.Base
		n.log.Info(event.TrimApplied, event.KeyInstance, b.State.Applied, "first_index", b.State.FirstIndex, "next_index", b.State.NextIndex)
	}
	if rd.MustSync() && took > n.cfg.SlowSyncThreshold {
		at := n.core.Applied().Applied
		n.slowSyncs.Note(struct{}{}, time.Now(), func(suppressed int) {
			n.log.Warn(event.SlowFsync, event.KeyInstance, at, event.KeyTook, took, event.KeyThreshold, n.cfg.SlowSyncThreshold,
				event.KeySuppress, suppressed)
		})
	}
}
