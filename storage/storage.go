// Package storage is a node's durable state in goleveldb: the acceptor's
// promise and accepted values, the chosen value of every applied instance
// (served to peers that catch up), the user log entries, the dedup table,
// and the apply state. The node runtime opens it, restores the core from
// Load, persists every Ready with one Save, and reads chosen values and user
// entries from it.
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
//	m/2  apply state (uvarints Applied, NextIndex, FirstIndex, LeaseHolder, LeaseVersion, LogTime)
//	m/3  trim cursor (uvarint): user entries below it are physically deleted
//	a/i  accepted value of open instance i (uvarint ballot, core.AppendValue)
//	c/i  chosen value of applied instance i (core.AppendValue)
//	e/n  user entry n (raw bytes)
//	d/id dedup row of client id (uvarints LastUsed, n, then n × Seq, First, Last)
//
// Every value is a CRC32C (Castagnoli, big-endian) of key and payload, then
// the payload; a mismatch on read is ErrCorrupt naming the key.
//
// # Trimming
//
// A Save that raises State.FirstIndex deletes the user entries below it in
// the same batch, at most trimChunk of them per Save; the rest go in the
// following Saves (every Save, even an empty Ready's, continues the work), and
// the trim cursor (m/3) records how far the deletion has got, so it resumes
// after a restart. Reads never look below State.FirstIndex, so entries still
// waiting for deletion are invisible. When the cursor catches up, a
// background CompactRange over the deleted range reclaims the space.
//
// # Crash recovery
//
// goleveldb is opened with every strict flag: a damaged journal record,
// manifest or table block is an error, never silently dropped. The one
// exception is a torn tail: a final journal record cut short by the end of
// the file, which is what a process killed while writing a batch larger than
// a journal block leaves. That record was never fsynced, so its Save never
// returned; Open truncates it (and logs that it did) and opens the rest.
// Any other journal damage, including a checksum mismatch in the last
// record, is ErrCorrupt.
package storage

import (
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
	// should know of (a torn journal tail dropped at Open). Nil: log.Printf.
	Logf func(format string, args ...any)

	// Test hooks, set only by this package's tests.
	noSync bool               // write without fsync: a planted bug the crash test must catch
	tune   func(*opt.Options) // adjusts goleveldb's options before the open
}

const (
	defaultCache       = 8 << 20
	defaultWriteBuffer = 64 << 20 // fewer, larger level-0 flushes: the batched append rate rose from about 81-95k to 101-104k entries/s
	openFilesCache     = 500
)

// Store serves catch-up from its chosen values.
var _ instance.LogReader = (*Store)(nil)

// trimChunk bounds the user entries one Save deletes; a variable so tests can
// exercise the chunking.
var trimChunk uint64 = 10000

// Store is one node's durable state. Save is meant for one goroutine (the
// node's) but is serialized anyway; Chosen, Entries, State and Meta may be
// called from any goroutine at any time.
type Store struct {
	dir  string
	meta Meta
	db   *leveldb.DB
	logf func(string, ...any)

	// fs is the file storage under db, which Close closes (nil for
	// OpenStorage, whose caller owns it).
	fs lstorage.Storage

	// write persists a batch, fsynced if sync; a hook so tests can inject failures.
	write func(b *leveldb.Batch, sync bool) error

	// life guards db against Close while a call uses it.
	life   sync.RWMutex
	closed bool

	failed atomic.Pointer[failedError]

	saveMu      sync.Mutex // serializes Save; guards the fields below
	trimCursor  uint64     // user entries below it are deleted on disk
	accLow      uint64     // no accepted record below it is on disk
	compactFrom uint64     // start of the deleted range not yet compacted
	compacting  atomic.Bool
	bg          sync.WaitGroup

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
	if err := checkMeta(dir, meta); err != nil {
		return nil, err
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	existing, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	var fs lstorage.Storage
	s, err := open(dir, meta, opts, existing,
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
		func(err error) (string, bool) { return tryRepair(dir, err) })
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
// damage is ErrCorrupt, and a torn tail of the newest journal is dropped.
// Storage cannot truncate a file, so that repair writes the journal's good
// prefix to a temporary file, syncs it and renames it over the journal. The
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
	return open(name, meta, opts, existing,
		func(lo *opt.Options) (*leveldb.DB, error) { return leveldb.Open(&journalSyncer{Storage: stor}, lo) },
		func(err error) (string, bool) { return tryRepairStorage(stor, err) })
}

func checkMeta(dir string, meta Meta) error {
	if meta.NodeID == 0 || meta.K == 0 {
		return fmt.Errorf("storage: open %s: NodeID and K must be non-zero (got node %d, K %d)", dir, meta.NodeID, meta.K)
	}
	return nil
}

// open is the part of Open and OpenStorage after the directory checks:
// openLDB opens goleveldb, repair drops a torn journal tail.
func open(dir string, meta Meta, opts Options, existing bool,
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
		if fresh, err = checkIdentity(dir, db, meta); err != nil {
			db.Close()
			return nil, err
		}
	}
	s := &Store{dir: dir, meta: meta, db: db, logf: logf}
	s.write = func(b *leveldb.Batch, sync bool) error {
		return s.db.Write(b, &opt.WriteOptions{Sync: sync && !opts.noSync})
	}
	if fresh {
		b := new(leveldb.Batch)
		b.Put(key(prefixMeta, metaIdentity), seal(key(prefixMeta, metaIdentity), encodeIdentity(meta)))
		if err := s.write(b, true); err != nil {
			db.Close()
			return nil, fmt.Errorf("storage: initialize %s: %w", dir, err)
		}
	} else if err := s.loadMeta(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
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

// openDB opens goleveldb, repairing a torn journal tail once.
func openDB(dir string, lo *opt.Options, logf func(string, ...any),
	openLDB func(*opt.Options) (*leveldb.DB, error), repair func(error) (string, bool)) (*leveldb.DB, error) {
	for attempt := 0; ; attempt++ {
		db, err := openLDB(lo)
		if err == nil {
			return db, nil
		}
		if attempt == 0 {
			if msg, ok := repair(err); ok {
				logf("storage: %s: %s", dir, msg)
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
func checkIdentity(dir string, db *leveldb.DB, meta Meta) (empty bool, err error) {
	k := key(prefixMeta, metaIdentity)
	v, err := db.Get(k, nil)
	if errors.Is(err, leveldb.ErrNotFound) {
		it := db.NewIterator(nil, nil)
		nonEmpty := it.Next()
		it.Release()
		if err := it.Error(); err != nil {
			return false, openError(dir, err)
		}
		if !nonEmpty {
			return true, nil
		}
		return false, fmt.Errorf("%w: %s holds a leveldb database without paxosd metadata; refusing to use it: "+
			"point --data-dir at this node's own directory or at an empty one", ErrForeign, dir)
	}
	if err != nil {
		return false, openError(dir, err)
	}
	payload, err := unseal(k, v)
	if err != nil {
		return false, corruptError(dir, "record "+keyName(k), err)
	}
	if len(payload) > 0 && payload[0] != formatVersion {
		return false, fmt.Errorf("storage: data directory %s uses on-disk format %d; this build reads format %d: run a paxosd that reads it",
			dir, payload[0], formatVersion)
	}
	got, err := decodeIdentity(payload)
	if err != nil {
		return false, corruptError(dir, "record "+keyName(k), err)
	}
	if got != meta {
		return false, fmt.Errorf("%w: this data directory (%s) belongs to cluster %d node %d (K=%d), not cluster %d node %d (K=%d); "+
			"point --data-dir at this node's own directory or at an empty one",
			ErrForeign, dir, got.ClusterID, got.NodeID, got.K, meta.ClusterID, meta.NodeID, meta.K)
	}
	return false, nil
}

// tryRepair truncates a torn tail of the newest journal if err is goleveldb
// reporting damage in it and the damage is exactly a torn tail.
func tryRepair(dir string, err error) (string, bool) {
	var ce *lerrors.ErrCorrupted
	if !errors.As(err, &ce) || ce.Fd.Type != lstorage.TypeJournal {
		return "", false
	}
	newest, nerr := newestJournal(dir)
	if nerr != nil || filepath.Base(newest) != fileName(ce.Fd) {
		return "", false
	}
	msg, ok, rerr := repairTornTail(newest)
	if rerr != nil || !ok {
		return "", false
	}
	return msg, true
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

// tryRepairStorage is tryRepair for a goleveldb Storage.
func tryRepairStorage(stor lstorage.Storage, err error) (string, bool) {
	var ce *lerrors.ErrCorrupted
	if !errors.As(err, &ce) || ce.Fd.Type != lstorage.TypeJournal {
		return "", false
	}
	fds, lerr := stor.List(lstorage.TypeJournal)
	if lerr != nil || len(fds) == 0 {
		return "", false
	}
	newest := fds[0]
	for _, fd := range fds[1:] {
		if fd.Num > newest.Num {
			newest = fd
		}
	}
	if newest != ce.Fd {
		return "", false
	}
	msg, ok, rerr := repairTornTailStorage(stor, newest)
	if rerr != nil || !ok {
		return "", false
	}
	return msg, true
}

// repairTornTailStorage is repairTornTail for a journal in a Storage, which
// has no truncate: it writes the good prefix to a temporary file, syncs it
// and renames it over the journal. Rewriting the journal in place would not
// do: a crash between the truncation and the sync could leave it shorter
// than its synced records. A crash before the rename keeps the torn journal,
// repaired again at the next Open.
func repairTornTailStorage(stor lstorage.Storage, fd lstorage.FileDesc) (string, bool, error) {
	r, err := stor.Open(fd)
	if err != nil {
		return "", false, err
	}
	data, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		return "", false, err
	}
	cut, ok := tornTail(data)
	if !ok {
		return "", false, nil
	}
	tmp := lstorage.FileDesc{Type: lstorage.TypeTemp, Num: fd.Num}
	w, err := stor.Create(tmp)
	if err != nil {
		return "", false, err
	}
	_, err = w.Write(data[:cut])
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = stor.Rename(tmp, fd)
	}
	if err != nil {
		stor.Remove(tmp)
		return "", false, err
	}
	return fmt.Sprintf("dropped a torn final record from %s (%d bytes at offset %d: a write interrupted by a crash, never acknowledged)",
		fileName(fd), len(data)-cut, cut), true, nil
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

// loadMeta reads the apply state and trim cursor of an existing store.
func (s *Store) loadMeta() error {
	st, err := s.getState(s.db)
	if err != nil {
		return err
	}
	cursor, _, err := s.getUint(s.db, metaTrim)
	if err != nil {
		return err
	}
	s.state, s.trimCursor, s.compactFrom = st, cursor, cursor
	s.accLow = st.Applied
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

func (s *Store) getState(r reader) (core.ApplyState, error) {
	k := key(prefixMeta, metaState)
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

// State returns the apply state as of the last successful Save (or Open).
func (s *Store) State() core.ApplyState {
	s.stateMu.RLock()
	defer s.stateMu.RUnlock()
	return s.state
}

// Load returns the state to restore the core from: the promise, the accepted
// values of open instances (at or above State.Applied), the apply state and
// the dedup table. It also checks, at a few cheap points, that the chosen
// values and user entries the state implies are there.
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
	if d.State, err = s.getState(snap); err != nil {
		return instance.Durable{}, err
	}
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

	it = snap.NewIterator(prefixRange(prefixDedup), nil)
	for it.Next() {
		_, n, ok := parseKey(it.Key())
		payload, err := unseal(it.Key(), it.Value())
		if err == nil && !ok {
			err = fmt.Errorf("%w: bad key", errRecord)
		}
		var de core.DedupEntry
		if err == nil {
			de, err = decodeDedup(n, payload)
		}
		if err != nil {
			k := append([]byte{}, it.Key()...)
			it.Release()
			return instance.Durable{}, s.recordError(k, err)
		}
		d.Dedup = append(d.Dedup, de)
	}
	it.Release()
	if err := it.Error(); err != nil {
		return instance.Durable{}, s.readError(err)
	}

	// Spot checks: the last chosen value and both ends of the user log.
	var must [][]byte
	if d.State.Applied > 0 {
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
				fmt.Errorf("missing, though the apply state (applied %d, entries [%d,%d)) says it exists",
					d.State.Applied, d.State.FirstIndex, d.State.NextIndex)))
		}
	}
	return d, nil
}

// Save persists rd's records in one goleveldb batch (synced if rd.MustSync()): the
// promise (if non-zero), the accepted values, the chosen values, the user
// entries, the dedup rows and the apply state (if non-nil). In the same
// batch it deletes the accepted values below State.Applied and continues
// deleting user entries below State.FirstIndex (trimChunk per Save at most).
// It returns nil only when the batch is written (and durable if synced). After any write error the
// store is failed and every later call returns ErrFailed.
func (s *Store) Save(rd *instance.Ready) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	done, err := s.enter()
	if err != nil {
		return err
	}
	defer done()

	st := s.state
	if rd.State != nil {
		st = *rd.State
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
	for _, c := range rd.Chosen {
		put(key(prefixChosen, c.Instance), core.AppendValue(nil, c.Value))
	}
	for _, e := range rd.Entries {
		if e.Index >= st.FirstIndex { // else trimmed by this very Ready
			put(key(prefixEntry, e.Index), e.Data)
		}
	}
	for _, d := range rd.Dedup {
		if d.Deleted {
			b.Delete(key(prefixDedup, d.ClientID))
			continue
		}
		put(key(prefixDedup, d.ClientID), encodeDedup(d))
	}
	if rd.State != nil {
		put(key(prefixMeta, metaState), encodeState(st))
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

	// User entries below the first index, a chunk at a time.
	cursor := s.trimCursor
	if st.FirstIndex > cursor {
		end := st.FirstIndex
		if end-cursor > trimChunk {
			end = cursor + trimChunk
		}
		for i := cursor; i < end; i++ {
			b.Delete(key(prefixEntry, i))
		}
		cursor = end
		put(key(prefixMeta, metaTrim), encodeUint(cursor))
	}

	if err := s.write(b, rd.MustSync()); err != nil {
		return s.fail(fmt.Errorf("write of %d records: %w", b.Len(), err))
	}
	s.accLow, s.trimCursor = accLow, cursor
	if rd.State != nil {
		s.stateMu.Lock()
		s.state = st
		s.stateMu.Unlock()
	}
	if cursor == st.FirstIndex && cursor > s.compactFrom && s.compacting.CompareAndSwap(false, true) {
		r := util.Range{Start: key(prefixEntry, s.compactFrom), Limit: key(prefixEntry, cursor)}
		s.compactFrom = cursor
		s.bg.Add(1)
		go s.compact(r)
	}
	return nil
}

// compact reclaims the space of deleted user entries, off the Save path.
func (s *Store) compact(r util.Range) {
	defer s.bg.Done()
	defer s.compacting.Store(false)
	if err := s.db.CompactRange(r); err != nil && lerrors.IsCorrupted(err) {
		s.fail(corruptError(s.dir, damagedFiles(err), err))
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
	st, err := s.getState(snap)
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
