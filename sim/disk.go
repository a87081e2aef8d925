package sim

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// disk is one node's durable storage. Only what a completed sync wrote is
// here; a crash loses the Ready being persisted.
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
