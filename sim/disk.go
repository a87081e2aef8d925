package sim

import (
	"cmp"
	"fmt"
	"maps"
	"slices"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// disk is one node's storage, as a journal-backed store such as goleveldb
// keeps it. Each node has two: what it reads (every write, as the page cache
// holds it) and what survives a crash (node.durable). A synced write makes
// every earlier write durable; a crash keeps the durable state plus a prefix
// of the writes since (see world.crash).
//
// Deletions happen in the write that allows them (the real store spreads
// them over later writes): chosen values below the base, user entries below
// the first index. A core that read what it may no longer rely on finds it
// gone here.
type disk struct {
	promised idgen.Ballot
	accepted map[uint64]core.InstanceValue
	chosen   map[uint64]core.Value // instances [base.State.Applied, state.Applied)
	state    core.ApplyState
	dedup    map[uint64]core.DedupEntry
	entries  map[uint64][]byte // user log [state.FirstIndex, state.NextIndex), and staged entries above it
	base     core.Snapshot
	// peers are the incarnations of peers' data directories, as the
	// runtime's check keeps them (rpc.NewIncarnationCheck): written, synced,
	// on first contact, so both disks of a node share one table.
	peers map[uint64]uint64
}

// newDisks returns the two disks of a new node (see disk), which share one
// table of peers' incarnations.
func newDisks() (read, durable *disk) {
	read, durable = newDisk(), newDisk()
	durable.peers = read.peers
	return read, durable
}

func newDisk() *disk {
	return &disk{accepted: map[uint64]core.InstanceValue{}, chosen: map[uint64]core.Value{}, dedup: map[uint64]core.DedupEntry{}, entries: map[uint64][]byte{},
		peers: map[uint64]uint64{}}
}

// write applies one Ready's records, as one batch would, and checks that the
// disk is whole afterwards.
func (d *disk) write(rd *instance.Ready) error {
	baseBefore, firstBefore := d.base.State.Applied, d.state.FirstIndex
	if rd.Promised != 0 {
		if rd.Promised < d.promised {
			return fmt.Errorf("durable promise would go back from %d to %d", d.promised, rd.Promised)
		}
		d.promised = rd.Promised
	}
	for _, a := range rd.Accepted {
		d.accepted[a.Instance] = a
	}
	st := d.state
	if rd.State != nil {
		st = *rd.State
	}
	nextInstance, nextIndex := d.state.Applied, d.state.NextIndex
	if rd.Install != nil {
		if rd.State == nil || rd.Base == nil {
			return fmt.Errorf("an install without the state or base it implies")
		}
		if rd.Install.State.Applied <= d.state.Applied {
			return fmt.Errorf("install of a base at instance %d over applied %d", rd.Install.State.Applied, d.state.Applied)
		}
		d.dedup = map[uint64]core.DedupEntry{}
		for _, r := range rd.Install.Dedup {
			d.dedup[r.ClientID] = r
		}
		nextInstance, nextIndex = rd.Install.State.Applied, rd.Install.State.NextIndex
	}
	for _, c := range rd.Chosen {
		if c.Instance != nextInstance {
			return fmt.Errorf("chosen instance %d written where %d is next: a hole", c.Instance, nextInstance)
		}
		d.chosen[c.Instance] = c.Value
		nextInstance++
	}
	for _, e := range rd.Entries {
		if e.Index != nextIndex {
			return fmt.Errorf("entry index %d written where %d is next: a hole", e.Index, nextIndex)
		}
		nextIndex++
		if e.Index >= st.FirstIndex {
			d.entries[e.Index] = e.Data
		}
	}
	for _, e := range rd.Staged {
		if old, ok := d.entries[e.Index]; ok && string(old) != string(e.Data) {
			return fmt.Errorf("staged entry %d is %s where %s is stored", e.Index, brief(e.Data), brief(old))
		}
		if e.Index >= st.FirstIndex {
			d.entries[e.Index] = e.Data
		}
	}
	for _, r := range rd.Dedup {
		if r.Deleted {
			delete(d.dedup, r.ClientID)
		} else {
			d.dedup[r.ClientID] = r
		}
	}
	if rd.State != nil {
		if st.Applied != nextInstance || st.NextIndex != nextIndex {
			return fmt.Errorf("apply state at instance %d, index %d, but chosen values and entries reach %d, %d", st.Applied, st.NextIndex, nextInstance, nextIndex)
		}
		d.state = st
		for i := range d.accepted {
			if i < st.Applied {
				delete(d.accepted, i)
			}
		}
	}
	if rd.Base != nil {
		d.base = *rd.Base
		if d.base.State.Applied > d.state.Applied {
			return fmt.Errorf("base at instance %d ahead of the apply state at %d", d.base.State.Applied, d.state.Applied)
		}
	}
	// Only a new base or first index deletes anything: nothing is ever
	// written below them (sweeping the maps on every write made large
	// logs slow).
	if d.base.State.Applied != baseBefore {
		for i := range d.chosen {
			if i < d.base.State.Applied {
				delete(d.chosen, i)
			}
		}
	}
	if d.state.FirstIndex != firstBefore {
		for i := range d.entries {
			if i < d.state.FirstIndex {
				delete(d.entries, i)
			}
		}
	}
	return d.whole()
}

// whole checks what the state implies is there, at both ends: the first
// index moves only with a new base, the entries of the log and the chosen
// values from the base on are stored.
func (d *disk) whole() error {
	st, b := d.state, d.base.State
	if st.FirstIndex != b.FirstIndex {
		return fmt.Errorf("first index %d, but the base (at instance %d) has %d: a trim without a base", st.FirstIndex, b.Applied, b.FirstIndex)
	}
	for _, i := range []uint64{st.FirstIndex, st.NextIndex - 1} {
		if _, ok := d.entries[i]; st.NextIndex > st.FirstIndex && !ok {
			return fmt.Errorf("entry %d missing from the log [%d,%d)", i, st.FirstIndex, st.NextIndex)
		}
	}
	for _, i := range []uint64{b.Applied, st.Applied - 1} {
		if _, ok := d.chosen[i]; st.Applied > b.Applied && !ok {
			return fmt.Errorf("chosen value of instance %d missing from [%d,%d)", i, b.Applied, st.Applied)
		}
	}
	return nil
}

// clone returns a copy that shares nothing mutable with d.
func (d *disk) clone() *disk {
	c := *d
	c.accepted = maps.Clone(d.accepted)
	c.dedup = maps.Clone(d.dedup)
	c.chosen = maps.Clone(d.chosen)
	c.entries = maps.Clone(d.entries)
	c.peers = d.peers // one table: see peers
	return &c
}

// durable returns what a restarting node reads.
func (d *disk) durable() instance.Durable {
	out := instance.Durable{Promised: d.promised, State: d.state, Base: d.base.State.Applied}
	for _, a := range d.accepted {
		out.Accepted = append(out.Accepted, a)
	}
	for _, r := range d.dedup {
		out.Dedup = append(out.Dedup, r)
	}
	// Deterministic order, although the core does not depend on it.
	slices.SortFunc(out.Accepted, func(a, b core.InstanceValue) int { return cmp.Compare(a.Instance, b.Instance) })
	slices.SortFunc(out.Dedup, func(a, b core.DedupEntry) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return out
}

// log returns the user log [state.FirstIndex, state.NextIndex).
func (d *disk) log() []string {
	out := make([]string, 0, d.state.NextIndex-d.state.FirstIndex)
	for i := d.state.FirstIndex; i < d.state.NextIndex; i++ {
		out = append(out, string(d.entries[i]))
	}
	return out
}

// Chosen implements instance.LogReader over the chosen values stored,
// stopping at the first one missing.
func (d *disk) Chosen(from, to uint64, maxBytes int) ([]core.InstanceValue, error) {
	var out []core.InstanceValue
	size := 0
	for i := from; i < to; i++ {
		v, ok := d.chosen[i]
		if !ok {
			break
		}
		s := v.Size()
		if len(out) > 0 && size+s > maxBytes {
			break
		}
		size += s
		out = append(out, core.InstanceValue{Instance: i, Value: v})
	}
	return out, nil
}

// Snapshot implements instance.LogReader over the stored base. Sizes are
// counted as core.SnapChunk.Size counts them, as storage does; rows come at
// most two a chunk.
func (d *disk) Snapshot(base, index, after uint64, maxCount, maxBytes int) (core.SnapChunk, error) {
	b := d.base
	ch := core.SnapChunk{State: b.State}
	size := ch.Size()
	fits := func(n, add int) bool {
		if n > 0 && ((maxCount > 0 && n >= maxCount) || (maxBytes > 0 && size+add > maxBytes)) {
			return false
		}
		size += add
		return true
	}
	if start := max(index, b.State.FirstIndex); start < b.State.NextIndex {
		for i := start; i < b.State.NextIndex; i++ {
			data, ok := d.entries[i]
			if !ok {
				return core.SnapChunk{}, fmt.Errorf("entry %d of the base [%d,%d) missing", i, b.State.FirstIndex, b.State.NextIndex)
			}
			e := core.Entry{Index: i, Data: data}
			if !fits(len(ch.Entries), core.SnapEntrySize(e)) {
				break
			}
			ch.Entries = append(ch.Entries, e)
		}
		return ch, nil
	}
	if base != b.State.Applied {
		after = 0
	}
	ch.Done = true
	for _, r := range b.Dedup {
		if r.ClientID <= after {
			continue
		}
		// At most two rows a chunk: the simulated tables are a few rows, and
		// a base's rows must also come in several chunks here.
		if len(ch.Dedup) == 2 || !fits(len(ch.Dedup), core.SnapRowSize(r)) {
			ch.Done = false
			break
		}
		ch.Dedup = append(ch.Dedup, r)
	}
	return ch, nil
}
