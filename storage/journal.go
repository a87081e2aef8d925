package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	lerrors "github.com/syndtr/goleveldb/leveldb/errors"
	lstorage "github.com/syndtr/goleveldb/leveldb/storage"
)

// goleveldb's journal format (leveldb's log format): 32 KiB blocks of chunks,
// each chunk a 7-byte header (masked CRC32C of type and payload, uint16
// length, type) and its payload; a record is one full chunk or a first,
// middle..., last sequence. A chunk never crosses a block boundary, and a
// block tail shorter than a header is zero padding, skipped unread.
const (
	journalBlock  = 32 << 10
	journalHeader = 7
	chunkFull     = 1
	chunkFirst    = 2
	chunkMiddle   = 3
	chunkLast     = 4
)

func journalCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

// unsyncedTail is the damage at the end of a journal that a crash or a power
// loss leaves: where to cut and what lies there.
type unsyncedTail struct {
	cut    int    // the end of the last complete record: the length to truncate to
	damage int    // where the first chunk that does not parse starts (>= cut)
	what   string // what lies at damage, for the log
}

// tornTail decides whether the only damage in a journal is an unsynced tail:
// after the last complete record, zeros or a torn record (a partial header,
// a chunk cut short by the end of the file, a chunk whose checksum fails, a
// header that does not parse, a record whose last chunk never came), with
// nothing valid after it: no chunk anywhere later in the file whose checksum
// matches. That is what a process killed in the middle of a large batch
// leaves (goleveldb writes a record larger than a block with one write call
// per block), and what ext4 and XFS leave of a file appended to without an
// fsync when the power goes: the file's new length reached the disk but its
// data did not (zeros), or only part of it. Every Save whose Ready had to be
// durable was fsynced before it returned, and a journal is written in order,
// so such a tail holds no acknowledged Save. (A bit flipped in the last
// record of a journal, after its fsync, looks the same and is cut too: the
// store cannot tell it from a torn write, which is far likelier.)
//
// Damage followed by a chunk with a good checksum is not such a tail: a
// synced record lies after it, which a crash cannot have damaged. Neither is
// a chunk with a good checksum out of sequence, which no crash makes. Both,
// and a journal with no damage at all (the corruption is elsewhere), get
// ok=false: the caller treats the directory as corrupt.
func tornTail(data []byte) (t unsyncedTail, ok bool) {
	inRecord := false
	good := 0 // the end of the last complete record
	off := 0
	for off < len(data) {
		blockEnd := (off/journalBlock + 1) * journalBlock
		if blockEnd-off < journalHeader {
			off = blockEnd // the block's padding
			continue
		}
		what := ""
		var end int
		switch {
		case off+journalHeader > len(data):
			what = "a partial chunk header"
		default:
			sum := binary.LittleEndian.Uint32(data[off:])
			end = off + journalHeader + int(binary.LittleEndian.Uint16(data[off+4:]))
			typ := data[off+6]
			switch {
			case typ < chunkFull || typ > chunkLast:
				what = fmt.Sprintf("a chunk header of invalid type %d", typ)
			case end > blockEnd:
				what = "a chunk header whose length runs past its block"
			case end > len(data):
				what = "a chunk cut short by the end of the file"
			case journalCRC(data[off+6:end]) != sum:
				what = "a chunk whose checksum does not match"
			case inRecord == (typ == chunkFull || typ == chunkFirst):
				return unsyncedTail{}, false // a sound chunk out of sequence
			default:
				inRecord = typ == chunkFirst || typ == chunkMiddle
			}
		}
		if what != "" {
			if validChunkAfter(data, off+1) {
				return unsyncedTail{}, false
			}
			if allZero(data[off:]) {
				what = "zeros"
			}
			return unsyncedTail{cut: good, damage: off, what: what}, true
		}
		off = end
		if !inRecord {
			good = off
		}
	}
	if inRecord {
		return unsyncedTail{cut: good, damage: len(data), what: "the end of the file, inside a record,"}, true
	}
	return unsyncedTail{}, false // no damage here: the corruption is elsewhere
}

// validChunkAfter reports whether a chunk with a matching checksum starts
// anywhere in data at or after from. Any byte may start one, since damage
// hides where the chunks after it start; a chunk must lie within its block,
// as every chunk goleveldb writes does (which also bounds the checksumming
// of garbage to a few dozen bytes per byte scanned; zeros cost nothing).
func validChunkAfter(data []byte, from int) bool {
	for p := from; p+journalHeader <= len(data); p++ {
		typ := data[p+6]
		if typ < chunkFull || typ > chunkLast {
			continue
		}
		end := p + journalHeader + int(binary.LittleEndian.Uint16(data[p+4:]))
		if end > len(data) || end > (p/journalBlock+1)*journalBlock {
			continue
		}
		if journalCRC(data[p+6:end]) == binary.LittleEndian.Uint32(data[p:]) {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	return len(bytes.Trim(b, "\x00")) == 0
}

// journals is where a store's goleveldb journals live: the OS directory of
// Open or the goleveldb Storage of OpenStorage. The repair decides once, in
// repairJournal, and each place only reads and truncates.
type journals interface {
	// newest returns the highest-numbered journal.
	newest() (lstorage.FileDesc, error)
	read(fd lstorage.FileDesc) ([]byte, error)
	// truncate makes the journal's first n bytes, which it holds, its
	// durable contents.
	truncate(fd lstorage.FileDesc, data []byte, n int) error
	// path names a journal in the log line.
	path(fd lstorage.FileDesc) string
}

// repairJournal cuts the unsynced tail (see tornTail) of the newest journal
// if err is goleveldb reporting damage in it and the damage is exactly such
// a tail. It returns the log line that says what it cut, which starts with
// "storage: cut <bytes> bytes" for whoever greps for it.
func repairJournal(js journals, err error) (string, bool) {
	var ce *lerrors.ErrCorrupted
	if !errors.As(err, &ce) || ce.Fd.Type != lstorage.TypeJournal {
		return "", false
	}
	newest, nerr := js.newest()
	if nerr != nil || newest != ce.Fd {
		return "", false // damage in an older journal is never an unsynced tail: it was synced before the switch
	}
	data, rerr := js.read(newest)
	if rerr != nil {
		return "", false
	}
	t, ok := tornTail(data)
	if !ok {
		return "", false
	}
	if err := js.truncate(newest, data, t.cut); err != nil {
		return "", false
	}
	return fmt.Sprintf("storage: cut %d bytes at offset %d of %s: %s at offset %d after the last complete record, "+
		"and no valid chunk after it: an unsynced tail left by a crash or power loss, never acknowledged",
		len(data)-t.cut, t.cut, js.path(newest), t.what, t.damage), true
}

// dirJournals is journals in an OS directory.
type dirJournals struct{ dir string }

func (d dirJournals) newest() (lstorage.FileDesc, error) {
	names, err := os.ReadDir(d.dir)
	if err != nil {
		return lstorage.FileDesc{}, err
	}
	best := lstorage.FileDesc{Num: -1}
	for _, e := range names {
		num, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(num, 10, 64); err == nil && n > best.Num {
			best = lstorage.FileDesc{Type: lstorage.TypeJournal, Num: n}
		}
	}
	if best.Num < 0 {
		return lstorage.FileDesc{}, os.ErrNotExist
	}
	return best, nil
}

func (d dirJournals) path(fd lstorage.FileDesc) string { return filepath.Join(d.dir, fileName(fd)) }

func (d dirJournals) read(fd lstorage.FileDesc) ([]byte, error) { return os.ReadFile(d.path(fd)) }

func (d dirJournals) truncate(fd lstorage.FileDesc, _ []byte, n int) error {
	f, err := os.OpenFile(d.path(fd), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(n)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// storageJournals is journals in a goleveldb Storage, named name in the log.
type storageJournals struct {
	stor lstorage.Storage
	name string
}

func (s storageJournals) newest() (lstorage.FileDesc, error) {
	fds, err := s.stor.List(lstorage.TypeJournal)
	if err != nil {
		return lstorage.FileDesc{}, err
	}
	if len(fds) == 0 {
		return lstorage.FileDesc{}, os.ErrNotExist
	}
	newest := fds[0]
	for _, fd := range fds[1:] {
		if fd.Num > newest.Num {
			newest = fd
		}
	}
	return newest, nil
}

func (s storageJournals) path(fd lstorage.FileDesc) string { return s.name + "/" + fileName(fd) }

func (s storageJournals) read(fd lstorage.FileDesc) ([]byte, error) {
	r, err := s.stor.Open(fd)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// truncate: a Storage cannot truncate a file, so the good prefix goes to a
// temporary file, synced and renamed over the journal. Rewriting the
// journal in place would not do: a crash between the rewrite and its sync
// could leave it shorter than its synced records. A crash before the rename
// keeps the damaged journal, repaired again at the next Open.
func (s storageJournals) truncate(fd lstorage.FileDesc, data []byte, n int) error {
	tmp := lstorage.FileDesc{Type: lstorage.TypeTemp, Num: fd.Num}
	w, err := s.stor.Create(tmp)
	if err != nil {
		return err
	}
	_, err = w.Write(data[:n])
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.stor.Rename(tmp, fd)
	}
	if err != nil {
		s.stor.Remove(tmp)
	}
	return err
}
