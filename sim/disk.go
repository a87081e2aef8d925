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
type disk struct {
	promised idgen.Ballot
	accepted map[uint64]core.InstanceValue
	chosen   []core.Value // chosen[i] is instance i's value
	state    core.ApplyState
	dedup    map[uint64]core.DedupEntry
	entries  [][]byte // user log, entries[i] at index i
}

func newDisk() *disk {
	return &disk{accepted: map[uint64]core.InstanceValue{}, dedup: map[uint64]core.DedupEntry{}}
}

// write applies one Ready's records, as one synced batch would.
func (d *disk) write(rd *instance.Ready) error {
	if rd.Promised != 0 {
		if rd.Promised < d.promised {
			return fmt.Errorf("durable promise would go back from %d to %d", d.promised, rd.Promised)
		}
		d.promised = rd.Promised
	}
	for _, a := range rd.Accepted {
		d.accepted[a.Instance] = a
	}
	for _, c := range rd.Chosen {
		if c.Instance != uint64(len(d.chosen)) {
			return fmt.Errorf("chosen instance %d written after %d: a hole", c.Instance, len(d.chosen))
		}
		d.chosen = append(d.chosen, c.Value)
	}
	for _, e := range rd.Entries {
		if e.Index != uint64(len(d.entries)) {
			return fmt.Errorf("entry index %d written after %d: a hole", e.Index, len(d.entries))
		}
		d.entries = append(d.entries, e.Data)
	}
	for _, r := range rd.Dedup {
		if r.Deleted {
			delete(d.dedup, r.ClientID)
		} else {
			d.dedup[r.ClientID] = r
		}
	}
	if rd.State != nil {
		d.state = *rd.State
		if d.state.Applied != uint64(len(d.chosen)) {
			return fmt.Errorf("apply state at instance %d but %d chosen values stored", d.state.Applied, len(d.chosen))
		}
		for i := range d.accepted {
			if i < d.state.Applied {
				delete(d.accepted, i)
			}
		}
	}
	return nil
}

// clone returns a copy that shares nothing mutable with d.
func (d *disk) clone() *disk {
	c := *d
	c.accepted = maps.Clone(d.accepted)
	c.dedup = maps.Clone(d.dedup)
	c.chosen = slices.Clone(d.chosen)
	c.entries = slices.Clone(d.entries)
	return &c
}

// durable returns what a restarting node reads.
func (d *disk) durable() instance.Durable {
	out := instance.Durable{Promised: d.promised, State: d.state}
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

// Chosen implements instance.LogReader over durable chosen values.
func (d *disk) Chosen(from, to uint64, maxBytes int) ([]core.InstanceValue, error) {
	var out []core.InstanceValue
	size := 0
	for i := from; i < to && i < uint64(len(d.chosen)); i++ {
		s := d.chosen[i].Size()
		if len(out) > 0 && size+s > maxBytes {
			break
		}
		size += s
		out = append(out, core.InstanceValue{Instance: i, Value: d.chosen[i]})
	}
	return out, nil
}
