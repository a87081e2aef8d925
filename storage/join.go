package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/syndtr/goleveldb/leveldb"
)

// JoinRecord is what a node that joined a running cluster (paxosd server
// --join) learned when it joined: the cluster's name and the voting members
// the cluster was created with (their IDs and addresses, every genesis
// member's --peers). With them the node rebuilds the cluster ID and the
// core's genesis membership at every start, without asking a member. It is
// written once, with the directory's identity, and never changes: a
// directory either joined from birth or never did.
type JoinRecord struct {
	Cluster string
	Genesis map[uint64]string
}

// metaJoin holds the JoinRecord of a directory that joined (absent: it
// was created by a member the cluster was created with, or a static
// follower).
const metaJoin = 7

func encodeJoin(j JoinRecord) []byte {
	b := binary.AppendUvarint(nil, uint64(len(j.Cluster)))
	b = append(b, j.Cluster...)
	b = binary.AppendUvarint(b, uint64(len(j.Genesis)))
	for _, id := range slices.Sorted(maps.Keys(j.Genesis)) {
		b = binary.AppendUvarint(b, id)
		b = binary.AppendUvarint(b, uint64(len(j.Genesis[id])))
		b = append(b, j.Genesis[id]...)
	}
	return b
}

func decodeJoin(b []byte) (JoinRecord, error) {
	str := func() (string, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return "", fmt.Errorf("%w: bad string in join record", errRecord)
		}
		s := string(b[k : k+int(n)])
		b = b[k+int(n):]
		return s, nil
	}
	num := func() (uint64, error) {
		x, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, fmt.Errorf("%w: bad varint in join record", errRecord)
		}
		b = b[k:]
		return x, nil
	}
	var j JoinRecord
	var err error
	if j.Cluster, err = str(); err != nil {
		return j, err
	}
	n, err := num()
	if err != nil || n > 1<<16 {
		return j, fmt.Errorf("%w: bad member count in join record", errRecord)
	}
	j.Genesis = make(map[uint64]string, n)
	for range n {
		id, err := num()
		if err != nil {
			return j, err
		}
		if j.Genesis[id], err = str(); err != nil {
			return j, err
		}
	}
	if len(b) != 0 {
		return j, fmt.Errorf("%w: %d trailing bytes in join record", errRecord, len(b))
	}
	return j, nil
}

// loadJoin reads the directory's join record, if it has one.
func (s *Store) loadJoin() error {
	k := key(prefixMeta, metaJoin)
	v, err := s.db.Get(k, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		return nil
	}
	if err != nil {
		return s.readError(err)
	}
	payload, err := unseal(k, v)
	if err != nil {
		return s.recordError(k, err)
	}
	j, err := decodeJoin(payload)
	if err != nil {
		return s.recordError(k, err)
	}
	s.join = &j
	return nil
}

// Joined returns the directory's join record: ok when the node joined a
// running cluster (Options.Join when the directory was created).
func (s *Store) Joined() (JoinRecord, bool) {
	if s.join == nil {
		return JoinRecord{}, false
	}
	return JoinRecord{Cluster: s.join.Cluster, Genesis: maps.Clone(s.join.Genesis)}, true
}

// ErrNoStore: OpenJoined found no paxosd store in the directory (it is
// missing or empty); nothing was created.
var ErrNoStore = errors.New("storage: no data directory yet")

// ErrNotJoined: OpenJoined found a store that did not join a running
// cluster (a member the cluster was created with, or a static follower):
// it must be started with the --peers it was created with.
var ErrNotJoined = errors.New("storage: this data directory did not join a running cluster")

// OpenJoined opens the existing directory of a node that joined a running
// cluster, whose cluster ID the caller learns from it: the identity must
// name nodeID and k, and the directory must hold a join record. A missing or
// empty directory is ErrNoStore (nothing is created); a store without a join
// record is ErrNotJoined, and is closed again untouched.
func OpenJoined(dir string, nodeID, k uint64, opts Options) (*Store, error) {
	s, err := openDir(dir, Meta{NodeID: nodeID, K: k}, opts, true)
	if err != nil {
		return nil, err
	}
	if s.join == nil {
		s.Close()
		return nil, fmt.Errorf("%w (%s): start it with the --peers it was created with", ErrNotJoined, s.dir)
	}
	return s, nil
}
