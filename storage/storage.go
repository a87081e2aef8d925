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
//	e/n  user entry n (raw bytes)
//	d/id dedup row of client id (core.AppendDedup: uvarints LastUsed, n, then n × Seq, First, Last and a 4-byte entries checksum)
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
// batch: every d/ row is deleted and the installed rows are written, then the
// Ready's own records are applied over them. The user entries of the
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
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/iterator"
	"github.com/syndtr/goleveldb/leveldb/opt"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"
	"github.com/syndtr/goleveldb/leveldb/util"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
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
	WriteBufferBytes int // memtable size, default 8 MiB
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
)

// Store serves catch-up from its chosen values and its base.
var _ instance.LogReader = (*Store)(nil)

// trimChunk bounds the user entries, and separately the chosen values, one
// Save deletes; a variable so tests can exercise the chunking.
var trimChunk uint64 = 10000

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

	saveMu       sync.Mutex // serializes Save; guards the fields below
	trimCursor   uint64     // user entries below it are deleted on disk
	chosenCursor uint64     // chosen values below it are deleted on disk
	baseApplied  uint64     // the base's State.Applied: chosen values below it may go
	accLow       uint64     // no accepted record below it is on disk
	// The deleted ranges not yet compacted: [compactFrom, compactTo) of user
	// entries and [chosenCompactFrom, chosenCompactTo) of chosen values. The
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

// Open opens the data directory dir, creating it (mode 0700) and writing meta
// if it does not exist or is empty. An existing store must carry exactly
// meta, else ErrForeign; a non-empty directory that is not a goleveldb
// database is refused with ErrForeign and left untouched, and so is a
// goleveldb database without paxosd metadata (goleveldb's recovery may have
// moved its journal into a table, losing nothing); damage is ErrCorrupt.
// meta.NodeID and meta.K must be non-zero.
func Open(dir string, meta Meta, opts Options) (*Store, error) {
	return openDir(dir, meta, opts, false)
}

// openDir is Open; with adopt, meta.ClusterID is not known: an existing
// store's is taken, and a missing or empty directory is ErrNoStore (nothing
// is created).
func openDir(dir string, meta Meta, opts Options, adopt bool) (*Store, error) {
	if err := checkMeta(dir, meta); err != nil {
		return nil, err
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if adopt {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoStore
		}
	}
	existing, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	if adopt && !existing {
		return nil, ErrNoStore
	}
	var fs lstorage.Storage
	s, err := open(dir, meta, opts, existing, adopt,
		func(lo *opt.Options) (*leveldb.DB, error) {
			stor, err := lstorage.OpenFile(dir, false)
			if err != nil {
				return nil, err
			}
			db, err := leveldb.Open(&journalSyncer{Storage: stor}, lo)
			if err != nil {
				stor.Close()
				return nil, err
			}
			fs = stor
			return db, nil
		},
		func(err error) (string, bool) { return repairJournal(dirJournals{dir}, err) })
	if err != nil {
		if fs != nil {
			fs.Close()
		}
		return nil, err
	}
	s.fs = fs
	return s, nil
}

// OpenStorage is Open on a goleveldb storage.Storage instead of a directory:
// the crash tests run the real store on storage/lossyfs, an in-memory file
// system that loses what a power loss loses. It makes the same checks as
// Open: a Storage that holds files but no goleveldb CURRENT is refused
// (ErrForeign), an existing store must carry exactly meta (ErrForeign),
// damage is ErrCorrupt, and an unsynced tail of the newest journal is cut,
// by the same rule. Storage cannot truncate a file, so that repair writes the
// journal's good prefix to a temporary file, syncs it and renames it over the
// journal. The
// name in errors is stor's String, if it has one. Close does not close stor.
func OpenStorage(stor lstorage.Storage, meta Meta, opts Options) (*Store, error) {
	name := fmt.Sprintf("%T", stor)
	if sn, ok := stor.(fmt.Stringer); ok {
		name = sn.String()
	}
	if err := checkMeta(name, meta); err != nil {
		return nil, err
	}
	existing, err := prepareStorage(name, stor)
	if err != nil {
		return nil, err
	}
	return open(name, meta, opts, existing, false,
		func(lo *opt.Options) (*leveldb.DB, error) { return leveldb.Open(&journalSyncer{Storage: stor}, lo) },
		func(err error) (string, bool) { return repairJournal(storageJournals{stor, name}, err) })
}

func checkMeta(dir string, meta Meta) error {
	if meta.NodeID == 0 || meta.K == 0 {
		return fmt.Errorf("storage: open %s: NodeID and K must be non-zero (got node %d, K %d)", dir, meta.NodeID, meta.K)
	}
	return nil
}

// open is the part of Open and OpenStorage after the directory checks:
// openLDB opens goleveldb, repair cuts an unsynced journal tail.
func open(dir string, meta Meta, opts Options, existing, adopt bool,
	openLDB func(*opt.Options) (*leveldb.DB, error), repair func(error) (string, bool)) (*Store, error) {
	logf := opts.Logf
	if logf == nil {
		logf = log.Printf
	}
	lo := &opt.Options{
		Strict:                 opt.StrictAll,
		ErrorIfMissing:         false,
		BlockCacheCapacity:     orDefault(opts.BlockCacheBytes, defaultCache),
		WriteBuffer:            orDefault(opts.WriteBufferBytes, defaultWriteBuffer),
		OpenFilesCacheCapacity: openFilesCache,
	}
	if opts.tune != nil {
		opts.tune(lo)
	}

	db, err := openDB(dir, lo, logf, openLDB, repair)
	if err != nil {
		return nil, err
	}
	fresh := !existing
	if existing {
		if fresh, meta, err = checkIdentity(dir, db, meta, adopt); err != nil {
			db.Close()
			return nil, err
		}
	}
	if fresh && adopt {
		db.Close()
		return nil, ErrNoStore
	}
	s := &Store{dir: dir, meta: meta, db: db, logf: logf, rand: opts.rand}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	s.write = func(b *leveldb.Batch, sync bool) error {
		return s.db.Write(b, &opt.WriteOptions{Sync: sync && !opts.noSync})
	}
	if fresh {
		b := new(leveldb.Batch)
		b.Put(key(prefixMeta, metaIdentity), seal(key(prefixMeta, metaIdentity), encodeIdentity(meta)))
		if opts.Join != nil {
			// With the identity, in one write: a directory joined from birth
			// or never.
			k := key(prefixMeta, metaJoin)
			b.Put(k, seal(k, encodeJoin(*opts.Join)))
			j := *opts.Join
			s.join = &j
		}
		s.incarnation = opts.Incarnation
		if err := s.newIncarnation(b); err != nil {
			db.Close()
			return nil, fmt.Errorf("storage: initialize %s: %w", dir, err)
		}
		if err := s.write(b, true); err != nil {
			db.Close()
			return nil, fmt.Errorf("storage: initialize %s: %w", dir, err)
		}
		return s, nil
	}
	if err := s.loadMeta(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadIncarnation(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadJoin(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// newIncarnation draws the directory's incarnation and adds it to b.
func (s *Store) newIncarnation(b *leveldb.Batch) error {
	var buf [8]byte
	for s.incarnation == 0 {
		if _, err := io.ReadFull(s.rand, buf[:]); err != nil {
			return fmt.Errorf("drawing an incarnation: %w", err)
		}
		s.incarnation = binary.BigEndian.Uint64(buf[:])
	}
	k := key(prefixMeta, metaIncarnation)
	b.Put(k, seal(k, encodeUint(s.incarnation)))
	return nil
}

// loadIncarnation reads the directory's incarnation; a directory an older
// build created has none, and gets one now.
func (s *Store) loadIncarnation() error {
	inc, ok, err := s.getUint(s.db, metaIncarnation)
	if err != nil {
		return err
	}
	if ok && inc != 0 {
		s.incarnation = inc
		return nil
	}
	b := new(leveldb.Batch)
	if err := s.newIncarnation(b); err != nil {
		return fmt.Errorf("storage: %s: %w", s.dir, err)
	}
	if err := s.write(b, true); err != nil {
		return fmt.Errorf("storage: %s: writing its incarnation: %w", s.dir, err)
	}
	s.logf("storage: %s had no incarnation (an older build created it): it is now %016x", s.dir, s.incarnation)
	return nil
}

func orDefault(x, d int) int {
	if x <= 0 {
		return d
	}
	return x
}

// prepareDir creates dir if missing and reports whether it holds a goleveldb
// store. A non-empty directory without one is refused.
func prepareDir(dir string) (existing bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("storage: create data directory: %w", err)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: data directory: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("storage: data directory %s is not a directory", dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("storage: data directory: %w", err)
	}
	var others []string
	for _, e := range ents {
		switch e.Name() {
		case "CURRENT":
			existing = true
		case "LOCK", "LOG", "LOG.old", "lost+found":
			// goleveldb's first files, or a mount point's: no data.
		default:
			others = append(others, e.Name())
		}
	}
	if !existing && len(others) > 0 {
		sort.Strings(others)
		if len(others) > 5 {
			others = append(others[:5], "...")
		}
		return false, fmt.Errorf("%w: %s is not empty and is not a paxosd data directory (it holds %s); refusing to initialize it: "+
			"point --data-dir at this node's own directory or at an empty one", ErrForeign, dir, strings.Join(others, ", "))
	}
	return existing, nil
}

// openDB opens goleveldb, cutting an unsynced journal tail once: repair
// returns the log line that says what it cut.
func openDB(dir string, lo *opt.Options, logf func(string, ...any),
	openLDB func(*opt.Options) (*leveldb.DB, error), repair func(error) (string, bool)) (*leveldb.DB, error) {
	for attempt := 0; ; attempt++ {
		db, err := openLDB(lo)
		if err == nil {
			return db, nil
		}
		if attempt == 0 {
			if line, ok := repair(err); ok {
				logf("%s", line)
				continue
			}
		}
		return nil, openError(dir, err)
	}
}

// checkIdentity checks that an existing store is meta's. It reports an empty
// store (a crash during the very first Open), which may be initialized.
//
// (The check runs on the read-write open: goleveldb's read-only open fails
// with io.EOF whenever two journal files exist, see recoverJournalRO, which
// returns jr.Reset's stale error. A read-write open of a foreign directory
// replays its journal into a table but loses nothing.)
func checkIdentity(dir string, db *leveldb.DB, meta Meta, adopt bool) (empty bool, _ Meta, err error) {
	k := key(prefixMeta, metaIdentity)
	v, err := db.Get(k, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		it := db.NewIterator(nil, nil)
		nonEmpty := it.Next()
		it.Release()
		if err := it.Error(); err != nil {
			return false, meta, openError(dir, err)
		}
		if !nonEmpty {
			return true, meta, nil
		}
		return false, meta, fmt.Errorf("%w: %s holds a leveldb database without paxosd metadata; refusing to use it: "+
			"point --data-dir at this node's own directory or at an empty one", ErrForeign, dir)
	}
	if err != nil {
		return false, meta, openError(dir, err)
	}
	payload, err := unseal(k, v)
	if err != nil {
		return false, meta, corruptError(dir, "record "+keyName(k), err)
	}
	if len(payload) > 0 && payload[0] != formatVersion {
		return false, meta, fmt.Errorf("storage: data directory %s uses on-disk format %d; this build reads format %d: run a paxosd that reads it",
			dir, payload[0], formatVersion)
	}
	got, err := decodeIdentity(payload)
	if err != nil {
		return false, meta, corruptError(dir, "record "+keyName(k), err)
	}
	if adopt {
		meta.ClusterID = got.ClusterID
	}
	if got != meta {
		return false, meta, fmt.Errorf("%w: this data directory (%s) belongs to cluster %d node %d (K=%d), not cluster %d node %d (K=%d); "+
			"point --data-dir at this node's own directory or at an empty one",
			ErrForeign, dir, got.ClusterID, got.NodeID, got.K, meta.ClusterID, meta.NodeID, meta.K)
	}
	return false, meta, nil
}

// prepareStorage is prepareDir for a goleveldb Storage: it reports whether
// stor holds a goleveldb store (a CURRENT), and refuses one that holds files
// without it.
func prepareStorage(name string, stor lstorage.Storage) (existing bool, err error) {
	if _, err := stor.GetMeta(); err == nil {
		return true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, openError(name, err)
	}
	fds, err := stor.List(lstorage.TypeAll)
	if err != nil {
		return false, fmt.Errorf("storage: %s: %w", name, err)
	}
	if len(fds) > 0 {
		var others []string
		for _, fd := range fds {
			others = append(others, fileName(fd))
		}
		if len(others) > 5 {
			others = append(others[:5], "...")
		}
		return false, fmt.Errorf("%w: %s is not empty and is not a paxosd store (it holds %s but no CURRENT); refusing to initialize it",
			ErrForeign, name, strings.Join(others, ", "))
	}
	return false, nil
}

func fileName(fd lstorage.FileDesc) string {
	switch fd.Type {
	case lstorage.TypeManifest:
		return fmt.Sprintf("MANIFEST-%06d", fd.Num)
	case lstorage.TypeJournal:
		return fmt.Sprintf("%06d.log", fd.Num)
	case lstorage.TypeTable:
		return fmt.Sprintf("%06d.ldb", fd.Num)
	case lstorage.TypeTemp:
		return fmt.Sprintf("%06d.tmp", fd.Num)
	}
	return fd.String()
}

// openError classifies an error from opening goleveldb.
func openError(dir string, err error) error {
	switch {
	case errors.Is(err, ErrForeign), errors.Is(err, ErrCorrupt):
		return err
	case lerrors.IsCorrupted(err):
		return corruptError(dir, damagedFiles(err), err)
	case errors.Is(err, lstorage.ErrLocked), errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK):
		return fmt.Errorf("storage: data directory %s is in use by another process: %w", dir, err)
	}
	return fmt.Errorf("storage: open %s: %w", dir, err)
}

// damagedFiles names what goleveldb says is damaged.
func damagedFiles(err error) string {
	var ce *lerrors.ErrCorrupted
	if errors.As(err, &ce) && !ce.Fd.Zero() {
		return "file " + fileName(ce.Fd)
	}
	var me *lerrors.ErrMissingFiles
	if errors.As(err, &me) && len(me.Fds) > 0 {
		var names []string
		for _, fd := range me.Fds {
			names = append(names, fileName(fd))
		}
		return "missing files " + strings.Join(names, ", ")
	}
	return "goleveldb reports corruption"
}

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
	if err := s.loadProgress(); err != nil {
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

// Meta returns the identity the store was opened with.
func (s *Store) Meta() Meta { return s.meta }

// Incarnation returns the directory's incarnation: random and non-zero,
// drawn when the directory was created, the same on every later Open.
func (s *Store) Incarnation() uint64 { return s.incarnation }

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

// SetPeerIncarnation records the incarnation of peer id, synced: it returns
// nil only once the record is durable. A failed write fails the store.
func (s *Store) SetPeerIncarnation(id, incarnation uint64) error {
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()
	k := key(prefixPeer, id)
	b := new(leveldb.Batch)
	b.Put(k, seal(k, encodeUint(incarnation)))
	if err := s.write(b, true); err != nil {
		return s.fail(fmt.Errorf("write of peer %d's incarnation: %w", id, err))
	}
	return nil
}

// State returns the apply state as of the last successful Save (or Open).
func (s *Store) State() core.ApplyState {
	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	return s.state
}

// Load returns the state to restore the core from: the promise, the accepted
// values of open instances (at or above State.Applied), the apply state, the
// dedup table and the base's Applied (Durable.Base). It also checks, at a
// few cheap points, that the chosen values and user entries the state
// implies are there.
func (s *Store) Load() (instance.Durable, error) {
	done, err := s.enter()
	if err != nil {
		return instance.Durable{}, err
	}
	defer done()
	snap, err := s.db.GetSnapshot()
	if err != nil {
		return instance.Durable{}, s.readError(err)
	}
	defer snap.Release()

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

	if d.Dedup, err = s.dedupRows(snap, prefixDedup); err != nil {
		return instance.Durable{}, err
	}

	// Spot checks: the last chosen value and both ends of the user log. The
	// last chosen value is only there when it lies at or above the base: a
	// node that installed a base, or whose last applied instance was the
	// trim, holds no chosen value below it.
	var must [][]byte
	if d.State.Applied > d.Base {
		must = append(must, key(prefixChosen, d.State.Applied-1))
	}
	if d.State.NextIndex > d.State.FirstIndex {
		must = append(must, key(prefixEntry, d.State.FirstIndex), key(prefixEntry, d.State.NextIndex-1))
	}
	for _, k := range must {
		ok, err := snap.Has(k, nil)
		if err != nil {
			return instance.Durable{}, s.readError(err)
		}
		if !ok {
			return instance.Durable{}, s.fail(corruptError(s.dir, "record "+keyName(k),
				fmt.Errorf("missing, though the apply state (applied %d, base %d, entries [%d,%d)) says it exists",
					d.State.Applied, d.Base, d.State.FirstIndex, d.State.NextIndex)))
		}
	}
	return d, nil
}

// Save persists rd's records in one goleveldb batch (synced if
// rd.MustSync()), in this order: the promise (if non-zero) and the accepted
// values; for an install, the replacement of the whole dedup table by the
// installed rows; the chosen values, the user entries (Entries and Staged),
// the dedup rows and the apply state (if non-nil); the new base (state and
// dedup rows, replacing the old ones). In the same batch it deletes the
// accepted values below State.Applied and continues deleting chosen values
// below the base and user entries below State.FirstIndex (at most trimChunk
// of each per Save). It returns nil only when the batch is written (and
// durable if synced). After any write error the store is failed and every
// later call returns ErrFailed.
func (s *Store) Save(rd *instance.Ready) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()

	st, writeState := s.state, rd.State != nil
	switch {
	case rd.State != nil:
		st = *rd.State
	case rd.Install != nil:
		// The core sets State whenever it installs; should it not, the
		// installed state is the state.
		st, writeState = rd.Install.State, true
	}
	baseApplied := s.baseApplied
	if rd.Base != nil {
		baseApplied = rd.Base.State.Applied
	}
	b := new(leveldb.Batch)
	put := func(k, payload []byte) { b.Put(k, seal(k, payload)) }
	if rd.Promised != 0 {
		put(key(prefixMeta, metaPromise), encodeUint(uint64(rd.Promised)))
	}
	for _, a := range rd.Accepted {
		if a.Instance >= st.Applied { // else it is applied already: nothing to keep
			put(key(prefixAccepted, a.Instance), encodeAccepted(a))
		}
	}
	if rd.Install != nil {
		// The installed table replaces the live one whole: a row this node
		// has and the base has not would be a client the cluster forgot.
		// The dedup rows below, for instances after the base, go over it.
		if err := s.deleteAll(b, prefixDedup); err != nil {
			return err
		}
		for _, d := range rd.Install.Dedup {
			put(key(prefixDedup, d.ClientID), encodeDedup(d))
		}
	}
	for _, c := range rd.Chosen {
		// A value below the base (applied in the Ready whose trim made the
		// base) is not kept: the chosen-value deletion below only sees
		// what earlier Saves wrote, and would pass it by for ever.
		if c.Instance >= baseApplied {
			put(key(prefixChosen, c.Instance), core.AppendValue(nil, c.Value))
		}
	}
	var entryBytes uint64
	for _, entries := range [][]core.Entry{rd.Entries, rd.Staged} {
		for _, e := range entries {
			if e.Index >= st.FirstIndex { // else trimmed by this very Ready
				put(key(prefixEntry, e.Index), e.Data)
				entryBytes += uint64(len(e.Data))
			}
		}
	}
	for _, d := range rd.Dedup {
		if d.Deleted {
			b.Delete(key(prefixDedup, d.ClientID))
			continue
		}
		put(key(prefixDedup, d.ClientID), encodeDedup(d))
	}
	if writeState {
		put(key(prefixMeta, metaState), encodeState(st))
	}
	if rd.Base != nil {
		put(key(prefixMeta, metaBase), encodeState(rd.Base.State))
		if err := s.deleteAll(b, prefixBase); err != nil {
			return err
		}
		for _, d := range rd.Base.Dedup {
			put(key(prefixBase, d.ClientID), encodeDedup(d))
		}
	}

	// Accepted values of instances now applied.
	accLow := s.accLow
	if st.Applied > accLow {
		it := s.db.NewIterator(&util.Range{Start: key(prefixAccepted, accLow), Limit: key(prefixAccepted, st.Applied)}, nil)
		for it.Next() {
			b.Delete(append([]byte{}, it.Key()...))
		}
		it.Release()
		if err := it.Error(); err != nil {
			return s.fail(fmt.Errorf("reading accepted records to delete: %w", err))
		}
		accLow = st.Applied
	}

	// Chosen values below the base and user entries below the first index,
	// a chunk at a time.
	chosenCursor, err := s.trimRange(b, prefixChosen, s.chosenCursor, baseApplied)
	if err != nil {
		return err
	}
	if chosenCursor != s.chosenCursor {
		put(key(prefixMeta, metaChosen), encodeUint(chosenCursor))
	}
	cursor, err := s.trimRange(b, prefixEntry, s.trimCursor, st.FirstIndex)
	if err != nil {
		return err
	}
	if cursor != s.trimCursor {
		put(key(prefixMeta, metaTrim), encodeUint(cursor))
	}
	prog, err := s.saveProgress(b, st, entryBytes)
	if err != nil {
		return err
	}

	if err := s.write(b, rd.MustSync()); err != nil {
		return s.fail(fmt.Errorf("write of %d records: %w", b.Len(), err))
	}
	s.accLow, s.trimCursor, s.chosenCursor, s.baseApplied = accLow, cursor, chosenCursor, baseApplied
	s.prog = prog
	if writeState {
		s.stateMu.Lock()
		s.state = st
		s.stateMu.Unlock()
	}
	// A deletion that caught up with its target has a range to compact.
	if cursor == st.FirstIndex {
		s.compactTo = cursor
	}
	if chosenCursor == baseApplied {
		s.chosenCompactTo = chosenCursor
	}
	s.startCompaction()
	return nil
}

// deleteAll adds to b the deletion of every key with prefix p.
func (s *Store) deleteAll(b *leveldb.Batch, p byte) error {
	it := s.db.NewIterator(prefixRange(p), nil)
	defer it.Release()
	for it.Next() {
		b.Delete(append([]byte{}, it.Key()...))
	}
	if err := it.Error(); err != nil {
		return s.fail(fmt.Errorf("reading %c/ records to delete: %w", p, err))
	}
	return nil
}

// trimRange adds to b the deletion of at most trimChunk of the keys with
// prefix p in [from, to) and returns the new cursor: the next key left, or
// to when none is. It iterates the keys that exist, not the numbers, so a
// range this node never stored (an install jumps over it) costs nothing.
func (s *Store) trimRange(b *leveldb.Batch, p byte, from, to uint64) (uint64, error) {
	if from >= to {
		return from, nil
	}
	it := s.db.NewIterator(&util.Range{Start: key(p, from), Limit: key(p, to)}, nil)
	defer it.Release()
	next, n := from, uint64(0)
	for it.Next() {
		_, k, ok := parseKey(it.Key())
		if n == trimChunk {
			// Stop at the next key that exists: there is none between.
			if ok {
				next = k
			}
			return next, nil
		}
		b.Delete(append([]byte{}, it.Key()...))
		n++
		if ok {
			next = k + 1
		}
	}
	if err := it.Error(); err != nil {
		return 0, s.fail(fmt.Errorf("reading %c/ records to delete: %w", p, err))
	}
	return to, nil
}

// startCompaction starts a background compaction of the deleted ranges that
// are waiting for one, unless one runs already: then the next Save after it
// ends starts it. A range whose deletion has not caught up yet waits: one
// compaction per caught-up deletion, not one per chunk.
func (s *Store) startCompaction() {
	var rs []util.Range
	if s.compactTo > s.compactFrom {
		rs = append(rs, util.Range{Start: key(prefixEntry, s.compactFrom), Limit: key(prefixEntry, s.compactTo)})
	}
	if s.chosenCompactTo > s.chosenCompactFrom {
		rs = append(rs, util.Range{Start: key(prefixChosen, s.chosenCompactFrom), Limit: key(prefixChosen, s.chosenCompactTo)})
	}
	if len(rs) == 0 || !s.compacting.CompareAndSwap(false, true) {
		return
	}
	s.compactFrom, s.chosenCompactFrom = s.compactTo, s.chosenCompactTo
	s.bg.Add(1)
	go s.compact(rs)
}

// compact reclaims the space of deleted records, off the Save path.
func (s *Store) compact(rs []util.Range) {
	defer s.bg.Done()
	defer s.compacting.Store(false)
	for _, r := range rs {
		if err := s.db.CompactRange(r); err != nil {
			if lerrors.IsCorrupted(err) {
				s.fail(corruptError(s.dir, damagedFiles(err), err))
			}
			return
		}
	}
}

// Chosen returns the chosen values of instances in [from, to), in instance
// order, stopping at the first instance it does not hold and before the
// encoded values would exceed maxBytes, but returning at least one value when
// there is one. maxBytes <= 0 means no byte limit. It implements
// instance.LogReader.
func (s *Store) Chosen(from, to uint64, maxBytes int) ([]core.InstanceValue, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	if from >= to {
		return nil, nil
	}
	var out []core.InstanceValue
	size := 0
	it := s.db.NewIterator(&util.Range{Start: key(prefixChosen, from), Limit: key(prefixChosen, to)}, nil)
	defer it.Release()
	for it.Next() {
		_, n, _ := parseKey(it.Key())
		if n != from+uint64(len(out)) {
			break // a hole: stop before it
		}
		payload, err := unseal(it.Key(), it.Value())
		if err != nil {
			return nil, s.recordError(it.Key(), err)
		}
		if maxBytes > 0 && len(out) > 0 && size+len(payload) > maxBytes {
			break
		}
		iv, err := decodeChosen(n, payload)
		if err != nil {
			return nil, s.recordError(it.Key(), err)
		}
		out = append(out, iv)
		size += len(payload)
	}
	if err := it.Error(); err != nil {
		return nil, s.readError(err)
	}
	return out, nil
}

// Entries returns the user entries from index from, in index order, at most
// maxCount of them and stopping before their data would exceed maxBytes, but
// at least one when there is one (a non-positive limit means none on that
// count). A start below the first index is a *TrimmedError (ErrTrimmed); a
// start at or past the end returns no entries and nil. It reads one
// consistent snapshot, so a concurrent Save that trims cannot make it see a
// hole.
func (s *Store) Entries(from uint64, maxCount int, maxBytes int) ([]core.Entry, error) {
	done, err := s.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	snap, err := s.db.GetSnapshot()
	if err != nil {
		return nil, s.readError(err)
	}
	defer snap.Release()
	st, err := s.getState(snap, metaState)
	if err != nil {
		return nil, err
	}
	if from < st.FirstIndex {
		return nil, &TrimmedError{First: st.FirstIndex}
	}
	if from >= st.NextIndex {
		return nil, nil
	}
	var out []core.Entry
	size, full := 0, false
	it := snap.NewIterator(&util.Range{Start: key(prefixEntry, from), Limit: key(prefixEntry, st.NextIndex)}, nil)
	defer it.Release()
	for !full && it.Next() {
		_, n, _ := parseKey(it.Key())
		if want := from + uint64(len(out)); n != want {
			return nil, s.missingEntry(want, st)
		}
		payload, err := unseal(it.Key(), it.Value())
		if err != nil {
			return nil, s.recordError(it.Key(), err)
		}
		if maxBytes > 0 && len(out) > 0 && size+len(payload) > maxBytes {
			full = true
			break
		}
		out = append(out, core.Entry{Index: n, Data: append([]byte{}, payload...)})
		size += len(payload)
		full = maxCount > 0 && len(out) >= maxCount
	}
	if err := it.Error(); err != nil {
		return nil, s.readError(err)
	}
	if next := from + uint64(len(out)); !full && next < st.NextIndex {
		return nil, s.missingEntry(next, st)
	}
	return out, nil
}

// Snapshot returns a chunk of the base (the last Ready.Base saved; the zero
// base if none was): its State, then the user entries from max(index,
// State.FirstIndex) below State.NextIndex, or, once index is at or past
// State.NextIndex, the base's dedup rows of clients above after (above 0
// when base is not the base's Applied: the asker was fetching another one),
// with Done set when the chunk holds the last row. It returns at most
// maxCount entries or rows and stops before the chunk's Size would exceed
// maxBytes, but returns at least one when there is one (a non-positive
// limit means none on that count). It implements instance.LogReader.
//
// Everything comes from one goleveldb snapshot, so a concurrent Save that
// sets a new base cannot mix two bases in a chunk. The entries of the base
// are all on disk: the first index moves only with a new base, so the trim
// never reaches them while the base is current; a missing one is corruption.
func (s *Store) Snapshot(base, index, after uint64, maxCount, maxBytes int) (core.SnapChunk, error) {
	done, err := s.enter()
	if err != nil {
		return core.SnapChunk{}, err
	}
	defer done()
	snap, err := s.db.GetSnapshot()
	if err != nil {
		return core.SnapChunk{}, s.readError(err)
	}
	defer snap.Release()
	var ch core.SnapChunk
	if ch.State, err = s.getState(snap, metaBase); err != nil {
		return core.SnapChunk{}, err
	}
	st := ch.State
	size := ch.Size()
	// full reports whether a chunk holding n items has no room for one more
	// of add bytes; else it counts the item in.
	full := func(n, add int) bool {
		if n > 0 && (maxCount > 0 && n >= maxCount || maxBytes > 0 && size+add > maxBytes) {
			return true
		}
		size += add
		return false
	}

	if from := max(index, st.FirstIndex); from < st.NextIndex {
		if ch.Entries, _, err = s.snapEntries(snap, st, from, full); err != nil {
			return core.SnapChunk{}, err
		}
		return ch, nil
	}

	if base != st.Applied {
		after = 0
	}
	var more bool
	if ch.Dedup, more, err = s.snapRows(snap, prefixBase, after, full); err != nil {
		return core.SnapChunk{}, err
	}
	ch.Done = !more
	return ch, nil
}

// missingEntry fails the store: the apply state says entry i exists.
func (s *Store) missingEntry(i uint64, st core.ApplyState) error {
	return s.fail(corruptError(s.dir, "record "+keyName(key(prefixEntry, i)),
		fmt.Errorf("user entry missing, though the apply state says entries [%d,%d) exist", st.FirstIndex, st.NextIndex)))
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

// journalSyncer fsyncs the journal goleveldb is writing before goleveldb
// switches to a new one. goleveldb closes the old journal without an fsync,
// so writes made without Sync just before a switch could be lost while
// synced writes to the new journal survive: a crash would keep a state that
// is not a prefix of the writes (holes in the chosen values and the dedup
// table; found by TestCrashLossyFS). With it, a synced write makes every
// earlier write durable, which is what Ready.MustSync relies on.
type journalSyncer struct {
	lstorage.Storage
	mu   sync.Mutex
	last lstorage.Writer
	err  error
}

// Create implements storage.Storage.
func (j *journalSyncer) Create(fd lstorage.FileDesc) (lstorage.Writer, error) {
	if fd.Type != lstorage.TypeJournal {
		return j.Storage.Create(fd)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return nil, j.err
	}
	if j.last != nil {
		if err := j.last.Sync(); err != nil {
			j.err = err // never retried, as any failed fsync
			return nil, err
		}
	}
	w, err := j.Storage.Create(fd)
	if err == nil {
		j.last = w
	}
	return w, err
}
