package core

import (
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/members"
)

func sampleValue() Value {
	return Value{Commands: []Command{
		{Kind: CmdUser, Entries: [][]byte{[]byte("a"), {}, []byte("hello")}, ClientID: 7, Seq: 3, Origin: 2, Req: 99},
		{Kind: CmdNoop},
		{Kind: CmdLease, Holder: 1, Prev: 4, Epoch: 123456789, Start: 42},
		{Kind: CmdTrim, Before: 1000},
	}}
}

func TestValueRoundTrip(t *testing.T) {
	member := Command{Kind: CmdMember, Change: members.Change{Kind: members.AddFollower, ID: 4, Addr: "127.0.0.1:7004", Incarnation: 1 << 60},
		Origin: 1, Req: 99, Epoch: 7}
	for _, v := range []Value{{}, sampleValue(), {Commands: []Command{{Kind: CmdUser}}}, {Commands: []Command{member, {Kind: CmdMember}}}} {
		b := AppendValue(nil, v)
		got, err := DecodeValue(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(AppendValue(nil, got), b) {
			t.Fatalf("round trip changed %+v into %+v", v, got)
		}
		if v.Size() != len(b) {
			t.Fatalf("Size %d, encoded %d", v.Size(), len(b))
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	snap := &SnapChunk{State: ApplyState{Applied: 9, NextIndex: 30, FirstIndex: 20, LeaseHolder: 2, LeaseVersion: 3, LogTime: 1 << 40},
		Entries: []Entry{{Index: 20, Data: []byte("a")}, {Index: 21}},
		Dedup:   []DedupEntry{{ClientID: 7, LastUsed: 5, Recent: []SeqIndexes{{Seq: 1, First: 2, Last: 3, Sum: 0xdeadbeef}}}, {ClientID: 8}}, Done: true}
	for _, m := range []Message{
		{Type: MsgPromise, From: 1, To: 2, Ballot: 65, Reject: true, Promised: 130, Instance: 5, End: 9, Committed: 4,
			Value: sampleValue(), Entries: []InstanceValue{{Instance: 5, Ballot: 64, Value: sampleValue()}, {Instance: 6}}},
		{Type: MsgSnapResp, From: 1, To: 2, Instance: 9, End: 20, After: 6, Snap: snap},
		{Type: MsgSnapResp, From: 1, To: 2, Snap: &SnapChunk{}},
		{Type: MsgSnapResp, From: 1, To: 2, Snap: &SnapChunk{State: ApplyState{Applied: 3, Members: withPending()}}},
	} {
		b := AppendMessage(nil, m)
		got, err := DecodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(AppendMessage(nil, got), b) {
			t.Fatalf("round trip: %v vs %v", got, m)
		}
		if m.Snap != nil && (got.Snap == nil || got.Snap.Done != m.Snap.Done || !reflect.DeepEqual(got.Snap.State, m.Snap.State) || got.After != m.After ||
			!reflect.DeepEqual(got.Snap.Dedup, m.Snap.Dedup)) {
			t.Fatalf("round trip lost the snapshot chunk: %+v vs %+v", got.Snap, m.Snap)
		}
	}
}

// EntriesSum is kept in the replicated dedup table: its values must never
// change, and entries split differently sum differently.
func TestEntriesSum(t *testing.T) {
	for _, c := range []struct {
		entries [][]byte
		want    uint32
	}{
		{nil, 0x527d5351},
		{[][]byte{[]byte("a"), []byte("b")}, 0xf82a9184},
		{[][]byte{[]byte("ab")}, 0xc98eed96},
		{[][]byte{[]byte("a"), []byte("b"), {}}, 0xf8d9bebe},
	} {
		if got := EntriesSum(c.entries); got != c.want {
			t.Errorf("EntriesSum(%q) = %#x, want %#x", c.entries, got, c.want)
		}
	}
}

func TestDedupRoundTrip(t *testing.T) {
	for _, d := range []DedupEntry{
		{ClientID: 3},
		{ClientID: 4, LastUsed: 1 << 41, Recent: []SeqIndexes{{Seq: 7, First: 100, Last: 101, Sum: 1}, {Seq: 9, First: 200, Last: 300, Sum: 1<<32 - 1}}},
	} {
		b := AppendDedup(nil, d)
		got, err := DecodeDedup(d.ClientID, b)
		if err != nil || !reflect.DeepEqual(AppendDedup(nil, got), b) || got.LastUsed != d.LastUsed || len(got.Recent) != len(d.Recent) {
			t.Fatalf("round trip of %+v: %+v %v", d, got, err)
		}
		for i := range d.Recent {
			if got.Recent[i] != d.Recent[i] {
				t.Fatalf("round trip of %+v: seq %d is %+v", d, i, got.Recent[i])
			}
		}
		if SnapRowSize(d) < uvarintLen(d.ClientID)+len(b) {
			t.Errorf("SnapRowSize %d below the encoded size %d", SnapRowSize(d), uvarintLen(d.ClientID)+len(b))
		}
		for i := range len(b) {
			if _, err := DecodeDedup(d.ClientID, b[:i]); err == nil {
				t.Fatalf("truncation at %d of %x accepted", i, b)
			}
		}
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	b := AppendValue(nil, sampleValue())
	for i := 0; i < len(b); i++ {
		if _, err := DecodeValue(b[:i]); err == nil {
			t.Fatalf("truncation at %d accepted", i)
		}
	}
	if _, err := DecodeValue(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	if _, err := DecodeMessage([]byte{9, 9, 9}); err == nil {
		t.Fatal("bad version accepted")
	}
}

func FuzzDecodeValue(f *testing.F) {
	f.Add(AppendValue(nil, sampleValue()))
	f.Add([]byte{1, 200, 200, 200, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := DecodeValue(b)
		if err != nil {
			return
		}
		if _, err := DecodeValue(AppendValue(nil, v)); err != nil {
			t.Fatalf("re-encoding of a decoded value does not decode: %v", err)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(AppendMessage(nil, Message{Type: MsgAccept, From: 1, To: 2, Value: sampleValue()}))
	f.Add(AppendMessage(nil, Message{Type: MsgSnapResp, From: 1, To: 2, Snap: &SnapChunk{State: ApplyState{Applied: 3, Members: withPending()}}}))
	f.Add(AppendMessage(nil, Message{Type: MsgSnapResp, From: 1, To: 2, Snap: &SnapChunk{State: ApplyState{Applied: 3},
		Entries: []Entry{{Index: 1, Data: []byte("x")}}, Dedup: []DedupEntry{{ClientID: 1, Recent: []SeqIndexes{{Seq: 1}}}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			return
		}
		if _, err := DecodeMessage(AppendMessage(nil, m)); err != nil {
			t.Fatalf("re-encoding of a decoded message does not decode: %v", err)
		}
	})
}

// withPending is a membership with a change pending: three voters, a fourth
// member promoted from instance 70 on.
func withPending() members.History {
	c, _ := members.New(members.Member{ID: 1, Addr: "a"}, members.Member{ID: 2, Addr: "b"}, members.Member{ID: 3, Addr: "c"})
	c, _ = c.Apply(members.Change{Kind: members.AddFollower, ID: 4, Addr: "d", Incarnation: 5}, 64)
	h, _ := members.NewHistory(c, 0).Apply(6, members.Change{Kind: members.Promote, ID: 4}, members.Rules{Delay: 64, K: 64})
	return h
}
