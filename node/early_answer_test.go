package node

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// earlyAnswers is how many appends the early-answer tests make: the window
// between an early answer and the end of its Ready's write is tens of
// microseconds, and a reader that does not wait for the write falls in it
// about once in a hundred appends here (6 of 500 measured on 2 cores).
const earlyAnswers = 2000

// earlyMaster starts a cluster of three and returns its master once an
// append through it succeeded.
func earlyMaster(t *testing.T, ctx context.Context) *Node {
	t.Helper()
	c := newCluster(t, nil)
	n := c.node(c.awaitMaster(0))
	for {
		if _, err := n.Append(ctx, [][]byte{[]byte("warm")}, 0, 0, nil); err == nil {
			return n
		}
		if ctx.Err() != nil {
			t.Fatal("no append succeeded through the master in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The answers of a Ready that need not sync go before its write
// (handleReady): a client may have its index before the master's store
// holds the entry. A linearizable read and a retry of the same (client,
// seq) issued at once must still see the append: both pass through the
// loop, which takes them only after the write. Fails when a linearizable
// read is served from the store without the loop (planted: Read ignoring
// linearizable).
func TestEarlyAnswerThenLinearizableReadAndRetry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	n := earlyMaster(t, ctx)
	const cid = 77
	for k := range earlyAnswers {
		v := fmt.Sprintf("v%d", k)
		r, err := n.Append(ctx, [][]byte{[]byte(v)}, cid, uint64(k+1), nil)
		if err != nil {
			t.Fatalf("append %d: %v", k, err)
		}
		ents, err := n.Read(ctx, r.First, 1, 0, true)
		if err != nil {
			t.Fatalf("linearizable read of %d: %v", r.First, err)
		}
		if len(ents) == 0 || ents[0].Index != r.First || string(ents[0].Data) != v {
			t.Fatalf("append %d answered index %d, then a linearizable read at the master got %+v: it misses an acknowledged entry", k, r.First, ents)
		}
		d, err := n.Append(ctx, [][]byte{[]byte(v)}, cid, uint64(k+1), nil)
		if err != nil {
			t.Fatalf("retry of append %d: %v", k, err)
		}
		if !d.Duplicate || d.First != r.First || d.Last != r.Last {
			t.Fatalf("append %d answered [%d, %d], its retry %+v: applied twice or answered otherwise", k, r.First, r.Last, d)
		}
	}
}

// A local read at the very node that answered an append, issued once the
// answer is in, misses the entry: the answer went before the Ready's
// write (b4b538b), and a local read reads the store without waiting.
// LOCAL reads "may be stale" (log.proto), so this is no linearizability
// violation, but before b4b538b the node that acknowledged an append
// always served it to a local read (0 misses in 3x500 with the answers
// after the write), and docs/protocol.md says only the other voters' local
// reads lag. EXPOSES the regression; the fix makes a local read wait for
// a write whose answers already went.
func TestLocalReadAtTheAnsweringNodeSeesTheAppend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	n := earlyMaster(t, ctx)
	misses := 0
	for k := range earlyAnswers {
		v := fmt.Sprintf("v%d", k)
		r, err := n.Append(ctx, [][]byte{[]byte(v)}, 0, 0, nil)
		if err != nil {
			t.Fatalf("append %d: %v", k, err)
		}
		ents, err := n.Read(ctx, r.First, 1, 0, false)
		if err != nil {
			t.Fatalf("local read of %d: %v", r.First, err)
		}
		if len(ents) == 0 || string(ents[0].Data) != v {
			if misses == 0 {
				t.Errorf("append %d answered index %d, then a local read at the same node got %+v", k, r.First, ents)
			}
			misses++
		}
	}
	if misses > 0 {
		t.Errorf("%d of %d local reads at the answering node missed the append just acknowledged", misses, earlyAnswers)
	}
}
