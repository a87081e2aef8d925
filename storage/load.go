// Loading the durable state at start-up: the metadata, the apply state, the
// dedup table, the peers' incarnations and the core's Durable.

package storage

import (
	"errors"
	"fmt"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/iterator"
	"github.com/syndtr/goleveldb/leveldb/opt"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
)

// loadMeta reads the apply state, the base and the deletion cursors of an
// existing store.
func (s *Store) loadMeta() error {
	st, err := s.getState(s.db, metaState)
	if err != nil {
		return err
	}
	base, err := s.getState(s.db, metaBase)
	if err != nil {
		return err
	}
	cursor, _, err := s.getUint(s.db, metaTrim)
	if err != nil {
		return err
	}
	chosenCursor, _, err := s.getUint(s.db, metaChosen)
	if err != nil {
		return err
	}
	s.state, s.baseApplied = st, base.Applied
	s.trimCursor, s.compactFrom, s.compactTo = cursor, cursor, cursor
	s.chosenCursor, s.chosenCompactFrom, s.chosenCompactTo = chosenCursor, chosenCursor, chosenCursor
	s.accLow = st.Applied
	if err := s.loadEntryEnd(); err != nil {
		return err
	}
	if err := s.loadProgress(); err != nil {
		return err
	}
	if err := s.loadDeltas(); err != nil {
		return err
	}
	// Find the lowest accepted record, should any lie below Applied.
	it := s.db.NewIterator(prefixRange(prefixAccepted), nil)
	if it.First() {
		if _, n, ok := parseKey(it.Key()); ok && n < s.accLow {
			s.accLow = n
		}
	}
	it.Release()
	return s.readError(it.Error())
}

type reader interface {
	Get(key []byte, ro *opt.ReadOptions) ([]byte, error)
	NewIterator(slice *util.Range, ro *opt.ReadOptions) iterator.Iterator
}

func (s *Store) getUint(r reader, id uint64) (uint64, bool, error) {
	k := key(prefixMeta, id)
	v, err := r.Get(k, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, s.readError(err)
	}
	payload, err := unseal(k, v)
	if err != nil {
		return 0, false, s.recordError(k, err)
	}
	x, err := decodeUint(payload)
	if err != nil {
		return 0, false, s.recordError(k, err)
	}
	return x, true, nil
}

// getState reads the apply state stored under m/id: the live one (metaState)
// or the base's (metaBase). Absent, it is the zero state.
func (s *Store) getState(r reader, id uint64) (core.ApplyState, error) {
	k := key(prefixMeta, id)
	v, err := r.Get(k, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return core.ApplyState{}, nil
	}
	if err != nil {
		return core.ApplyState{}, s.readError(err)
	}
	payload, err := unseal(k, v)
	if err != nil {
		return core.ApplyState{}, s.recordError(k, err)
	}
	st, err := decodeState(payload)
	if err != nil {
		return core.ApplyState{}, s.recordError(k, err)
	}
	return st, nil
}

// dedupRows reads every dedup row under prefix (prefixDedup, the live table,
// or prefixBase, the base's) in client ID order.
func (s *Store) dedupRows(r reader, prefix byte) ([]core.DedupEntry, error) {
	var rows []core.DedupEntry
	it := r.NewIterator(prefixRange(prefix), nil)
	defer it.Release()
	for it.Next() {
		de, err := decodeDedupKV(it.Key(), it.Value())
		if err != nil {
			return nil, s.recordError(append([]byte{}, it.Key()...), err)
		}
		rows = append(rows, de)
	}
	if err := it.Error(); err != nil {
		return nil, s.readError(err)
	}
	return rows, nil
}

// decodeDedupKV checks and decodes a stored dedup row, live or the base's.
func decodeDedupKV(k, v []byte) (core.DedupEntry, error) {
	_, n, ok := parseKey(k)
	payload, err := unseal(k, v)
	if err == nil && !ok {
		err = fmt.Errorf("%w: bad key", errRecord)
	}
	if err != nil {
		return core.DedupEntry{}, err
	}
	return decodeDedup(n, payload)
}

func prefixRange(p byte) *util.Range { return &util.Range{Start: []byte{p}, Limit: []byte{p + 1}} }

// PeerIncarnations returns the incarnation this node first saw of each peer
// (SetPeerIncarnation), by node ID.
func (s *Store) PeerIncarnations() (map[uint64]uint64, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	out := map[uint64]uint64{}
	it := s.db.NewIterator(prefixRange(prefixPeer), nil)
	defer it.Release()
	for it.Next() {
		_, id, ok := parseKey(it.Key())
		payload, err := unseal(it.Key(), it.Value())
		if err == nil && !ok {
			err = fmt.Errorf("%w: bad key", errRecord)
		}
		var inc uint64
		if err == nil {
			inc, err = decodeUint(payload)
		}
		if err != nil {
			return nil, s.recordError(append([]byte{}, it.Key()...), err)
		}
		out[id] = inc
	}
	if err := it.Error(); err != nil {
		return nil, s.readError(err)
	}
	return out, nil
}

// Load returns the state to restore the core from: the promise, the accepted
// values of open instances (at or above State.Applied), the apply state, the
// dedup table and the base's Applied (Durable.Base). It also checks, at a
// few cheap points, that the chosen values and user entries the state
// implies are there.
func (s *Store) Load() (instance.Durable, error) {
	snap, release, err := s.view()
	if err != nil {
		return instance.Durable{}, err
	}
	defer release()

	var d instance.Durable
	if d.State, err = s.getState(snap, metaState); err != nil {
		return instance.Durable{}, err
	}
	base, err := s.getState(snap, metaBase)
	if err != nil {
		return instance.Durable{}, err
	}
	d.Base = base.Applied
	p, _, err := s.getUint(snap, metaPromise)
	if err != nil {
		return instance.Durable{}, err
	}
	d.Promised = idgen.Ballot(p)

	it := snap.NewIterator(&util.Range{Start: key(prefixAccepted, d.State.Applied), Limit: []byte{prefixAccepted + 1}}, nil)
	for it.Next() {
		_, n, ok := parseKey(it.Key())
		payload, err := unseal(it.Key(), it.Value())
		if err == nil && !ok {
			err = fmt.Errorf("%w: bad key", errRecord)
		}
		var iv core.InstanceValue
		if err == nil {
			iv, err = decodeAccepted(n, payload)
		}
		if err != nil {
			k := append([]byte{}, it.Key()...)
			it.Release()
			return instance.Durable{}, s.recordError(k, err)
		}
		d.Accepted = append(d.Accepted, iv)
	}
	it.Release()
	if err := it.Error(); err != nil {
		return instance.Durable{}, s.readError(err)
	}

	if d.Dedup, err = s.liveDedup(snap); err != nil {
		return instance.Durable{}, err
	}

	// Spot checks: the last chosen value and both ends of the user log. The
	// last chosen value is only there when it lies at or above the base: a
	// node that installed a base, or whose last applied instance was the
	// trim, holds no chosen value below it.
	if d.State.Applied > d.Base {
		k := key(prefixChosen, d.State.Applied-1)
		ok, err := snap.Has(k, nil)
		if err != nil {
			return instance.Durable{}, s.readError(err)
		}
		if !ok {
			return instance.Durable{}, s.fail(corruptError(s.dir, "record "+keyName(k),
				fmt.Errorf("missing, though the apply state (applied %d, base %d) says it exists", d.State.Applied, d.Base)))
		}
	}
	if d.State.NextIndex > d.State.FirstIndex {
		for _, i := range []uint64{d.State.FirstIndex, d.State.NextIndex - 1} {
			c := s.entryCursor(snap, d.State, i)
			c.Next()
			if err := c.close(); err != nil {
				return instance.Durable{}, err
			}
		}
	}
	return d, nil
}
