// Package backup is the file format of paxosd snapshot save and restore: a
// consistent copy of one node's log (its applied state, the user entries
// from the first index and the exactly-once dedup table) with a header and
// a trailing SHA-256 (docs/operations.md, "Backup and restore").
//
// # Format (version 1)
//
//	magic    16 bytes  "paxosd-snapshot\n"
//	version  uint32    big-endian, 1
//	hlen     uint32    big-endian, the header's length
//	header   hlen bytes, uvarints unless noted:
//	           cluster name (uvarint length, bytes), cluster ID, node ID,
//	           created (Unix ms), applied, first index, next index,
//	           lease holder, lease version, log time, dedup rows
//	entries  next index - first index times: uvarint length, bytes
//	rows     dedup rows times: uvarint length, then uvarint client ID and
//	         the row as core.AppendDedup encodes it
//	sum      32 bytes, SHA-256 of everything before it
//
// Nothing may follow the sum. The counts come from the header, so a
// truncated file is caught before the sum is read, and any changed byte
// fails the sum.
package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
)

// Magic opens every snapshot file.
const Magic = "paxosd-snapshot\n"

// Version is the format this package writes and reads.
const Version = 1

// maxRecord bounds one entry or row: a length above it is damage, not data
// (entries are at most api.MaxEntryBytesLimit, --max-entry-bytes).
const maxRecord = api.MaxMessageBytes

// ErrCorrupt wraps every error about a damaged, truncated or foreign file.
var ErrCorrupt = errors.New("not a valid paxosd snapshot")

// Header describes a snapshot: the applied state it copies.
type Header struct {
	Cluster   string `json:"cluster"`
	ClusterID uint64 `json:"cluster_id"`
	NodeID    uint64 `json:"node_id"`
	Created   int64  `json:"created_unix_ms"`
	// Applied: instances below it are in the copy.
	Applied      uint64 `json:"applied"`
	FirstIndex   uint64 `json:"first_index"`
	NextIndex    uint64 `json:"next_index"`
	LeaseHolder  uint64 `json:"lease_holder"`
	LeaseVersion uint64 `json:"lease_version"`
	LogTime      uint64 `json:"log_time"`
	DedupRows    uint64 `json:"dedup_rows"`
}

// Entries is the number of entries the file holds.
func (h Header) Entries() uint64 { return h.NextIndex - h.FirstIndex }

// State is the apply state the header describes, without a membership:
// the restored cluster's comes from its members' --peers.
func (h Header) State() core.ApplyState {
	return core.ApplyState{Applied: h.Applied, NextIndex: h.NextIndex, FirstIndex: h.FirstIndex,
		LeaseHolder: h.LeaseHolder, LeaseVersion: h.LeaseVersion, LogTime: h.LogTime}
}

func (h Header) encode() []byte {
	b := binary.AppendUvarint(nil, uint64(len(h.Cluster)))
	b = append(b, h.Cluster...)
	for _, x := range []uint64{h.ClusterID, h.NodeID, uint64(h.Created), h.Applied, h.FirstIndex, h.NextIndex,
		h.LeaseHolder, h.LeaseVersion, h.LogTime, h.DedupRows} {
		b = binary.AppendUvarint(b, x)
	}
	return b
}

func decodeHeader(b []byte) (Header, error) {
	var h Header
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return h, fmt.Errorf("%w: bad cluster name in the header", ErrCorrupt)
	}
	h.Cluster, b = string(b[k:k+int(n)]), b[k+int(n):]
	var created uint64
	for _, p := range []*uint64{&h.ClusterID, &h.NodeID, &created, &h.Applied, &h.FirstIndex, &h.NextIndex,
		&h.LeaseHolder, &h.LeaseVersion, &h.LogTime, &h.DedupRows} {
		x, k := binary.Uvarint(b)
		if k <= 0 {
			return h, fmt.Errorf("%w: header cut short", ErrCorrupt)
		}
		*p, b = x, b[k:]
	}
	h.Created = int64(created)
	if len(b) != 0 {
		return h, fmt.Errorf("%w: %d stray bytes in the header", ErrCorrupt, len(b))
	}
	if h.FirstIndex > h.NextIndex {
		return h, fmt.Errorf("%w: first index %d above next index %d", ErrCorrupt, h.FirstIndex, h.NextIndex)
	}
	return h, nil
}

// Writer writes a snapshot file: the header, then exactly Entries() entries
// and DedupRows rows, then Close writes the sum.
type Writer struct {
	under   io.Writer
	w       *bufio.Writer
	sum     hash.Hash
	h       Header
	entries uint64
	rows    uint64
	buf     []byte
	// Bytes is how many bytes were written so far.
	Bytes int64
}

// NewWriter writes h to w and returns the writer of the rest.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	x := &Writer{under: w, sum: sha256.New(), h: h}
	x.w = bufio.NewWriterSize(io.MultiWriter(w, x.sum), 1<<20)
	hb := h.encode()
	b := append([]byte(Magic), 0, 0, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(Magic):], Version)
	binary.BigEndian.PutUint32(b[len(Magic)+4:], uint32(len(hb)))
	if err := x.write(append(b, hb...)); err != nil {
		return nil, err
	}
	return x, nil
}

func (x *Writer) write(b []byte) error {
	n, err := x.w.Write(b)
	x.Bytes += int64(n)
	return err
}

func (x *Writer) record(payload ...[]byte) error {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	x.buf = binary.AppendUvarint(x.buf[:0], uint64(n))
	for _, p := range payload {
		x.buf = append(x.buf, p...)
	}
	return x.write(x.buf)
}

// Entry writes the next entry.
func (x *Writer) Entry(data []byte) error {
	if x.entries == x.h.Entries() {
		return fmt.Errorf("backup: more entries than the header's %d", x.h.Entries())
	}
	x.entries++
	return x.record(data)
}

// Row writes the next dedup row.
func (x *Writer) Row(d core.DedupEntry) error {
	if x.entries != x.h.Entries() {
		return fmt.Errorf("backup: a dedup row after %d of %d entries", x.entries, x.h.Entries())
	}
	if x.rows == x.h.DedupRows {
		return fmt.Errorf("backup: more dedup rows than the header's %d", x.h.DedupRows)
	}
	x.rows++
	return x.record(binary.AppendUvarint(nil, d.ClientID), core.AppendDedup(nil, d))
}

// Close checks the counts, writes the sum and flushes. It does not close
// the underlying writer.
func (x *Writer) Close() error {
	if x.entries != x.h.Entries() || x.rows != x.h.DedupRows {
		return fmt.Errorf("backup: %d entries and %d rows written, the header says %d and %d", x.entries, x.rows, x.h.Entries(), x.h.DedupRows)
	}
	if err := x.w.Flush(); err != nil {
		return err
	}
	n, err := x.under.Write(x.sum.Sum(nil))
	x.Bytes += int64(n)
	return err
}

// Reader reads a snapshot file: Header first, then Entry until it has
// returned Entries() entries, Row for each row, and Finish checks the sum.
type Reader struct {
	r       consumed
	raw     *bufio.Reader
	sum     hash.Hash
	Header  Header
	entries uint64
	rows    uint64
	buf     []byte
	// Bytes is how many bytes were read so far.
	Bytes int64
}

// consumed feeds every byte the Reader consumes (not what bufio reads
// ahead) to the sum.
type consumed struct {
	r   *bufio.Reader
	sum hash.Hash
	n   *int64
}

func (c consumed) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.sum.Write(p[:n])
	*c.n += int64(n)
	return n, err
}

func (c consumed) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.sum.Write([]byte{b})
		*c.n++
	}
	return b, err
}

// NewReader reads the magic, version and header from r.
func NewReader(r io.Reader) (*Reader, error) {
	x := &Reader{sum: sha256.New(), raw: bufio.NewReaderSize(r, 1<<20)}
	x.r = consumed{r: x.raw, sum: x.sum, n: &x.Bytes}
	b := make([]byte, len(Magic)+8)
	if _, err := io.ReadFull(x.r, b); err != nil {
		return nil, fmt.Errorf("%w: reading the magic: %v", ErrCorrupt, eof(err))
	}
	if !bytes.Equal(b[:len(Magic)], []byte(Magic)) {
		return nil, fmt.Errorf("%w: the file does not start with %q", ErrCorrupt, Magic)
	}
	if v := binary.BigEndian.Uint32(b[len(Magic):]); v != Version {
		return nil, fmt.Errorf("%w: format version %d; this paxosd reads version %d", ErrCorrupt, v, Version)
	}
	n := binary.BigEndian.Uint32(b[len(Magic)+4:])
	if n > 1<<16 {
		return nil, fmt.Errorf("%w: header of %d bytes", ErrCorrupt, n)
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(x.r, hb); err != nil {
		return nil, fmt.Errorf("%w: reading the header: %v", ErrCorrupt, eof(err))
	}
	var err error
	if x.Header, err = decodeHeader(hb); err != nil {
		return nil, err
	}
	return x, nil
}

// eof names a file that ends too early.
func eof(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the file ends too early (truncated?)")
	}
	return err
}

func (x *Reader) record(what string) ([]byte, error) {
	n, err := binary.ReadUvarint(x.r)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrCorrupt, what, eof(err))
	}
	if n > maxRecord {
		return nil, fmt.Errorf("%w: %s of %d bytes", ErrCorrupt, what, n)
	}
	if uint64(cap(x.buf)) < n {
		x.buf = make([]byte, n)
	}
	x.buf = x.buf[:n]
	if _, err := io.ReadFull(x.r, x.buf); err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrCorrupt, what, eof(err))
	}
	return x.buf, nil
}

// Entry returns the next entry; its bytes are valid until the next call.
func (x *Reader) Entry() ([]byte, error) {
	if x.entries == x.Header.Entries() {
		return nil, io.EOF
	}
	b, err := x.record(fmt.Sprintf("entry %d", x.Header.FirstIndex+x.entries))
	x.entries++
	return b, err
}

// Row returns the next dedup row, io.EOF after the last one.
func (x *Reader) Row() (core.DedupEntry, error) {
	if x.entries != x.Header.Entries() {
		return core.DedupEntry{}, fmt.Errorf("backup: Row before every entry was read")
	}
	if x.rows == x.Header.DedupRows {
		return core.DedupEntry{}, io.EOF
	}
	x.rows++
	b, err := x.record("a dedup row")
	if err != nil {
		return core.DedupEntry{}, err
	}
	id, k := binary.Uvarint(b)
	if k <= 0 || id == 0 {
		return core.DedupEntry{}, fmt.Errorf("%w: bad client ID in dedup row %d", ErrCorrupt, x.rows)
	}
	d, err := core.DecodeDedup(id, b[k:])
	if err != nil {
		return core.DedupEntry{}, fmt.Errorf("%w: dedup row of client %d: %v", ErrCorrupt, id, err)
	}
	return d, nil
}

// Finish checks that everything was read, that the sum matches and that
// nothing follows it, and returns the sum.
func (x *Reader) Finish() ([]byte, error) {
	if x.entries != x.Header.Entries() || x.rows != x.Header.DedupRows {
		return nil, fmt.Errorf("backup: Finish after %d entries and %d rows of %d and %d", x.entries, x.rows, x.Header.Entries(), x.Header.DedupRows)
	}
	want := x.sum.Sum(nil)
	got := make([]byte, sha256.Size)
	if _, err := io.ReadFull(x.raw, got); err != nil {
		return nil, fmt.Errorf("%w: reading the checksum: %v", ErrCorrupt, eof(err))
	}
	x.Bytes += sha256.Size
	if _, err := x.raw.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the checksum", ErrCorrupt)
	}
	if !bytes.Equal(got, want) {
		return nil, fmt.Errorf("%w: checksum mismatch (the file is damaged): SHA-256 %x, the file says %x", ErrCorrupt, want, got)
	}
	return got, nil
}
