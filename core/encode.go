package core

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/paxosd/paxosd/idgen"
)

// The encodings are compact and versioned by their first byte. Lengths are
// bounded by the input, so a decoder allocates at most what it was given.

const valueVersion = 1

// ErrCorrupt says an encoded value or message could not be decoded.
var ErrCorrupt = errors.New("corrupt encoding")

// Size is the exact number of bytes c adds to an encoded value.
func (c Command) Size() int {
	n := 1
	switch c.Kind {
	case CmdUser:
		n += uvarintLen(c.ClientID) + uvarintLen(c.Seq) + uvarintLen(c.Origin) + uvarintLen(c.Req) +
			uvarintLen(c.Epoch) + uvarintLen(c.Expect) + uvarintLen(uint64(len(c.Entries)))
		for _, e := range c.Entries {
			n += uvarintLen(uint64(len(e))) + len(e)
		}
	case CmdLease:
		n += uvarintLen(c.Holder) + uvarintLen(c.Prev) + uvarintLen(c.Epoch) + uvarintLen(c.Start) + uvarintLen(c.Wall)
	case CmdTrim:
		n += uvarintLen(c.Before) + uvarintLen(c.Origin) + uvarintLen(c.Req) + uvarintLen(c.Epoch)
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// AppendValue appends the encoding of v to dst.
func AppendValue(dst []byte, v Value) []byte {
	dst = append(dst, valueVersion)
	dst = binary.AppendUvarint(dst, uint64(len(v.Commands)))
	for _, c := range v.Commands {
		dst = append(dst, byte(c.Kind))
		switch c.Kind {
		case CmdUser:
			dst = binary.AppendUvarint(dst, c.ClientID)
			dst = binary.AppendUvarint(dst, c.Seq)
			dst = binary.AppendUvarint(dst, c.Origin)
			dst = binary.AppendUvarint(dst, c.Req)
			dst = binary.AppendUvarint(dst, c.Epoch)
			dst = binary.AppendUvarint(dst, c.Expect)
			dst = binary.AppendUvarint(dst, uint64(len(c.Entries)))
			for _, e := range c.Entries {
				dst = binary.AppendUvarint(dst, uint64(len(e)))
				dst = append(dst, e...)
			}
		case CmdLease:
			dst = binary.AppendUvarint(dst, c.Holder)
			dst = binary.AppendUvarint(dst, c.Prev)
			dst = binary.AppendUvarint(dst, c.Epoch)
			dst = binary.AppendUvarint(dst, c.Start)
			dst = binary.AppendUvarint(dst, c.Wall)
		case CmdTrim:
			dst = binary.AppendUvarint(dst, c.Before)
			dst = binary.AppendUvarint(dst, c.Origin)
			dst = binary.AppendUvarint(dst, c.Req)
			dst = binary.AppendUvarint(dst, c.Epoch)
		}
	}
	return dst
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	x, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%w: bad varint", ErrCorrupt)
		return 0
	}
	d.b = d.b[n:]
	return x
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%w: truncated", ErrCorrupt)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// count reads a length and checks that at least min bytes per item remain.
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/min) {
		d.err = fmt.Errorf("%w: count %d exceeds input", ErrCorrupt, n)
		return 0
	}
	return int(n)
}

func (d *decoder) bytes() []byte {
	n := d.count(1)
	if d.err != nil {
		return nil
	}
	out := make([]byte, n)
	copy(out, d.b[:n])
	d.b = d.b[n:]
	return out
}

func (d *decoder) value() Value {
	if v := d.byte(); d.err == nil && v != valueVersion {
		d.err = fmt.Errorf("%w: value version %d", ErrCorrupt, v)
	}
	n := d.count(1)
	var v Value
	if n > 0 {
		v.Commands = make([]Command, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		c := Command{Kind: CommandKind(d.byte())}
		switch c.Kind {
		case CmdUser:
			c.ClientID, c.Seq, c.Origin, c.Req, c.Epoch, c.Expect = d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
			m := d.count(1)
			if m > 0 {
				c.Entries = make([][]byte, 0, m)
			}
			for j := 0; j < m && d.err == nil; j++ {
				c.Entries = append(c.Entries, d.bytes())
			}
		case CmdNoop:
		case CmdLease:
			c.Holder, c.Prev, c.Epoch, c.Start, c.Wall = d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
		case CmdTrim:
			c.Before, c.Origin, c.Req, c.Epoch = d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
		default:
			if d.err == nil {
				d.err = fmt.Errorf("%w: command kind %d", ErrCorrupt, c.Kind)
			}
		}
		v.Commands = append(v.Commands, c)
	}
	return v
}

// DecodeValue decodes a value encoded by AppendValue.
func DecodeValue(b []byte) (Value, error) {
	d := decoder{b: b}
	v := d.value()
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if d.err != nil {
		return Value{}, d.err
	}
	return v, nil
}

// messageVersion 2 added After and Snap; 3 added each seq's entries
// checksum to the dedup rows of Snap.
const messageVersion = 3

// AppendMessage appends the encoding of m to dst.
func AppendMessage(dst []byte, m Message) []byte {
	dst = append(dst, messageVersion, byte(m.Type))
	flags := byte(0)
	if m.Reject {
		flags = 1
	}
	dst = append(dst, flags)
	for _, x := range []uint64{m.From, m.To, uint64(m.Ballot), uint64(m.Promised), m.Instance, m.End, m.After, m.Committed} {
		dst = binary.AppendUvarint(dst, x)
	}
	dst = AppendValue(dst, m.Value)
	dst = binary.AppendUvarint(dst, uint64(len(m.Entries)))
	for _, e := range m.Entries {
		dst = binary.AppendUvarint(dst, e.Instance)
		dst = binary.AppendUvarint(dst, uint64(e.Ballot))
		dst = AppendValue(dst, e.Value)
	}
	if m.Snap == nil {
		return append(dst, 0)
	}
	c := m.Snap
	done := byte(1)
	if c.Done {
		done = 2
	}
	dst = append(dst, done)
	dst = AppendState(dst, c.State)
	dst = binary.AppendUvarint(dst, uint64(len(c.Entries)))
	for _, e := range c.Entries {
		dst = binary.AppendUvarint(dst, e.Index)
		dst = binary.AppendUvarint(dst, uint64(len(e.Data)))
		dst = append(dst, e.Data...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.Dedup)))
	for _, d := range c.Dedup {
		dst = binary.AppendUvarint(dst, d.ClientID)
		dst = AppendDedup(dst, d)
	}
	return dst
}

// AppendState appends the encoding of s (six uvarints) to dst.
func AppendState(dst []byte, s ApplyState) []byte {
	for _, x := range []uint64{s.Applied, s.NextIndex, s.FirstIndex, s.LeaseHolder, s.LeaseVersion, s.LogTime} {
		dst = binary.AppendUvarint(dst, x)
	}
	return dst
}

// AppendDedup appends the encoding of d's row, without its client ID and
// Deleted mark: LastUsed, then the count and, for each of Recent, Seq, First
// and Last as uvarints and Sum as 4 bytes big-endian.
func AppendDedup(dst []byte, d DedupEntry) []byte {
	dst = binary.AppendUvarint(dst, d.LastUsed)
	dst = binary.AppendUvarint(dst, uint64(len(d.Recent)))
	for _, r := range d.Recent {
		dst = binary.AppendUvarint(dst, r.Seq)
		dst = binary.AppendUvarint(dst, r.First)
		dst = binary.AppendUvarint(dst, r.Last)
		dst = binary.BigEndian.AppendUint32(dst, r.Sum)
	}
	return dst
}

func (d *decoder) state() ApplyState {
	return ApplyState{Applied: d.uvarint(), NextIndex: d.uvarint(), FirstIndex: d.uvarint(),
		LeaseHolder: d.uvarint(), LeaseVersion: d.uvarint(), LogTime: d.uvarint()}
}

func (d *decoder) uint32() uint32 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 4 {
		d.err = fmt.Errorf("%w: truncated", ErrCorrupt)
		return 0
	}
	x := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return x
}

// seqIndexesMin is the fewest bytes one encoded SeqIndexes takes.
const seqIndexesMin = 3 + 4

func (d *decoder) dedup(client uint64) DedupEntry {
	e := DedupEntry{ClientID: client, LastUsed: d.uvarint()}
	n := d.count(seqIndexesMin)
	if n > 0 {
		e.Recent = make([]SeqIndexes, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		e.Recent = append(e.Recent, SeqIndexes{Seq: d.uvarint(), First: d.uvarint(), Last: d.uvarint(), Sum: d.uint32()})
	}
	return e
}

// DecodeState decodes an apply state encoded by AppendState.
func DecodeState(b []byte) (ApplyState, error) {
	d := decoder{b: b}
	s := d.state()
	return s, d.end()
}

// DecodeDedup decodes a row encoded by AppendDedup, for client.
func DecodeDedup(client uint64, b []byte) (DedupEntry, error) {
	d := decoder{b: b}
	e := d.dedup(client)
	if err := d.end(); err != nil {
		return DedupEntry{}, err
	}
	return e, nil
}

// end reports the first error, or trailing bytes.
func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	return d.err
}

// DecodeMessage decodes a message encoded by AppendMessage.
func DecodeMessage(b []byte) (Message, error) {
	d := decoder{b: b}
	var m Message
	if v := d.byte(); d.err == nil && v != messageVersion {
		return m, fmt.Errorf("%w: message version %d", ErrCorrupt, v)
	}
	m.Type = MsgType(d.byte())
	flags := d.byte()
	if d.err == nil && (m.Type < MsgPrepare || m.Type > MaxMsgType || flags > 1) {
		return m, fmt.Errorf("%w: message type %d flags %d", ErrCorrupt, m.Type, flags)
	}
	m.Reject = flags == 1
	m.From, m.To = d.uvarint(), d.uvarint()
	m.Ballot, m.Promised = idgen.Ballot(d.uvarint()), idgen.Ballot(d.uvarint())
	m.Instance, m.End, m.After, m.Committed = d.uvarint(), d.uvarint(), d.uvarint(), d.uvarint()
	m.Value = d.value()
	n := d.count(3)
	if n > 0 {
		m.Entries = make([]InstanceValue, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		e := InstanceValue{Instance: d.uvarint(), Ballot: idgen.Ballot(d.uvarint())}
		e.Value = d.value()
		m.Entries = append(m.Entries, e)
	}
	switch snap := d.byte(); {
	case d.err != nil || snap == 0:
	case snap > 2:
		d.err = fmt.Errorf("%w: snapshot flag %d", ErrCorrupt, snap)
	default:
		c := &SnapChunk{Done: snap == 2, State: d.state()}
		n := d.count(2)
		if n > 0 {
			c.Entries = make([]Entry, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			c.Entries = append(c.Entries, Entry{Index: d.uvarint(), Data: d.bytes()})
		}
		n = d.count(3)
		if n > 0 {
			c.Dedup = make([]DedupEntry, 0, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			c.Dedup = append(c.Dedup, d.dedup(d.uvarint()))
		}
		m.Snap = c
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(d.b))
	}
	if d.err != nil {
		return Message{}, d.err
	}
	return m, nil
}
