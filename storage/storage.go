// Package storage is a node's durable state in goleveldb: the acceptor's
// promise and accepted values, the chosen value of every instance applied
// since the base (served to peers that catch up), the user log entries, the
// dedup table, the apply state, and the base (the apply state and dedup
// table right after the last trim applied, served to peers behind it). The
// node runtime opens it, restores the core from Load, persists every Ready
// with one Save, and reads chosen values, the base and user entries from it.
//
// It must never acknowledge a vote before Sync returns: Save returns nil only
// once its whole Ready is in the journal, and fsynced when the Ready holds a
// promise or accepted values (Ready.MustSync), and the caller sends the
// Ready's After messages and Results only then. A Ready that only applies
// chosen values is written without an fsync: the journal is sequential, so
// a crash keeps a prefix of the Saves and a later synced Save makes every
// earlier one durable. It must never retry a failed
// write or fsync: the first write error fails the store for good (ErrFailed)
// and the node stops, because after a failed fsync the kernel may have
// dropped the dirty pages and a retry that "succeeds" would lie. It must
// never open a directory that belongs to another node or cluster
// (ErrForeign), that is not a paxosd store, or that goleveldb or a record
// checksum finds corrupt (ErrCorrupt): a node whose acceptor state cannot be
// trusted must not vote with it.
//
// The one invariant it keeps: the directory always holds exactly the state
// after some prefix of the Saves — at least every Save up to the last synced
// one that returned nil, and never a part of one.
//
// # Layout
//
// Keys are one prefix byte and a big-endian uint64:
//
//	m/0  identity: format version, cluster ID, node ID, K
//	m/1  promise (uvarint ballot)
//	m/2  apply state (core.AppendState: uvarints Applied, NextIndex, FirstIndex, LeaseHolder, LeaseVersion, LogTime)
//	m/3  trim cursor (uvarint): user entries below it are physically deleted
//	m/4  base state (core.AppendState); absent: the zero base
//	m/5  chosen cursor (uvarint): chosen values below it are physically deleted
//	m/6  incarnation (uvarint): random and non-zero, drawn when the directory was created
//	a/i  accepted value of open instance i (uvarint ballot, core.AppendValue)
//	b/id the base's dedup row of client id (as d/id)
//	c/i  chosen value of applied instance i (core.AppendValue)
//	l/i  a block of user entries from index i on (blocks.go); format 2 had e/n, one raw entry each (upgrade.go)
//	d/id dedup row of client id as of the last fold (core.AppendDedup: uvarints LastUsed, n, then n × Seq, First, Last and a 4-byte entries checksum)
//	y/n  dedup delta n: the rows one Save changed, applied over d/ in order on load (dedup.go)
//	p/id incarnation of peer id (uvarint), as this node first saw it
//	x/n  progress row (uvarints log time, entry bytes written): the log's end reached n then (progress.go)
//
// The incarnation tells this directory from any other directory of the same
// node: a node whose directory was lost and created anew comes back with
// another one, and its peers, which remember the incarnation they first saw
// (p/), refuse it (docs/operations.md "The data directory").
//
// Every value is a CRC32C (Castagnoli, big-endian) of key and payload, then
// the payload; a mismatch on read is ErrCorrupt naming the key.
//
// # Trimming
//
// A trim moves State.FirstIndex, and the Ready that applies it carries the
// new base (Ready.Base): its state goes to m/4 and its dedup table replaces
// the b/ rows, in the same batch as the live state, so the base and the live
// state never disagree on disk. While a base is current, its entries
// [FirstIndex, NextIndex) are never deleted (the first index moves only with
// a new base), so Snapshot can serve them and the b/ rows to a peer behind
// the base. Chosen values below the base's Applied are no longer needed: a
// peer that far behind installs the base instead of replaying them.
//
// Two deletions follow, each behind a cursor: user entries below
// State.FirstIndex (m/3) and chosen values below the base's Applied (m/5).
// Every Save, even an empty Ready's, continues both in its own batch: it
// iterates the keys that exist from the cursor up to the target, deletes at
// most trimChunk of them, and moves the cursor to the next key left, or to
// the target when none is. Counting existing keys rather than indexes
// matters: after an install the first index can jump by millions past
// entries and instances this node never stored, and that jump costs one
// short iteration, not millions of deletes. The iteration sees only what
// earlier Saves wrote, so a Ready's own chosen values below its new base and
// user entries below its new first index are not written at all. The
// cursors are persisted when they move, so the work resumes after a restart.
// Reads never look below State.FirstIndex, and the core never reads chosen
// values below its base, so records still waiting for deletion are harmless.
// When a cursor catches up with its target, a background CompactRange over
// the range it deleted reclaims the space; one compaction runs at a time,
// and a range that caught up meanwhile is compacted from the first Save
// after it ends.
//
// An install (Ready.Install) replaces the live dedup table whole, in the same
// batch: every d/ row and y/ delta is deleted and the installed rows are
// written, then the Ready's own records are applied over them. The user entries of the
// installed base were written before, as Ready.Staged (e/ keys above the
// live log's end, invisible until the state reaches them).
//
// # Backup, restore and retention
//
// Backup is a view of the live state (apply state, entries, dedup table)
// through one goleveldb snapshot, for paxosd snapshot save; Restore seeds
// a new directory from such a copy under dir + ".restoring" and renames it
// into place (backup.go). The progress rows (x/) index the log by log time
// and bytes written, for retention by age and bytes (progress.go).
//
// # Crash recovery
//
// goleveldb is opened with every strict flag: a damaged journal record,
// manifest or table block is an error, never silently dropped. The one
// exception is an unsynced tail of the newest journal: after its last
// complete record, zeros or a torn record (cut short, or failing its
// checksum), with no chunk with a good checksum anywhere after them. A
// process killed while writing a batch larger than a journal block leaves a
// torn record; a power loss on ext4 or XFS can leave the unsynced end of the
// file as zeros or as part of what was written. None of it was fsynced, so
// no Save in it returned; Open truncates the journal at the end of the last
// complete record, logs one line that starts "storage: cut <n> bytes" and
// names the offset, the file and why, and opens the rest. Damage followed by
// a valid chunk, damage in an older journal (synced before goleveldb moved
// on), and damage in a table or the manifest are ErrCorrupt.
package storage

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/opt"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/instance"
)

// Errors. Every error this package returns for these conditions wraps the
// matching one, for errors.Is.
var (
	// ErrForeign: the directory is not this node's store: it belongs to
	// another cluster or node, was created with another K, or is not a
	// paxosd store at all.
	ErrForeign = errors.New("data directory belongs to another node or is not a paxosd store")
	// ErrCorrupt: goleveldb or a record checksum found damage. The node must
	// not vote with this directory.
	ErrCorrupt = errors.New("data directory is corrupt")
	// ErrFailed: an earlier write or read failed and the store refuses every
	// later call. The node must stop; nothing is retried.
	ErrFailed = errors.New("storage failed")
	// ErrTrimmed: a read starts below the first index. The error is a
	// *TrimmedError that names the first index.
	ErrTrimmed = errors.New("index trimmed")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("storage closed")
)

// TrimmedError is returned by Entries for a start below the first index.
type TrimmedError struct {
	First uint64 // the first index still held
}

// Error implements error.
func (e *TrimmedError) Error() string {
	return fmt.Sprintf("index trimmed: the log starts at %d", e.First)
}

// Unwrap makes errors.Is(err, ErrTrimmed) work.
func (e *TrimmedError) Unwrap() error { return ErrTrimmed }

// Meta identifies the node a data directory belongs to. It is written when
// the directory is created and must match exactly on every later Open.
type Meta struct {
	ClusterID uint64
	NodeID    uint64
	K         uint64 // ballot stride, fixed when the cluster is created
}

// Options tunes goleveldb. Zero fields get the defaults. Memory use is
// bounded by about BlockCacheBytes + 2*WriteBufferBytes plus goleveldb's
// open-table cache, whatever the length of the log.
type Options struct {
	BlockCacheBytes  int // default 8 MiB
	WriteBufferBytes int // memtable size, default 64 MiB
	// Logf reports the rare events that are not errors but an operator
	// should know of (an unsynced journal tail cut at Open). Nil: log.Printf.
	Logf func(format string, args ...any)

	// Test hooks, set only by this package's tests.
	noSync bool               // write without fsync: a planted bug the crash test must catch
	tune   func(*opt.Options) // adjusts goleveldb's options before the open
	rand   io.Reader          // the incarnation's randomness (nil: crypto/rand), for deterministic crash runs

	// Incarnation, when non-zero, is the incarnation of a directory created
	// by this Open (the joiner drew it before it asked to be added), instead
	// of a new random one. Ignored for an existing directory.
	Incarnation uint64
	// Join, when set, is written with the identity of a directory created by
	// this Open: the node joined a running cluster (Store.Joined). Ignored
	// for an existing directory.
	Join *JoinRecord
}

const (
	defaultCache       = 8 << 20
	defaultWriteBuffer = 64 << 20 // fewer, larger level-0 flushes: the batched append rate rose from about 81-95k to 101-104k entries/s
	openFilesCache     = 500
	// reuseBytes bounds the buffers Save keeps from one write to the next.
	reuseBytes = 4 << 20
)

// Store serves catch-up from its chosen values and its base.
var _ instance.LogReader = (*Store)(nil)

// Store is one node's durable state. Save is meant for one goroutine (the
// node's) but is serialized anyway; Chosen, Entries, State and Meta may be
// called from any goroutine at any time.
type Store struct {
	dir         string
	meta        Meta
	incarnation uint64
	db          *leveldb.DB
	logf        func(string, ...any)
	rand        io.Reader // draws the incarnation
	join        *JoinRecord

	// fs is the file storage under db, which Close closes (nil for
	// OpenStorage, whose caller owns it).
	fs lstorage.Storage

	// write persists a batch, fsynced if sync; a hook so tests can inject failures.
	write func(b *leveldb.Batch, sync bool) error

	// life guards db against Close while a call uses it.
	life   sync.RWMutex
	closed bool

	failed atomic.Pointer[failedError]

	saveMu       sync.Mutex    // serializes Save; guards the fields below
	trimCursor   uint64        // no block of user entries begins below it on disk
	trimmedTo    uint64        // no block lies wholly below this first index (in memory only: 0 at open)
	entryEnd     uint64        // one past the highest user entry index stored
	chosenCursor uint64        // chosen values below it are deleted on disk
	baseApplied  uint64        // the base's State.Applied: chosen values below it may go
	accLow       uint64        // no accepted record below it is on disk
	dd           dedupDeltas   // the dedup deltas on disk (dedup.go)
	batch        leveldb.Batch // Save's, reused: it keeps its buffer (up to reuseBytes)
	sealer       sealer        // seals Save's large records (up to reuseBytes)
	// The deleted ranges not yet compacted: [compactFrom, compactTo) of user
	// entry blocks and [chosenCompactFrom, chosenCompactTo) of chosen values. The
	// To ends are where a cursor last caught up with its target; the From
	// ends move when a compaction of the range starts.
	compactFrom, compactTo             uint64
	chosenCompactFrom, chosenCompactTo uint64
	compacting                         atomic.Bool
	bg                                 sync.WaitGroup

	prog progress // the progress rows (progress.go)

	stateMu sync.RWMutex
	state   core.ApplyState // as of the last successful Save
}

// failedError is ErrFailed with its cause.
type failedError struct {
	dir   string
	cause error
}

func (e *failedError) Error() string {
	return fmt.Sprintf("storage %s failed, the node must stop (a failed write is never retried): %v", e.dir, e.cause)
}

func (e *failedError) Unwrap() []error { return []error{ErrFailed, e.cause} }

// corruptError wraps ErrCorrupt with the directory, what is damaged and the
// operator's way out.
func corruptError(dir, what string, cause error) error {
	return fmt.Errorf("%w: %s: %s: %w; this node must not vote with this directory: restore it from a backup; "+
		"without one, do not wipe it and restart (an empty directory forgets this node's promises, which can break safety): replace the node", ErrCorrupt, dir, what, cause)
}

// fail latches the store failed with cause (the first cause wins) and
// returns the error every later call gets.
func (s *Store) fail(cause error) error {
	s.failed.CompareAndSwap(nil, &failedError{dir: s.dir, cause: cause})
	return s.failed.Load()
}

// readError classifies a goleveldb read error: corruption fails the store.
func (s *Store) readError(err error) error {
	switch {
	case err == nil:
		return nil
	case lerrors.IsCorrupted(err):
		return s.fail(corruptError(s.dir, damagedFiles(err), err))
	case errors.Is(err, leveldb.ErrClosed):
		return ErrClosed
	}
	return fmt.Errorf("storage %s: read: %w", s.dir, err)
}

// recordError is a record that failed its checksum or decoding: the store is
// corrupt and fails.
func (s *Store) recordError(k []byte, err error) error {
	return s.fail(corruptError(s.dir, "record "+keyName(k), err))
}

// enter checks the store is usable and holds it open; call the returned
// function when done.
func (s *Store) enter() (func(), error) {
	s.life.RLock()
	if s.closed {
		s.life.RUnlock()
		return nil, ErrClosed
	}
	if f := s.failed.Load(); f != nil {
		s.life.RUnlock()
		return nil, f
	}
	return s.life.RUnlock, nil
}

// view opens one consistent read of the store: a goleveldb snapshot, with
// the store held open (enter) until release.
func (s *Store) view() (snap *leveldb.Snapshot, release func(), err error) {
	done, err := s.enter()
	if err != nil {
		return nil, nil, err
	}
	if snap, err = s.db.GetSnapshot(); err != nil {
		done()
		return nil, nil, s.readError(err)
	}
	return snap, func() { snap.Release(); done() }, nil
}

// Meta returns the identity the store was opened with.
func (s *Store) Meta() Meta { return s.meta }

// Incarnation returns the directory's incarnation: random and non-zero,
// drawn when the directory was created, the same on every later Open.
func (s *Store) Incarnation() uint64 { return s.incarnation }

// State returns the apply state as of the last successful Save (or Open).
func (s *Store) State() core.ApplyState {
	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	return s.state
}

// Close waits for an in-flight Save, closes the database and waits for a
// background compaction to stop. Later calls return ErrClosed. Closing twice
// is a no-op.
func (s *Store) Close() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.life.Lock()
	if s.closed {
		s.life.Unlock()
		return nil
	}
	s.closed = true
	s.life.Unlock()
	// Let a background compaction finish first: goleveldb races (and
	// panics inside) when CompactRange runs into Close.
	s.bg.Wait()
	err := s.db.Close()
	if s.fs != nil {
		if ferr := s.fs.Close(); err == nil {
			err = ferr
		}
	}
	return err
}
