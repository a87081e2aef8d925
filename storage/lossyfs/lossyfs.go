// Package lossyfs is an in-memory goleveldb storage.Storage that models what
// a power loss does to a disk. Power loss cannot be faked on a real file
// system in a test, so the crash tests of package storage (and anything else
// that wants to lose unsynced writes) run goleveldb on this instead.
//
// It tracks, for every file, the bytes written and the prefix made durable
// by Sync, and for the directory, the names as of the last directory sync
// and the name changes since. Crash and PowerLoss throw away what a disk may
// lose and return the file system as a rebooted machine finds it: a new FS
// on the same disk, on which a new goleveldb database can be opened.
//
// # What is durable when
//
// The model follows goleveldb's own file storage (leveldb/storage's
// fileStorage) on a journaling file system such as ext4 mounted without
// dir-sync options:
//
//   - Write puts bytes in the page cache only. Sync makes everything written
//     to that file so far durable. A crash keeps the durable prefix of every
//     file and, with PowerLoss, possibly some of the unsynced bytes after it:
//     none, all, or a prefix cut anywhere, even inside a goleveldb journal
//     chunk, since a disk may have written back some pages on its own. It
//     never keeps unsynced bytes that do not follow the durable prefix
//     (files here are append-only; holes and garbage are not modelled).
//     PowerLossTails with ZeroTail may also leave the unsynced part as
//     zeros, whole or after a prefix of it: the file's new length reached
//     the disk and its data did not, as ext4 (delayed allocation) and XFS
//     leave a file that was appended to without an fsync.
//   - Create, Remove and Rename change the directory, which is durable only
//     after a directory sync. goleveldb's file storage syncs the directory
//     in SetMeta and after every Sync of a MANIFEST file, so here those two
//     make every earlier name change durable (a barrier). Removing a table
//     is the exception: durable at once (see Remove for why).
//   - Directory changes persist in order, as a journaling file system
//     commits its metadata: a crash keeps the names as of the last barrier
//     plus a prefix of the changes since (Crash: as short a prefix as
//     allowed; PowerLoss: a random one). A file created and never synced,
//     nor covered by a barrier, may therefore vanish, and a removed file may
//     come back with its durable contents.
//   - Sync of a file also makes the name change that created it (or renamed
//     it into place) durable, with every change before it. POSIX does not
//     promise this, but ext4 and XFS do it, and goleveldb relies on it: it
//     creates a new journal without syncing the directory and acknowledges
//     synced writes to it before the next MANIFEST sync, so without this
//     rule every journal switch could lose acknowledged writes.
//   - SetMeta (goleveldb's CURRENT file: written to a temporary file,
//     synced, renamed over CURRENT, directory synced) is durable and atomic
//     as soon as it returns, and is a barrier.
//   - Rename is atomic: after a crash exactly one of the two names exists.
//
// Crash and PowerLoss also release the storage lock (the process died) and
// invalidate the old FS and every reader, writer and lock from before: their
// calls fail with ErrPowerLost and change nothing, so whatever the old
// process's goroutines still do cannot reach the rebooted disk.
//
// # Faults
//
// FailWritesAfter and FailSyncAfter make the disk die in the middle of an
// operation, the way a machine that loses power while writing leaves it: the
// write that crosses the limit stores only its first bytes, the failing Sync
// makes nothing durable, and from then on every change fails with
// ErrInjected until the next Crash or PowerLoss. Hold makes creations of some
// file types block (goleveldb's background flush creates a table first), so
// that a test can crash while a background compaction is in flight at a
// point of its choosing.
//
// An FS is safe for concurrent use, starts no goroutines and reads no clock:
// given the same sequence of calls and the same random source, it ends in
// the same state. Hash fingerprints the whole history to check that.
// goleveldb itself is deterministic on it only if nothing runs in its
// background goroutines: turn its automatic compactions off and wait for
// (or Hold) the compactions you start; it still removes obsolete tables in
// the background, which is why table removals stay out of the ordered
// changes and the hash.
package lossyfs

import (
	"cmp"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"

	lstorage "github.com/syndtr/goleveldb/leveldb/storage"
)

// Errors.
var (
	// ErrInjected is the I/O error of a disk that a fault killed.
	ErrInjected = errors.New("lossyfs: injected I/O error: the disk is dead")
	// ErrPowerLost is returned to a reader, writer or lock opened before the
	// last Crash or PowerLoss.
	ErrPowerLost = errors.New("lossyfs: handle from before a power loss")
)

// inode is a file's contents. Files are append-only: goleveldb never writes
// anywhere but at the end.
type inode struct {
	data   []byte
	synced int // data[:synced] is durable
}

// dirOp is one change of the directory.
type dirOp struct {
	fd     lstorage.FileDesc // the name bound to ino, or unbound if ino is nil
	ino    *inode
	rename bool              // also unbinds from
	from   lstorage.FileDesc // rename's old name
}

func (op dirOp) apply(names map[lstorage.FileDesc]*inode) {
	if op.rename {
		delete(names, op.from)
	}
	if op.ino == nil {
		delete(names, op.fd)
	} else {
		names[op.fd] = op.ino
	}
}

// FS is one boot's view of an in-memory disk: the goleveldb
// storage.Storage that the processes of that boot use. Crash and PowerLoss
// return the view of the next boot; this one and everything opened through
// it are dead from then on. The zero value is not usable; call New.
type FS struct {
	*disk
	boot uint64 // the boot this view belongs to
}

// disk is what outlives a crash: the FS of every boot shares it.
type disk struct {
	mu      sync.Mutex
	name    string
	curBoot uint64 // bumped by every crash: views, handles and locks of older boots are dead

	names   map[lstorage.FileDesc]*inode // what the running system sees
	stable  map[lstorage.FileDesc]*inode // the names as of the last barrier
	pending []dirOp                      // changes since, in order: stable + pending = names
	forced  int                          // pending[:forced] are durable
	meta    lstorage.FileDesc            // CURRENT: durable at once
	lock    *locker

	budget   int64 // bytes writes may still store; < 0: no limit
	syncFail int   // > 0: the syncFail-th Sync from now fails
	dead     bool

	hold    lstorage.FileType
	release chan struct{} // closed to let held Creates go on
	heldC   chan struct{} // closed when a Create is first held
	held    bool

	h     hash.Hash64
	stats Stats
}

// Stats counts what an FS has seen.
type Stats struct {
	Writes, Syncs, Creates, Removes, Renames, SetMetas int
	BytesWritten                                       int64
	Crashes                                            int
	// What the crashes discarded.
	LostBytes   int64 // unsynced bytes dropped
	KeptBytes   int64 // unsynced bytes that PowerLoss let survive
	ZeroedBytes int64 // of the bytes dropped, those a ZeroTail power loss left zeros in place of
	LostNames   int   // name changes undone (creations that vanished, removals that came back...), tables aside
	Faults      int   // injected faults that fired
}

// New returns an empty disk's FS. name appears in String, and so in the
// error messages of whoever opens it.
func New(name string) *FS {
	return &FS{disk: &disk{
		name:   name,
		names:  map[lstorage.FileDesc]*inode{},
		stable: map[lstorage.FileDesc]*inode{},
		budget: -1,
		h:      fnv.New64a(),
	}}
}

// String names the FS.
func (fs *FS) String() string { return "lossyfs:" + fs.name }

// alive fails the calls of a process from before the last crash. Callers
// hold mu.
func (fs *FS) alive() error {
	if fs.boot != fs.curBoot {
		return ErrPowerLost
	}
	return nil
}

// writable is alive, and the disk has not died of an injected fault: the
// check of every call that changes the disk. Callers hold mu.
func (fs *FS) writable() error {
	if err := fs.alive(); err != nil {
		return err
	}
	if fs.dead {
		return ErrInjected
	}
	return nil
}

// record feeds one event into the history hash. Callers hold mu.
func (fs *disk) record(format string, args ...any) {
	fmt.Fprintf(fs.h, "%d ", fs.curBoot)
	fmt.Fprintf(fs.h, format, args...)
	fs.h.Write([]byte{'\n'})
}

// Hash fingerprints every change and crash decision so far: two runs that
// made the same calls in the same order have the same hash.
func (fs *FS) Hash() uint64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.h.Sum64()
}

// Stats returns the counters.
func (fs *FS) Stats() Stats {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.stats
}

// FileInfo describes one file.
type FileInfo struct {
	Name        string
	Size        int // bytes written
	Synced      int // durable prefix
	DurableName bool
}

// Files lists the files the running system sees, in name order.
func (fs *FS) Files() []FileInfo {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	durable := fs.durableNames(fs.forced)
	var out []FileInfo
	for _, fd := range sortedNames(fs.names) {
		ino := fs.names[fd]
		out = append(out, FileInfo{Name: fd.String(), Size: len(ino.data), Synced: ino.synced, DurableName: durable[fd] == ino})
	}
	return out
}

func sortedNames(m map[lstorage.FileDesc]*inode) []lstorage.FileDesc {
	fds := make([]lstorage.FileDesc, 0, len(m))
	for fd := range m {
		fds = append(fds, fd)
	}
	slices.SortFunc(fds, func(a, b lstorage.FileDesc) int {
		if c := cmp.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return cmp.Compare(a.Num, b.Num)
	})
	return fds
}

// durableNames is the directory after a crash that keeps pending[:k].
func (fs *disk) durableNames(k int) map[lstorage.FileDesc]*inode {
	names := make(map[lstorage.FileDesc]*inode, len(fs.stable)+k)
	for fd, ino := range fs.stable {
		names[fd] = ino
	}
	for _, op := range fs.pending[:k] {
		op.apply(names)
	}
	return names
}

// barrier is a directory sync: every name change so far is durable.
func (fs *disk) barrier() {
	for _, op := range fs.pending {
		op.apply(fs.stable)
	}
	fs.pending, fs.forced = nil, 0
}

// force makes durable the last change that put ino under a name, and every
// change before it.
func (fs *disk) force(ino *inode) {
	for i := len(fs.pending) - 1; i >= fs.forced; i-- {
		if fs.pending[i].ino == ino {
			fs.forced = i + 1
			return
		}
	}
}

func (fs *disk) change(op dirOp) {
	op.apply(fs.names)
	fs.pending = append(fs.pending, op)
}

// die kills the disk. Callers hold mu.
func (fs *disk) die() {
	if !fs.dead {
		fs.dead = true
		fs.stats.Faults++
		fs.record("die")
	}
}

// FailWritesAfter makes the disk die once n more bytes have been written to
// files (SetMeta counts the bytes of CURRENT): the write that crosses the
// limit stores only the bytes up to it and fails, and so does every change
// after it. n < 0 removes the limit.
func (fs *FS) FailWritesAfter(n int64) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.budget = n
	fs.record("fail-writes-after %d", n)
}

// FailSyncAfter makes the n-th Sync from now fail without making anything
// durable, and the disk die. n <= 0 removes the fault.
func (fs *FS) FailSyncAfter(n int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.syncFail = max(n, 0)
	fs.record("fail-sync-after %d", n)
}

// Dead reports whether an injected fault has fired since the last crash.
func (fs *FS) Dead() bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.dead
}

// Hold makes Create of the file types in ft block until Release, Crash or
// PowerLoss; after a crash the held Create fails with ErrPowerLost.
func (fs *FS) Hold(ft lstorage.FileType) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.releaseHeld()
	fs.hold = ft
	fs.release = make(chan struct{})
	fs.heldC = make(chan struct{})
	fs.held = false
	fs.record("hold %v", ft)
}

// Release lets held Creates go on and stops holding.
func (fs *FS) Release() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.releaseHeld()
	fs.record("release")
}

func (fs *disk) releaseHeld() {
	if fs.release != nil {
		close(fs.release)
	}
	fs.hold, fs.release, fs.heldC, fs.held = 0, nil, nil, false
}

// WaitHeld blocks until a Create is held (true) or done is closed (false).
// It returns false at once if nothing is being held for.
func (fs *FS) WaitHeld(done <-chan struct{}) bool {
	fs.mu.Lock()
	c := fs.heldC
	fs.mu.Unlock()
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	case <-done:
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
}

// Crash is a power loss in which the disk persisted nothing it did not have
// to: every file keeps only its synced prefix and the directory only the
// changes a barrier or a Sync made durable. It returns the FS of the next
// boot; fs and every handle, lock and held Create from before are dead.
func (fs *FS) Crash() *FS { return fs.crash(nil, KeepPrefix) }

// PowerLoss is a power loss in which the disk may have persisted some of
// what was not yet durable, as rng decides: each file keeps its synced
// prefix and none, all or part of the bytes written after it; the directory
// keeps its durable changes and a random number of the changes after them,
// in order. It returns the FS of the next boot, as Crash does. It is
// PowerLossTails(rng, KeepPrefix).
func (fs *FS) PowerLoss(rng *rand.Rand) *FS { return fs.crash(rng, KeepPrefix) }

// Tails is what a power loss may leave of the bytes written to a file after
// its synced prefix.
type Tails uint8

const (
	// KeepPrefix: none of them, all of them, or a prefix cut anywhere.
	KeepPrefix Tails = iota
	// ZeroTail: as KeepPrefix, or (a third of the time) a prefix of them,
	// often empty, followed by zeros up to a length no longer than what was
	// written: the file's new length reached the disk, its data did not.
	ZeroTail
)

// PowerLossTails is PowerLoss, leaving each file's unsynced bytes as tails
// says.
func (fs *FS) PowerLossTails(rng *rand.Rand, tails Tails) *FS {
	if rng == nil {
		panic("lossyfs: PowerLossTails without a random source")
	}
	return fs.crash(rng, tails)
}

func (fs *FS) crash(rng *rand.Rand, tails Tails) *FS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	k := fs.forced
	if rng != nil {
		k += rng.IntN(len(fs.pending) - fs.forced + 1)
	}
	survivors := fs.durableNames(k)
	// How many name bindings the crash undid (tables aside: see Remove).
	for fd, ino := range fs.names {
		if survivors[fd] != ino && fd.Type != lstorage.TypeTable {
			fs.stats.LostNames++
		}
	}
	for fd := range survivors {
		if _, ok := fs.names[fd]; !ok && fd.Type != lstorage.TypeTable {
			fs.stats.LostNames++
		}
	}
	fs.record("crash random=%t keep-changes=%d/%d", rng != nil, k, len(fs.pending))

	names := make(map[lstorage.FileDesc]*inode, len(survivors))
	copies := map[*inode]*inode{}
	for _, fd := range sortedNames(survivors) {
		ino := survivors[fd]
		c, ok := copies[ino]
		if !ok {
			keep, zeros := ino.synced, 0
			if extra := len(ino.data) - ino.synced; extra > 0 && rng != nil {
				choices := 4
				if tails == ZeroTail {
					choices = 6
				}
				switch rng.IntN(choices) {
				case 0: // none of it
				case 1:
					keep += extra
				case 4: // the length grew, no data arrived
					zeros = 1 + rng.IntN(extra)
				case 5: // some data arrived, then the length grew further
					keep += rng.IntN(extra)
					zeros = 1 + rng.IntN(len(ino.data)-keep)
				default:
					keep += rng.IntN(extra + 1)
				}
			}
			fs.stats.KeptBytes += int64(keep - ino.synced)
			fs.stats.LostBytes += int64(len(ino.data) - keep)
			fs.stats.ZeroedBytes += int64(zeros)
			data := make([]byte, keep+zeros)
			copy(data, ino.data[:keep])
			// The zeros are durable as they are: a later boot that
			// appends to the file appends after them.
			c = &inode{data: data, synced: len(data)}
			copies[ino] = c
			switch {
			case zeros > 0:
				fs.record("keep %s %d/%d+%d zeros/%d", fd, ino.synced, keep, zeros, len(ino.data))
			case fd.Type != lstorage.TypeTable || keep != len(ino.data):
				// (A whole table may be an obsolete one whose
				// removal has not happened yet: see Remove.)
				fs.record("keep %s %d/%d/%d", fd, ino.synced, keep, len(ino.data))
			}
		}
		names[fd] = c
	}
	stable := make(map[lstorage.FileDesc]*inode, len(names))
	for fd, ino := range names {
		stable[fd] = ino
	}
	fs.names, fs.stable, fs.pending, fs.forced = names, stable, nil, 0
	fs.curBoot++
	fs.lock = nil
	fs.budget, fs.syncFail, fs.dead = -1, 0, false
	fs.releaseHeld()
	fs.stats.Crashes++
	return &FS{disk: fs.disk, boot: fs.curBoot}
}

// locker is the storage lock.
type locker struct{ fs *disk }

func (l *locker) Unlock() {
	l.fs.mu.Lock()
	defer l.fs.mu.Unlock()
	if l.fs.lock == l {
		l.fs.lock = nil
	}
}

// Lock implements storage.Storage.
func (fs *FS) Lock() (lstorage.Locker, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.alive(); err != nil {
		return nil, err
	}
	if fs.lock != nil {
		return nil, lstorage.ErrLocked
	}
	fs.lock = &locker{fs: fs.disk}
	return fs.lock, nil
}

// Log implements storage.Storage; the log is dropped.
func (fs *FS) Log(string) {}

// SetMeta implements storage.Storage: durable and atomic at once, and a
// directory barrier.
func (fs *FS) SetMeta(fd lstorage.FileDesc) error {
	if !lstorage.FileDescOk(fd) {
		return lstorage.ErrInvalidFile
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.writable(); err != nil {
		return err
	}
	if n := int64(len(fd.String()) + 1); fs.budget >= 0 {
		if fs.budget < n {
			fs.budget = 0
			fs.die()
			return ErrInjected
		}
		fs.budget -= n
	}
	fs.meta = fd
	fs.barrier()
	fs.stats.SetMetas++
	fs.record("setmeta %s", fd)
	return nil
}

// GetMeta implements storage.Storage.
func (fs *FS) GetMeta() (lstorage.FileDesc, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.alive(); err != nil {
		return lstorage.FileDesc{}, err
	}
	if fs.meta.Zero() {
		return lstorage.FileDesc{}, os.ErrNotExist
	}
	if _, ok := fs.names[fs.meta]; !ok {
		return lstorage.FileDesc{}, os.ErrNotExist
	}
	return fs.meta, nil
}

// List implements storage.Storage, in (type, number) order.
func (fs *FS) List(ft lstorage.FileType) ([]lstorage.FileDesc, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.alive(); err != nil {
		return nil, err
	}
	var out []lstorage.FileDesc
	for _, fd := range sortedNames(fs.names) {
		if fd.Type&ft != 0 {
			out = append(out, fd)
		}
	}
	return out, nil
}

// Open implements storage.Storage.
func (fs *FS) Open(fd lstorage.FileDesc) (lstorage.Reader, error) {
	if !lstorage.FileDescOk(fd) {
		return nil, lstorage.ErrInvalidFile
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.alive(); err != nil {
		return nil, err
	}
	ino, ok := fs.names[fd]
	if !ok {
		return nil, os.ErrNotExist
	}
	return &reader{fs: fs.disk, ino: ino, boot: fs.boot}, nil
}

// Create implements storage.Storage: a new, empty file under fd, replacing
// any file of that name (the replacement is a name change like any other).
func (fs *FS) Create(fd lstorage.FileDesc) (lstorage.Writer, error) {
	if !lstorage.FileDescOk(fd) {
		return nil, lstorage.ErrInvalidFile
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.alive(); err != nil {
		return nil, err
	}
	if fs.hold&fd.Type != 0 {
		release := fs.release
		if !fs.held {
			fs.held = true
			close(fs.heldC)
		}
		fs.record("held create %s", fd)
		fs.mu.Unlock()
		<-release
		fs.mu.Lock()
		if err := fs.alive(); err != nil {
			return nil, err
		}
	}
	if fs.dead {
		return nil, ErrInjected
	}
	ino := &inode{}
	fs.change(dirOp{fd: fd, ino: ino})
	fs.stats.Creates++
	fs.record("create %s", fd)
	return &writer{fs: fs.disk, ino: ino, fd: fd, boot: fs.boot}, nil
}

// Remove implements storage.Storage. The removal of a table is durable at
// once, outside the ordered name changes: goleveldb removes a table only
// after a synced MANIFEST stopped listing it, so whether the removal
// survives cannot matter to it (and if it removed one too early, this
// harsher rule would show it), and it removes obsolete tables from a
// background goroutine at a moment the scheduler picks, which must not
// change what a crash keeps or the history hash.
func (fs *FS) Remove(fd lstorage.FileDesc) error {
	if !lstorage.FileDescOk(fd) {
		return lstorage.ErrInvalidFile
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.writable(); err != nil {
		return err
	}
	if _, ok := fs.names[fd]; !ok {
		return os.ErrNotExist
	}
	fs.stats.Removes++
	if fd.Type == lstorage.TypeTable {
		delete(fs.names, fd)
		delete(fs.stable, fd)
		// Changes still pending under that name now mean nothing.
		for i := 0; i < len(fs.pending); i++ {
			if fs.pending[i].fd == fd {
				fs.pending = slices.Delete(fs.pending, i, i+1)
				if i < fs.forced {
					fs.forced--
				}
				i--
			}
		}
		return nil
	}
	fs.change(dirOp{fd: fd})
	fs.record("remove %s", fd)
	return nil
}

// Rename implements storage.Storage: atomic, replacing newfd if it exists.
func (fs *FS) Rename(oldfd, newfd lstorage.FileDesc) error {
	if !lstorage.FileDescOk(oldfd) || !lstorage.FileDescOk(newfd) {
		return lstorage.ErrInvalidFile
	}
	if oldfd == newfd {
		return nil
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.writable(); err != nil {
		return err
	}
	ino, ok := fs.names[oldfd]
	if !ok {
		return os.ErrNotExist
	}
	fs.change(dirOp{fd: newfd, ino: ino, rename: true, from: oldfd})
	fs.stats.Renames++
	fs.record("rename %s %s", oldfd, newfd)
	return nil
}

// Close implements storage.Storage. It does nothing: the FS outlives the
// databases opened on it, across crashes.
func (fs *FS) Close() error { return nil }

type writer struct {
	fs     *disk
	ino    *inode
	fd     lstorage.FileDesc
	boot   uint64
	closed bool
}

// usable checks the handle and the disk. Callers hold mu.
func (w *writer) usable() error {
	switch {
	case w.boot != w.fs.curBoot:
		return ErrPowerLost
	case w.closed:
		return lstorage.ErrClosed
	case w.fs.dead:
		return ErrInjected
	}
	return nil
}

func (w *writer) Write(p []byte) (int, error) {
	fs := w.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := w.usable(); err != nil {
		return 0, err
	}
	n := len(p)
	var err error
	if fs.budget >= 0 {
		if int64(n) > fs.budget {
			n = int(fs.budget)
			err = ErrInjected
		}
		fs.budget -= int64(n)
	}
	w.ino.data = append(w.ino.data, p[:n]...)
	fs.stats.Writes++
	fs.stats.BytesWritten += int64(n)
	fs.record("write %s %d/%d", w.fd, n, len(p))
	if err != nil {
		fs.die()
	}
	return n, err
}

func (w *writer) Sync() error {
	fs := w.fs
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := w.usable(); err != nil {
		return err
	}
	if fs.syncFail > 0 {
		fs.syncFail--
		if fs.syncFail == 0 {
			fs.record("sync %s failed", w.fd)
			fs.die()
			return ErrInjected
		}
	}
	w.ino.synced = len(w.ino.data)
	fs.force(w.ino)
	if w.fd.Type == lstorage.TypeManifest {
		fs.barrier() // goleveldb's file storage syncs the directory too
	}
	fs.stats.Syncs++
	fs.record("sync %s %d", w.fd, w.ino.synced)
	return nil
}

func (w *writer) Close() error {
	w.fs.mu.Lock()
	defer w.fs.mu.Unlock()
	if w.closed {
		return lstorage.ErrClosed
	}
	w.closed = true
	return nil
}

type reader struct {
	fs     *disk
	ino    *inode
	boot   uint64
	off    int64
	closed bool
}

func (r *reader) usable() error {
	switch {
	case r.boot != r.fs.curBoot:
		return ErrPowerLost
	case r.closed:
		return lstorage.ErrClosed
	}
	return nil
}

func (r *reader) Read(p []byte) (int, error) {
	r.fs.mu.Lock()
	defer r.fs.mu.Unlock()
	if err := r.usable(); err != nil {
		return 0, err
	}
	if r.off >= int64(len(r.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.ino.data[r.off:])
	r.off += int64(n)
	return n, nil
}

func (r *reader) ReadAt(p []byte, off int64) (int, error) {
	r.fs.mu.Lock()
	defer r.fs.mu.Unlock()
	if err := r.usable(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, errors.New("lossyfs: negative offset")
	}
	if off >= int64(len(r.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	r.fs.mu.Lock()
	defer r.fs.mu.Unlock()
	if err := r.usable(); err != nil {
		return 0, err
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += int64(len(r.ino.data))
	default:
		return 0, errors.New("lossyfs: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("lossyfs: negative offset")
	}
	r.off = offset
	return offset, nil
}

func (r *reader) Close() error {
	r.fs.mu.Lock()
	defer r.fs.mu.Unlock()
	if r.closed {
		return lstorage.ErrClosed
	}
	r.closed = true
	return nil
}
