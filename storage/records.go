package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/syndtr/goleveldb/leveldb"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
)

// Key layout: one prefix byte naming the record kind, then a big-endian
// uint64, so that the keys of a kind sort in numeric order.
const (
	prefixMeta     = 'm' // singletons, by metaID
	prefixAccepted = 'a' // accepted (ballot, value) by instance
	prefixChosen   = 'c' // chosen value by instance
	prefixBlock    = 'l' // a block of user entries by its first index (blocks.go)
	prefixEntryV2  = 'e' // format 2: one user entry by its index (upgrade.go)
	prefixDedup    = 'd' // dedup row by client ID, as of the last fold (dedup.go)
	prefixDelta    = 'y' // dedup rows one Save changed, by a count (dedup.go)
	prefixBase     = 'b' // the base's dedup row by client ID
	prefixPeer     = 'p' // a peer's incarnation by node ID

	keyLen = 9
)

// The singletons under prefixMeta.
const (
	metaIdentity = 0 // format version, cluster ID, node ID, K
	metaPromise  = 1 // the acceptor's promise
	metaState    = 2 // the apply state
	metaTrim     = 3 // trim cursor: user entries below it are physically deleted
	metaBase     = 4 // the base's apply state
	metaChosen   = 5 // chosen cursor: chosen values below it are physically deleted
	// metaIncarnation is this directory's incarnation: random, non-zero,
	// drawn when the directory was created (or at the first Open of a
	// directory an older build created).
	metaIncarnation = 6
)

// formatVersion is the on-disk format this package writes and reads. 2 added
// each remembered seq's entries checksum to the dedup rows; a directory of
// format 1 is refused (its rows lack the checksums, and the apply rules that
// built its table changed with them). 3 stores user entries in blocks
// instead of one record each; Open upgrades a directory of format 2. 4 adds
// the dedup deltas (dedup.go), which an older build would not apply: a
// directory of format 3 is format 4 with none, and Open only rewrites its
// version. 5 writes chosen values without the user entries they put in the
// log (chosen.go), which an older build would read as corrupt: a directory
// of format 3 or 4 holds only full chosen values, which format 5 reads, and
// Open only rewrites its version. 6 writes a dedup row an earlier delta
// holds as a patch of it (dedup.go), which an older build would read as
// corrupt: a directory of format 3 to 5 holds no patches, and Open only
// rewrites its version.
const formatVersion = 6

// oldestFormat is the oldest format Open reads (and upgrades).
const oldestFormat = 2

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func key(prefix byte, n uint64) []byte {
	k := make([]byte, keyLen)
	k[0] = prefix
	binary.BigEndian.PutUint64(k[1:], n)
	return k
}

// parseKey splits a key into its prefix and number.
func parseKey(k []byte) (byte, uint64, bool) {
	if len(k) != keyLen {
		return 0, 0, false
	}
	return k[0], binary.BigEndian.Uint64(k[1:]), true
}

func keyName(k []byte) string {
	if p, n, ok := parseKey(k); ok {
		return fmt.Sprintf("%c/%d", p, n)
	}
	return fmt.Sprintf("%q", k)
}

// seal frames a payload as stored: a CRC32C (Castagnoli) of the key and the
// payload, big-endian, then the payload. Covering the key as well catches a
// record that ends up under the wrong key.
func seal(k, payload []byte) []byte {
	return sealAppend(k, len(payload), func(v []byte) []byte { return append(v, payload...) })
}

// sealAppend is seal of the payload that add appends to its argument
// (about size bytes): built in place, with no copy of the payload.
func sealAppend(k []byte, size int, add func([]byte) []byte) []byte {
	return sealInto(nil, k, size, add)
}

// sealInto is sealAppend built in buf's array when it has room (what buf
// held is lost).
func sealInto(buf, k []byte, size int, add func([]byte) []byte) []byte {
	v := add(append(slices.Grow(buf[:0], 4+size), 0, 0, 0, 0))
	binary.BigEndian.PutUint32(v, checksum(k, v[4:]))
	return v
}

// A sealer puts sealed records into batches, sealing each in one buffer
// that it reuses (a batch copies what it is given), so that the records of
// a write cost no allocation each. The zero sealer is ready to use.
type sealer struct{ buf []byte }

// put adds to b the record under k whose payload add appends (about size
// bytes).
func (z *sealer) put(b *leveldb.Batch, k []byte, size int, add func([]byte) []byte) {
	z.buf = sealInto(z.buf, k, size, add)
	b.Put(k, z.buf)
}

// trim lets go of a buffer grown past keep bytes (by a large record).
func (z *sealer) trim(keep int) {
	if cap(z.buf) > keep {
		z.buf = nil
	}
}

func checksum(k, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, payload)
}

// errRecord is the cause of every record-level decoding failure; callers
// wrap it in ErrCorrupt with the directory and key.
var errRecord = errors.New("bad record")

// unseal checks the CRC of a stored value and returns its payload (aliasing v).
func unseal(k, v []byte) ([]byte, error) {
	if len(v) < 4 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than its checksum", errRecord, len(v))
	}
	payload := v[4:]
	if want, got := binary.BigEndian.Uint32(v), checksum(k, payload); want != got {
		return nil, fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", errRecord, want, got)
	}
	return payload, nil
}

// uvarints decodes exactly len(dst) uvarints filling b.
func uvarints(b []byte, dst ...*uint64) error {
	for _, p := range dst {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: bad varint", errRecord)
		}
		*p, b = x, b[n:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errRecord, len(b))
	}
	return nil
}

func appendUvarints(dst []byte, xs ...uint64) []byte {
	for _, x := range xs {
		dst = binary.AppendUvarint(dst, x)
	}
	return dst
}

func encodeIdentity(m Meta) []byte {
	return appendUvarints([]byte{formatVersion}, m.ClusterID, m.NodeID, m.K)
}

func decodeIdentity(b []byte) (Meta, error) {
	var m Meta
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty identity", errRecord)
	}
	if b[0] < oldestFormat || b[0] > formatVersion {
		return m, fmt.Errorf("%w: format version %d, this build reads versions %d to %d", errRecord, b[0], oldestFormat, formatVersion)
	}
	err := uvarints(b[1:], &m.ClusterID, &m.NodeID, &m.K)
	return m, err
}

func encodeUint(x uint64) []byte { return binary.AppendUvarint(nil, x) }

func decodeUint(b []byte) (uint64, error) {
	var x uint64
	err := uvarints(b, &x)
	return x, err
}

// An apply state is core.AppendState's encoding, the one the base travels in
// too; storage adds the check that the first index is not above the next.
func encodeState(s core.ApplyState) []byte { return core.AppendState(nil, s) }

func decodeState(b []byte) (core.ApplyState, error) {
	s, err := core.DecodeState(b)
	if err != nil {
		return core.ApplyState{}, fmt.Errorf("%w: %w", errRecord, err)
	}
	if s.FirstIndex > s.NextIndex {
		return core.ApplyState{}, fmt.Errorf("%w: first index %d above next index %d", errRecord, s.FirstIndex, s.NextIndex)
	}
	return s, nil
}

func appendAccepted(dst []byte, iv core.InstanceValue) []byte {
	return core.AppendValue(binary.AppendUvarint(dst, uint64(iv.Ballot)), iv.Value)
}

func decodeAccepted(instance uint64, b []byte) (core.InstanceValue, error) {
	ballot, n := binary.Uvarint(b)
	if n <= 0 {
		return core.InstanceValue{}, fmt.Errorf("%w: bad ballot varint", errRecord)
	}
	v, err := core.DecodeValue(b[n:])
	if err != nil {
		return core.InstanceValue{}, fmt.Errorf("%w: %w", errRecord, err)
	}
	return core.InstanceValue{Instance: instance, Ballot: idgen.Ballot(ballot), Value: v}, nil
}

// A dedup row (live d/ or base b/) is core.AppendDedup's encoding: LastUsed,
// the count of recent seqs, then Seq, First, Last (uvarints) and the entries
// checksum (4 bytes) of each, in ascending seq order. Storage checks more than core does: a row never holds more than
// core.DedupWindow seqs, and they are in order, so a damaged row is caught
// here rather than misleading the dedup table.
func encodeDedup(d core.DedupEntry) []byte { return core.AppendDedup(nil, d) }

func decodeDedup(client uint64, b []byte) (core.DedupEntry, error) {
	d, err := core.DecodeDedup(client, b)
	if err != nil {
		return core.DedupEntry{}, fmt.Errorf("%w: dedup row of client %d: %w", errRecord, client, err)
	}
	if len(d.Recent) > core.DedupWindow {
		return core.DedupEntry{}, fmt.Errorf("%w: dedup row of client %d: bad count %d", errRecord, client, len(d.Recent))
	}
	for i, s := range d.Recent {
		if s.First > s.Last+1 || (i > 0 && s.Seq <= d.Recent[i-1].Seq) {
			return core.DedupEntry{}, fmt.Errorf("%w: dedup row of client %d: out of order", errRecord, client)
		}
	}
	return d, nil
}

// decodePayload decodes the payload of the record stored under k (CRC
// already checked). A format 2 user entry is raw bytes and always decodes.
func decodePayload(k, payload []byte) (any, error) {
	prefix, n, ok := parseKey(k)
	if !ok {
		return nil, fmt.Errorf("%w: key of %d bytes", errRecord, len(k))
	}
	switch prefix {
	case prefixMeta:
		switch n {
		case metaIdentity:
			return decodeIdentity(payload)
		case metaPromise, metaTrim, metaChosen, metaIncarnation:
			return decodeUint(payload)
		case metaState, metaBase:
			return decodeState(payload)
		}
	case prefixAccepted:
		return decodeAccepted(n, payload)
	case prefixChosen:
		return decodeChosen(n, payload)
	case prefixBlock:
		return decodeBlock(n, payload)
	case prefixEntryV2:
		return core.Entry{Index: n, Data: append([]byte{}, payload...)}, nil
	case prefixDedup, prefixBase:
		return decodeDedup(n, payload)
	case prefixDelta:
		return decodeDelta(payload)
	case prefixPeer:
		return decodeUint(payload)
	case prefixProgress:
		return decodeProgress(n, payload)
	}
	return nil, fmt.Errorf("%w: unknown key %s", errRecord, keyName(k))
}

// decodeRecord checks and decodes one stored key/value pair.
func decodeRecord(k, v []byte) (any, error) {
	payload, err := unseal(k, v)
	if err != nil {
		return nil, err
	}
	return decodePayload(k, payload)
}
