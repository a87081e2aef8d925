// Opening a data directory: creating it, checking its identity, and
// refusing or repairing what goleveldb finds damaged.

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
	"syscall"

	"github.com/syndtr/goleveldb/leveldb"
	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	"github.com/syndtr/goleveldb/leveldb/opt"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"
)

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
	if err := s.upgrade(); err != nil {
		db.Close()
		return nil, err
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
	if len(payload) > 0 && (payload[0] < oldestFormat || payload[0] > formatVersion) {
		return false, meta, fmt.Errorf("storage: data directory %s uses on-disk format %d; this build reads formats %d to %d: run a paxosd that reads it",
			dir, payload[0], oldestFormat, formatVersion)
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
