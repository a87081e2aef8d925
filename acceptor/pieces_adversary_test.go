package acceptor_test

import (
	"reflect"
	"testing"

	"github.com/paxosd/paxosd/acceptor"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
)

// What may happen to an acceptor between two pieces of its Promise, and what
// the next piece must then say. The union of the pieces must be what one
// unbounded Promise said when the first piece left, or the continuation must
// be refused: a value accepted below the ballot in between must not appear
// (it is refused), a higher ballot must be reported as such, and an apply
// past the start must refuse (the proposer is behind).
func TestPiecesBetweenPieces(t *testing.T) {
	const b, start = idgen.Ballot(20), uint64(4)
	big := string(make([]byte, 100))
	held := []core.InstanceValue{iv(4, 10, big), iv(5, 10, big), iv(6, 12, big), iv(7, 12, big)}
	const bound = 250 // two values a piece
	first := func() (*acceptor.Acceptor, core.Message) {
		a := acceptor.New(10, held, maxAhead)
		p, _ := a.Prepare(core.Message{Type: core.MsgPrepare, Ballot: b, Instance: start}, start, bound)
		if p.Reject || p.End != 6 || len(p.Entries) != 2 {
			t.Fatalf("first piece: %v", p)
		}
		return a, p
	}
	next := func(a *acceptor.Acceptor, after, applied uint64) core.Message {
		p, changed := a.Prepare(core.Message{Type: core.MsgPrepare, Ballot: b, Instance: start, After: after}, applied, bound)
		if changed {
			t.Errorf("a continuation at the promised ballot changed the promise: %v", p)
		}
		return p
	}

	t.Run("nothing happens", func(t *testing.T) {
		a, p := first()
		q := next(a, p.End, start)
		if q.Reject || q.End != 0 || !reflect.DeepEqual(append(p.Entries, q.Entries...), held) {
			t.Fatalf("pieces %v + %v, want %v", p.Entries, q.Entries, held)
		}
		// A duplicate continuation says the same.
		if r := next(a, p.End, start); !reflect.DeepEqual(r, q) {
			t.Fatalf("duplicate continuation %v, first answer %v", r, q)
		}
	})
	t.Run("an Accept below the ballot", func(t *testing.T) {
		a, p := first()
		for _, i := range []uint64{5, 6, 8} { // in the sent range, the unsent one, past both
			if reply, rec, _ := a.Accept(core.Message{Type: core.MsgAccept, Ballot: b - 1, Instance: i, Value: val("late")}, start); !reply.Reject || rec != nil {
				t.Fatalf("instance %d: accepted below the promise between pieces: %v", i, reply)
			}
		}
		q := next(a, p.End, start)
		if !reflect.DeepEqual(append(p.Entries, q.Entries...), held) {
			t.Fatalf("pieces %v + %v, want %v", p.Entries, q.Entries, held)
		}
	})
	t.Run("a higher ballot", func(t *testing.T) {
		a, p := first()
		if reply, _, _ := a.Accept(core.Message{Type: core.MsgAccept, Ballot: b + 1, Instance: 6, Value: val("new")}, start); reply.Reject {
			t.Fatal(reply)
		}
		if q := next(a, p.End, start); !q.Reject || q.Promised != b+1 {
			t.Fatalf("continuation after a higher ballot: %v, want a refusal naming %d", q, b+1)
		}
	})
	t.Run("an apply past the start", func(t *testing.T) {
		a, p := first()
		a.Forget(start + 1)
		if q := next(a, p.End, start+1); !q.Reject {
			t.Fatalf("continuation after the acceptor applied past the start: %v, want a refusal", q)
		}
	})
	t.Run("a restart", func(t *testing.T) {
		_, p := first()
		a := acceptor.New(b, held, maxAhead) // the promise and the records were durable
		q := next(a, p.End, start)
		if q.Reject || !reflect.DeepEqual(append(p.Entries, q.Entries...), held) {
			t.Fatalf("after a restart: pieces %v + %v, want %v", p.Entries, q.Entries, held)
		}
	})
}
