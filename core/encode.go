package core

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/members"
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
	case CmdMember:
		ch := c.Change
		n += 1 + uvarintLen(ch.ID) + uvarintLen(uint64(len(ch.Addr))) + len(ch.Addr) + uvarintLen(ch.Incarnation) +
			uvarintLen(c.Origin) + uvarintLen(c.Req) + uvarintLen(c.Epoch)
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
	dst = slices.Grow(dst, v.Size())
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
		case CmdMember:
			dst = append(dst, byte(c.Change.Kind))
			dst = binary.AppendUvarint(dst, c.Change.ID)
			dst = binary.AppendUvarint(dst, uint64(len(c.Change.Addr)))
			dst = append(dst, c.Change.Addr...)
			dst = binary.AppendUvarint(dst, c.Change.Incarnation)
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
		case CmdMember:
			c.Change = members.Change{Kind: members.Kind(d.byte()), ID: d.uvarint(), Addr: string(d.bytes()), Incarnation: d.uvarint()}
			c.Origin, c.Req, c.Epoch = d.uvarint(), d.uvarint(), d.uvarint()
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
// checksum to the dedup rows of Snap; 4 added the membership to Snap's
// State.
const messageVersion = 4

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

// AppendState appends the encoding of s to dst: six uvarints, then the
// membership (appendHistory).
func AppendState(dst []byte, s ApplyState) []byte {
	for _, x := range []uint64{s.Applied, s.NextIndex, s.FirstIndex, s.LeaseHolder, s.LeaseVersion, s.LogTime} {
		dst = binary.AppendUvarint(dst, x)
	}
	return appendHistory(dst, s.Members)
}

// historyVersion heads the membership in an encoded state; 0 there means no
// membership (a zero History).
const historyVersion = 1

// appendHistory appends h: its version (0 when h is zero), the current
// configuration and the instance it decides from, then 0, or 1 with the
// pending configuration and its first instance.
func appendHistory(dst []byte, h members.History) []byte {
	if h.IsZero() {
		return append(dst, 0)
	}
	dst = append(dst, historyVersion)
	dst = appendConfig(dst, h.Cur)
	dst = binary.AppendUvarint(dst, h.CurFrom)
	if h.Next == nil {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = appendConfig(dst, *h.Next)
	return binary.AppendUvarint(dst, h.NextFrom)
}

func appendConfig(dst []byte, c members.Config) []byte {
	dst = binary.AppendUvarint(dst, c.NextSlot)
	dst = binary.AppendUvarint(dst, uint64(len(c.Members)))
	for _, m := range c.Members {
		dst = binary.AppendUvarint(dst, m.ID)
		dst = binary.AppendUvarint(dst, uint64(len(m.Addr)))
		dst = append(dst, m.Addr...)
		dst = append(dst, byte(m.Role))
		dst = binary.AppendUvarint(dst, m.Slot)
		dst = binary.AppendUvarint(dst, m.Incarnation)
	}
	return dst
}

func (d *decoder) history() members.History {
	switch v := d.byte(); {
	case d.err != nil || v == 0:
		return members.History{}
	case v != historyVersion:
		d.err = fmt.Errorf("%w: membership version %d", ErrCorrupt, v)
		return members.History{}
	}
	h := members.History{Cur: d.config(), CurFrom: d.uvarint()}
	switch pending := d.byte(); {
	case d.err != nil || pending == 0:
	case pending == 1:
		next := d.config()
		h.Next, h.NextFrom = &next, d.uvarint()
	default:
		d.err = fmt.Errorf("%w: membership pending flag %d", ErrCorrupt, pending)
	}
	if d.err == nil && len(h.Cur.Members) == 0 {
		d.err = fmt.Errorf("%w: a membership without members", ErrCorrupt)
	}
	if d.err == nil {
		if err := h.Validate(); err != nil {
			d.err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
	}
	return h
}

// memberMin is the fewest bytes one encoded member takes.
const memberMin = 5

func (d *decoder) config() members.Config {
	c := members.Config{NextSlot: d.uvarint()}
	n := d.count(memberMin)
	if n > 0 {
		c.Members = make([]members.Member, 0, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		m := members.Member{ID: d.uvarint(), Addr: string(d.bytes()), Role: members.Role(d.byte()), Slot: d.uvarint(), Incarnation: d.uvarint()}
		if d.err == nil && (m.Role != members.Voter && m.Role != members.Follower || i > 0 && m.ID <= c.Members[i-1].ID) {
			d.err = fmt.Errorf("%w: member %d with role %d out of order", ErrCorrupt, m.ID, m.Role)
		}
		c.Members = append(c.Members, m)
	}
	return c
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
	s := d.stateV1()
	s.Members = d.history()
	return s
}

// stateV1 reads the six uvarints a state was before it held the membership.
func (d *decoder) stateV1() ApplyState {
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

// DecodeState decodes an apply state encoded by AppendState, or by its
// version before the membership (six uvarints alone: a zero History).
func DecodeState(b []byte) (ApplyState, error) {
	d := decoder{b: b}
	s := d.stateV1()
	if d.err == nil && len(d.b) > 0 {
		s.Members = d.history()
	}
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
