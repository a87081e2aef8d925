package storage

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// goleveldb's journal format (leveldb's log format): 32 KiB blocks of chunks,
// each chunk a 7-byte header (masked CRC32C of type and payload, uint16
// length, type) and its payload; a record is one full chunk or a first,
// middle..., last sequence. A block tail shorter than a header is zero padding.
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

// tornTail decides whether the only damage in a journal is a final record cut
// short by the end of the file — what a process killed in the middle of
// writing a large batch leaves behind (goleveldb writes a record larger than
// a block with one write call per block). Such a record was never synced, so
// its Save never returned and nothing acknowledged depends on it. It returns
// the length to truncate the file to.
//
// Anything else — a checksum mismatch, a bad chunk type, a zero header, a
// chunk out of sequence, damage followed by more data — is not a torn tail
// and gets ok=false: the caller treats it as corruption.
func tornTail(data []byte) (cut int, ok bool) {
	inRecord := false
	good := 0 // end of the last complete record
	for b := 0; b < len(data); b += journalBlock {
		block := data[b:min(b+journalBlock, len(data))]
		final := b+journalBlock >= len(data)
		j := 0
		for j+journalHeader <= len(block) {
			sum := binary.LittleEndian.Uint32(block[j:])
			length := int(binary.LittleEndian.Uint16(block[j+4:]))
			typ := block[j+6]
			if typ < chunkFull || typ > chunkLast {
				return 0, false // includes the all-zero header
			}
			end := j + journalHeader + length
			if end > len(block) {
				// The chunk runs past the end of its block: a truncation
				// only if this is the file's last, short block.
				if final && len(block) < journalBlock {
					return good, true
				}
				return 0, false
			}
			if journalCRC(block[j+6:end]) != sum {
				return 0, false
			}
			switch typ {
			case chunkFull, chunkFirst:
				if inRecord {
					return 0, false
				}
				inRecord = typ == chunkFirst
			case chunkMiddle, chunkLast:
				if !inRecord {
					return 0, false
				}
				inRecord = typ == chunkMiddle
			}
			j = end
			if !inRecord {
				good = b + j
			}
		}
		if final && len(block) < journalBlock && j < len(block) {
			// A partial header at the very end of the file.
			return good, true
		}
	}
	if inRecord {
		return good, true // the file ends between chunks of a record
	}
	return 0, false // no damage found here: the corruption is elsewhere
}

// newestJournal returns the path of the highest-numbered journal file in dir.
func newestJournal(dir string) (string, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	best, bestName := int64(-1), ""
	for _, e := range names {
		num, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(num, 10, 64); err == nil && n > best {
			best, bestName = n, e.Name()
		}
	}
	if bestName == "" {
		return "", os.ErrNotExist
	}
	return filepath.Join(dir, bestName), nil
}

// repairTornTail truncates the newest journal of dir if, and only if, its
// damage is a torn final record (see tornTail). It reports what it did.
func repairTornTail(path string) (string, bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false, err
	}
	cut, ok := tornTail(data)
	if !ok {
		return "", false, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return "", false, err
	}
	if err := f.Truncate(int64(cut)); err != nil {
		f.Close()
		return "", false, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", false, err
	}
	if err := f.Close(); err != nil {
		return "", false, err
	}
	return fmt.Sprintf("dropped a torn final record from %s (%d bytes at offset %d: a write interrupted by a crash, never acknowledged)",
		filepath.Base(path), len(data)-cut, cut), true, nil
}
