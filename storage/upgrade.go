// Upgrading a directory of an older on-disk format at Open.

package storage

import (
	"fmt"

	"github.com/syndtr/goleveldb/leveldb"

	"github.com/paxosd/paxosd/core"
)

// upgradeBatchEntries bounds the format 2 entries one write of the upgrade
// converts (restoreBatchBytes bounds their bytes).
var upgradeBatchEntries uint64 = 100000

// upgrade brings an existing directory to formatVersion. Format 2 stored
// one record per user entry: they become blocks, a batch at a time, each
// batch deleting the records it converts in the same write, so a crash
// leaves records of both kinds, none twice, and the next Open goes on. The
// last write sets the identity's format to formatVersion. Formats 3 to 5
// are format 6 without dedup deltas (3), without chosen values that leave
// their entries in the log (3 and 4) and without dedup patches: only the
// version changes.
func (s *Store) upgrade() error {
	k := key(prefixMeta, metaIdentity)
	v, err := s.db.Get(k, nil)
	if err != nil {
		return s.readError(err)
	}
	payload, err := unseal(k, v)
	if err != nil {
		return s.recordError(k, err)
	}
	if payload[0] == formatVersion {
		return nil
	}
	var converted uint64
	for {
		b := new(leveldb.Batch)
		n, done, err := s.convertEntries(b)
		if err != nil {
			return err
		}
		converted += n
		if done {
			b.Put(k, seal(k, encodeIdentity(s.meta)))
		}
		if err := s.write(b, true); err != nil {
			return fmt.Errorf("storage: %s: upgrading to format %d: %w", s.dir, formatVersion, err)
		}
		if done {
			if payload[0] == 2 {
				s.logf("storage: %s upgraded from format %d to %d (%d user entries into blocks)", s.dir, payload[0], formatVersion, converted)
			} else {
				s.logf("storage: %s upgraded from format %d to %d", s.dir, payload[0], formatVersion)
			}
			return nil
		}
	}
}

// convertEntries adds to b the conversion of the first format 2 entry
// records into blocks, at most upgradeBatchEntries or about
// restoreBatchBytes of them; done reports that none is left after b.
func (s *Store) convertEntries(b *leveldb.Batch) (n uint64, done bool, err error) {
	it := s.db.NewIterator(prefixRange(prefixEntryV2), nil)
	defer it.Release()
	var run []core.Entry
	bytes := 0
	for it.Next() {
		if n == upgradeBatchEntries || bytes >= restoreBatchBytes {
			putRun(b, &s.sealer, run)
			return n, false, nil
		}
		_, i, _ := parseKey(it.Key())
		payload, err := unseal(it.Key(), it.Value())
		if err != nil {
			return 0, false, s.recordError(append([]byte{}, it.Key()...), err)
		}
		if len(run) > 0 && run[len(run)-1].Index+1 != i {
			putRun(b, &s.sealer, run) // a hole (a trim's deletion under way): blocks hold consecutive indexes
			run = nil
		}
		run = append(run, core.Entry{Index: i, Data: append([]byte(nil), payload...)})
		b.Delete(append([]byte{}, it.Key()...))
		n++
		bytes += len(payload)
	}
	if err := it.Error(); err != nil {
		return 0, false, s.readError(err)
	}
	putRun(b, &s.sealer, run)
	return n, true, nil
}
