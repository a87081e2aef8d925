package acceptor_test

import (
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/acceptor"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
)

func val(s string) core.Value {
	return core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{[]byte(s)}}}}
}

func iv(i uint64, b idgen.Ballot, s string) core.InstanceValue {
	return core.InstanceValue{Instance: i, Ballot: b, Value: val(s)}
}

const maxAhead = 10

// A Promise stops before maxBytes and says where to continue; the pieces,
// asked for in turn, are every accepted value exactly once, each piece
// within the bound (or a single value, whatever its size).
func TestPrepareInPieces(t *testing.T) {
	big := string(make([]byte, 1000))
	var held []core.InstanceValue
	for i := uint64(0); i < 9; i++ {
		held = append(held, iv(i, 4, big))
	}
	held = append(held, iv(9, 4, string(make([]byte, 5000)))) // larger than the bound alone
	a := acceptor.New(0, held, maxAhead)
	const bound = 2500
	var got []core.InstanceValue
	after, pieces := uint64(0), 0
	for {
		reply, changed := a.Prepare(core.Message{Type: core.MsgPrepare, Ballot: 10, Instance: 0, After: after}, 0, bound)
		if reply.Reject || reply.After != after || changed != (pieces == 0) {
			t.Fatalf("piece %d: %v changed=%v", pieces, reply, changed)
		}
		size := 0
		for _, e := range reply.Entries {
			size += e.Size()
		}
		if len(reply.Entries) == 0 || (len(reply.Entries) > 1 && size > bound) {
			t.Fatalf("piece %d: %d values of %d bytes, bound %d", pieces, len(reply.Entries), size, bound)
		}
		got = append(got, reply.Entries...)
		pieces++
		if reply.End == 0 {
			break
		}
		if reply.End != reply.Entries[len(reply.Entries)-1].Instance+1 {
			t.Fatalf("piece %d ends at %d after instance %d", pieces, reply.End, reply.Entries[len(reply.Entries)-1].Instance)
		}
		after = reply.End
	}
	if !reflect.DeepEqual(got, held) || pieces != 6 {
		t.Fatalf("%d pieces gave %d values, want the 10 held in 6 pieces", pieces, len(got))
	}
	// Unbounded, it is one piece.
	if reply, _ := a.Prepare(core.Message{Type: core.MsgPrepare, Ballot: 10}, 0, 0); len(reply.Entries) != 10 || reply.End != 0 {
		t.Fatalf("unbounded: %d values, end %d", len(reply.Entries), reply.End)
	}
}

func TestPrepare(t *testing.T) {
	held := []core.InstanceValue{iv(7, 4, "g"), iv(3, 5, "c"), iv(5, 6, "e"), iv(2, 7, "b")}
	for _, tc := range []struct {
		name          string
		promised      idgen.Ballot
		applied, from uint64
		ballot        idgen.Ballot
		wantReject    bool
		wantChanged   bool
		wantPromise   idgen.Ballot // acceptor's promise afterwards
		wantEntries   []core.InstanceValue
	}{
		{"fresh promise", 0, 0, 0, 10, false, true, 10, []core.InstanceValue{iv(2, 7, "b"), iv(3, 5, "c"), iv(5, 6, "e"), iv(7, 4, "g")}},
		{"entries at or above from, sorted", 8, 3, 3, 20, false, true, 20, []core.InstanceValue{iv(3, 5, "c"), iv(5, 6, "e"), iv(7, 4, "g")}},
		{"from above every accepted", 8, 0, 8, 20, false, true, 20, nil},
		{"equal ballot re-prepare", 10, 0, 4, 10, false, false, 10, []core.InstanceValue{iv(5, 6, "e"), iv(7, 4, "g")}},
		{"below promise", 20, 0, 0, 10, true, false, 20, nil},
		{"proposer behind: applied > from", 5, 4, 3, 10, true, false, 5, nil},
		{"applied == from is fine", 5, 4, 4, 10, false, true, 10, []core.InstanceValue{iv(5, 6, "e"), iv(7, 4, "g")}},
	} {
		for _, planted := range []bool{false, true} { // the planted bug must not change Prepare
			a := acceptor.New(tc.promised, held, maxAhead)
			if planted {
				a.PlantAcceptBelowPromise()
			}
			reply, changed := a.Prepare(core.Message{Type: core.MsgPrepare, Ballot: tc.ballot, Instance: tc.from}, tc.applied, 0)
			want := core.Message{Type: core.MsgPromise, Ballot: tc.ballot, Instance: tc.from, Entries: tc.wantEntries}
			if tc.wantReject {
				want.Reject, want.Promised = true, tc.promised
			}
			if !reflect.DeepEqual(reply, want) {
				t.Errorf("%s (planted=%v): reply\n got %v %+v\nwant %v %+v", tc.name, planted, reply, reply.Entries, want, want.Entries)
			}
			if changed != tc.wantChanged || a.Promised() != tc.wantPromise {
				t.Errorf("%s (planted=%v): changed=%v promise=%d, want %v %d", tc.name, planted, changed, a.Promised(), tc.wantChanged, tc.wantPromise)
			}
		}
	}
}

func TestAccept(t *testing.T) {
	type want struct {
		reject  bool
		record  *core.InstanceValue
		changed bool
		promise idgen.Ballot
		held    *core.InstanceValue // Accepted(instance) afterwards
	}
	p := func(x core.InstanceValue) *core.InstanceValue { return &x }
	for _, tc := range []struct {
		name     string
		promised idgen.Ballot
		held     []core.InstanceValue
		applied  uint64
		m        core.InstanceValue // instance, ballot, value of the Accept
		want     want
		planted  *want // outcome with PlantAcceptBelowPromise; nil: same as want
	}{
		{"at promise", 10, nil, 0, iv(0, 10, "a"),
			want{false, p(iv(0, 10, "a")), false, 10, p(iv(0, 10, "a"))}, nil},
		{"raises promise", 10, nil, 0, iv(1, 20, "a"),
			want{false, p(iv(1, 20, "a")), true, 20, p(iv(1, 20, "a"))}, nil},
		{"below promise", 20, nil, 0, iv(1, 10, "a"),
			want{true, nil, false, 20, nil},
			&want{false, p(iv(1, 10, "a")), false, 20, p(iv(1, 10, "a"))}},
		{"below applied", 10, nil, 5, iv(4, 30, "a"),
			want{true, nil, false, 10, nil}, nil},
		{"at applied+maxAhead", 10, nil, 5, iv(5+maxAhead, 30, "a"),
			want{true, nil, false, 10, nil}, nil},
		{"just inside maxAhead", 10, nil, 5, iv(5+maxAhead-1, 30, "a"),
			want{false, p(iv(14, 30, "a")), true, 30, p(iv(14, 30, "a"))}, nil},
		{"duplicate at same ballot", 10, []core.InstanceValue{iv(2, 10, "a")}, 0, iv(2, 10, "a"),
			want{false, nil, false, 10, p(iv(2, 10, "a"))}, nil},
		{"higher ballot replaces", 10, []core.InstanceValue{iv(2, 10, "a")}, 0, iv(2, 20, "b"),
			want{false, p(iv(2, 20, "b")), true, 20, p(iv(2, 20, "b"))}, nil},
	} {
		for _, planted := range []bool{false, true} {
			w := tc.want
			if planted && tc.planted != nil {
				w = *tc.planted
			}
			a := acceptor.New(tc.promised, tc.held, maxAhead)
			if planted {
				a.PlantAcceptBelowPromise()
			}
			reply, rec, changed := a.Accept(core.Message{Type: core.MsgAccept, Ballot: tc.m.Ballot, Instance: tc.m.Instance, Value: tc.m.Value}, tc.applied)
			wantReply := core.Message{Type: core.MsgAccepted, Ballot: tc.m.Ballot, Instance: tc.m.Instance}
			if w.reject {
				wantReply.Reject, wantReply.Promised = true, tc.promised
			}
			if !reflect.DeepEqual(reply, wantReply) {
				t.Errorf("%s (planted=%v): reply %v, want %v", tc.name, planted, reply, wantReply)
			}
			if !reflect.DeepEqual(rec, w.record) || changed != w.changed || a.Promised() != w.promise {
				t.Errorf("%s (planted=%v): record=%+v changed=%v promise=%d, want %+v %v %d", tc.name, planted, rec, changed, a.Promised(), w.record, w.changed, w.promise)
			}
			got, ok := a.Accepted(tc.m.Instance)
			if ok != (w.held != nil) || (ok && !reflect.DeepEqual(got, *w.held)) {
				t.Errorf("%s (planted=%v): Accepted(%d) = %+v %v, want %+v", tc.name, planted, tc.m.Instance, got, ok, w.held)
			}
			if err := a.Check(tc.applied); err != nil {
				t.Errorf("%s (planted=%v): Check: %v", tc.name, planted, err)
			}
		}
	}
}

func TestForget(t *testing.T) {
	held := []core.InstanceValue{iv(1, 3, "a"), iv(2, 3, "b"), iv(3, 3, "c"), iv(4, 3, "d"), iv(5, 3, "e")}
	for _, tc := range []struct {
		applied  uint64
		wantKept []uint64
	}{
		{0, []uint64{1, 2, 3, 4, 5}},
		{1, []uint64{1, 2, 3, 4, 5}},
		{3, []uint64{3, 4, 5}},
		{6, nil},
	} {
		a := acceptor.New(3, held, maxAhead)
		a.Forget(tc.applied)
		if a.Open() != len(tc.wantKept) {
			t.Errorf("Forget(%d): Open()=%d, want %d", tc.applied, a.Open(), len(tc.wantKept))
		}
		for i := uint64(0); i <= 6; i++ {
			_, ok := a.Accepted(i)
			want := false
			for _, k := range tc.wantKept {
				want = want || k == i
			}
			if ok != want {
				t.Errorf("Forget(%d): Accepted(%d) present=%v, want %v", tc.applied, i, ok, want)
			}
		}
		if a.Promised() != 3 {
			t.Errorf("Forget changed the promise to %d", a.Promised())
		}
	}
}

// A sequence of prepares and accepts: the promise never decreases.
func TestPromiseMonotonic(t *testing.T) {
	a := acceptor.New(0, nil, maxAhead)
	steps := []struct {
		prepare bool
		ballot  idgen.Ballot
		want    idgen.Ballot
	}{{true, 5, 5}, {false, 3, 5}, {false, 9, 9}, {true, 7, 9}, {true, 9, 9}, {false, 12, 12}, {true, 11, 12}}
	for i, s := range steps {
		if s.prepare {
			a.Prepare(core.Message{Ballot: s.ballot}, 0, 0)
		} else {
			a.Accept(core.Message{Ballot: s.ballot, Instance: 1, Value: val("x")}, 0)
		}
		if a.Promised() != s.want {
			t.Fatalf("step %d: promise %d, want %d", i, a.Promised(), s.want)
		}
	}
}
