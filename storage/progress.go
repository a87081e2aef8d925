package storage

import (
	"fmt"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/iterator"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/core"
)

// The progress rows are what retention by bytes and by age (paxosd server
// --retain-bytes, --retain-age) measure the log with: the log records no
// time or size per entry, so each node keeps, beside its log, a sparse
// index of it. Row x/n says: when the log's end reached index n, log time
// (core.ApplyState.LogTime, the masters' lease clock) was t, and this node
// had written c bytes of entry data in all. So every entry below n was
// applied at log time t or before, and the entries [n, m) of two rows n < m
// hold about c(m) - c(n) bytes.
//
// A Save whose state moved the log's end writes a row when log time moved
// since the last row (about every lease renewal, 750 ms, while the log
// grows) or rowBytes of entries came since it, so the index's precision is
// one renewal or rowBytes, whichever comes first. Rows below the first index
// are deleted, at most trimChunk a Save. The rows are this node's own
// (install and restart decide where they fall), not replicated state; only
// the master reads them, to decide a trim.
const prefixProgress = 'x'

// rowBytes is the most entry data between two progress rows.
const rowBytes = 1 << 20

// progressRow is one progress row.
type progressRow struct {
	index, logTime, bytes uint64
}

func encodeProgress(r progressRow) []byte { return appendUvarints(nil, r.logTime, r.bytes) }

func decodeProgress(index uint64, b []byte) (progressRow, error) {
	r := progressRow{index: index}
	if err := uvarints(b, &r.logTime, &r.bytes); err != nil {
		return r, fmt.Errorf("%w: progress row %d: %w", errRecord, index, err)
	}
	return r, nil
}

// progress is the Store's view of its progress rows (guarded by saveMu).
type progress struct {
	last   progressRow // the newest row
	bytes  uint64      // entry bytes written in all, as of the last Save
	cursor uint64      // rows below it were deleted (in memory only: 0 at open)
	// trimmedTo is the first index the deletion last moved for: rows are
	// kept from the last one at or below it, which measures the first entry.
	trimmedTo uint64
}

// loadProgress reads the newest row and counts the entry bytes written
// after it (at most about rowBytes plus one Save's worth).
func (s *Store) loadProgress() error {
	it := s.db.NewIterator(prefixRange(prefixProgress), nil)
	defer it.Release()
	if it.Last() {
		_, n, _ := parseKey(it.Key())
		payload, err := unseal(it.Key(), it.Value())
		if err == nil {
			s.prog.last, err = decodeProgress(n, payload)
		}
		if err != nil {
			return s.recordError(append([]byte{}, it.Key()...), err)
		}
	}
	if err := it.Error(); err != nil {
		return s.readError(err)
	}
	s.prog.bytes = s.prog.last.bytes
	from := max(s.prog.last.index, s.state.FirstIndex)
	if from >= s.state.NextIndex {
		return nil
	}
	c := s.entryCursor(s.db, s.state, from)
	for e, ok := c.Next(); ok; e, ok = c.Next() {
		s.prog.bytes += uint64(len(e.Data))
	}
	return c.close()
}

// saveProgress adds to b, for a Save that leads to state st having written
// add bytes of entries, the progress row it calls for and the deletion of
// rows below st.FirstIndex; it returns the progress to keep once b is
// written.
func (s *Store) saveProgress(b *leveldb.Batch, st core.ApplyState, add uint64) (progress, error) {
	p := s.prog
	p.bytes += add
	if st.NextIndex > p.last.index && (st.LogTime > p.last.logTime || p.bytes-p.last.bytes >= rowBytes) {
		p.last = progressRow{index: st.NextIndex, logTime: st.LogTime, bytes: p.bytes}
		k := key(prefixProgress, p.last.index)
		b.Put(k, seal(k, encodeProgress(p.last)))
	}
	if st.FirstIndex > p.trimmedTo || p.cursor < p.trimmedTo {
		// Delete up to the last row at or below the first index.
		to := p.cursor
		it := s.db.NewIterator(&util.Range{Start: key(prefixProgress, p.cursor), Limit: key(prefixProgress, st.FirstIndex+1)}, nil)
		if it.Last() {
			_, to, _ = parseKey(it.Key())
		}
		it.Release()
		if err := it.Error(); err != nil {
			return progress{}, s.fail(fmt.Errorf("reading progress rows to delete: %w", err))
		}
		var err error
		if p.cursor, err = s.trimRange(b, prefixProgress, p.cursor, to); err != nil {
			return progress{}, err
		}
		p.trimmedTo = st.FirstIndex
	}
	return p, nil
}

// rowSearch looks up the progress rows of one consistent view, with a
// last, virtual row at the end of the log (end: its index and the bytes
// written up to it).
type rowSearch struct {
	s   *Store
	it  iterator.Iterator
	end progressRow
	err error
}

func (s *Store) rowSearch(snap *leveldb.Snapshot, end progressRow) *rowSearch {
	return &rowSearch{s: s, end: end, it: snap.NewIterator(&util.Range{Start: key(prefixProgress, 0), Limit: key(prefixProgress, end.index)}, nil)}
}

func (q *rowSearch) row() (progressRow, bool) {
	_, n, _ := parseKey(q.it.Key())
	payload, err := unseal(q.it.Key(), q.it.Value())
	var r progressRow
	if err == nil {
		r, err = decodeProgress(n, payload)
	}
	if err != nil {
		q.err = q.s.recordError(append([]byte{}, q.it.Key()...), err)
		return progressRow{}, false
	}
	return r, true
}

// around returns the first row at or after index i (the virtual end row
// when none is) and the row before it, if any.
func (q *rowSearch) around(i uint64) (prev progressRow, hasPrev bool, next progressRow) {
	next = q.end
	if q.err != nil {
		return
	}
	if q.it.Seek(key(prefixProgress, i)) {
		if next, _ = q.row(); q.it.Prev() {
			prev, hasPrev = q.row()
		}
	} else if q.it.Last() {
		prev, hasPrev = q.row()
	}
	return
}

// bytesAt is about how many bytes were written up to entry i, assuming the
// entries between two rows are of one size.
func (q *rowSearch) bytesAt(i uint64) uint64 {
	prev, ok, next := q.around(i)
	if !ok || next.index <= prev.index || next.bytes < prev.bytes {
		return next.bytes
	}
	return prev.bytes + (next.bytes-prev.bytes)*(i-prev.index)/(next.index-prev.index)
}

// indexAt is about the index of the entry after which c bytes were written,
// rounded up, by the same assumption; at most the end of the log.
func (q *rowSearch) indexAt(c uint64, lo uint64) uint64 {
	if c >= q.end.bytes {
		return q.end.index
	}
	// The first row in [lo, end] whose bytes reach c: bytes only grow.
	hi := q.end.index
	for lo < hi {
		mid := lo + (hi-lo)/2
		if _, _, r := q.around(mid); r.bytes >= c {
			hi = mid
		} else {
			lo = r.index + 1
		}
	}
	prev, ok, next := q.around(lo)
	if !ok || next.bytes <= prev.bytes || c <= prev.bytes {
		return next.index
	}
	return prev.index + ((c-prev.bytes)*(next.index-prev.index)+(next.bytes-prev.bytes)-1)/(next.bytes-prev.bytes)
}

func (q *rowSearch) release() error {
	q.it.Release()
	if q.err != nil {
		return q.err
	}
	return q.s.readError(q.it.Error())
}

// RetainBytes measures the log for retention by bytes: held is about how
// many bytes of entry data the log [State.FirstIndex, State.NextIndex)
// holds, and before the lowest index such that [before, NextIndex) holds at
// most about keep bytes. Both assume the entries between two progress rows
// (one lease renewal's or 1 MiB of entries apart, whichever is less) are of
// one size.
func (s *Store) RetainBytes(keep uint64) (before, held uint64, err error) {
	done, err := s.enter()
	if err != nil {
		return 0, 0, err
	}
	defer done()
	s.saveMu.Lock() // the state and the bytes written, as of one Save
	snap, err := s.db.GetSnapshot()
	total := s.prog.bytes
	s.saveMu.Unlock()
	if err != nil {
		return 0, 0, s.readError(err)
	}
	defer snap.Release()
	st, err := s.getState(snap, metaState)
	if err != nil {
		return 0, 0, err
	}
	q := s.rowSearch(snap, progressRow{index: st.NextIndex, bytes: total})
	held = total - min(total, q.bytesAt(st.FirstIndex))
	before = st.FirstIndex
	if held > keep {
		before = max(before, q.indexAt(total-keep, st.FirstIndex))
	}
	return before, held, q.release()
}

// RetainAge measures the log for retention by age: before is the end of
// the log when log time was last at or below t (every entry below it was
// applied at log time t or earlier), or 0 when no row in the log is that
// old. Its precision is one lease renewal (about 750 ms of log time).
func (s *Store) RetainAge(t uint64) (before uint64, err error) {
	snap, release, err := s.view()
	if err != nil {
		return 0, err
	}
	defer release()
	st, err := s.getState(snap, metaState)
	if err != nil {
		return 0, err
	}
	// The last row in the log at or below t: log time only grows.
	q := s.rowSearch(snap, progressRow{index: st.NextIndex + 1})
	lo, hi := st.FirstIndex, st.NextIndex+1 // the first row above t lies in [lo, hi]
	for lo < hi {
		mid := lo + (hi-lo)/2
		if _, _, r := q.around(mid); r.index > st.NextIndex || r.logTime > t {
			hi = mid
		} else {
			lo = r.index + 1
		}
	}
	if prev, ok, _ := q.around(lo); ok && prev.index > st.FirstIndex && prev.logTime <= t {
		before = prev.index
	}
	return before, q.release()
}
