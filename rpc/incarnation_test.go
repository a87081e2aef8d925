package rpc

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// sendRaw sends one batch on a new stream and returns how the receiver
// ended it.
func sendRaw(t *testing.T, addr string, b *paxosdpb.PeerBatch) (*paxosdpb.PeerSummary, error) {
	t.Helper()
	tr := NewTransport(TransportConfig{}, func(core.Message) {})
	defer tr.Close()
	conn, err := grpc.NewClient(addr, tr.dialOptions(0)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := paxosdpb.NewPeerClient(conn).Send(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(b); err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return stream.CloseAndRecv()
}

// The receiver remembers the first incarnation of a member (once, on disk),
// passes it and incarnation 0 ever after, and refuses any other with
// FAILED_PRECONDITION and an IncarnationRefused detail, delivering nothing.
// A follower, which does not vote, is not checked.
func TestIncarnationCheck(t *testing.T) {
	var mu sync.Mutex
	remembered := map[uint64][]uint64{}
	check := NewIncarnationCheck(map[uint64]uint64{3: 0x33}, func(id, inc uint64) error {
		mu.Lock()
		defer mu.Unlock()
		remembered[id] = append(remembered[id], inc)
		return nil
	})
	lis := listen(t)
	// Nodes 1 and 3 are members (never dialled here); node 9 is not.
	peers := map[uint64]string{1: "127.0.0.1:1", 2: lis.Addr().String(), 3: "127.0.0.1:3"}
	b := startNode(t, TransportConfig{ClusterID: 7, SelfID: 2, Peers: peers, CheckPeer: check}, lis)
	r := rand.New(rand.NewPCG(6, 6))
	batch := func(from, inc uint64, seq int) *paxosdpb.PeerBatch {
		return &paxosdpb.PeerBatch{ClusterId: 7, From: from, To: 2, Incarnation: inc, FromAddress: peers[from],
			Messages: [][]byte{core.AppendMessage(nil, testMessage(r, from, 2, seq, 20))}}
	}
	pass := func(what string, pb *paxosdpb.PeerBatch) {
		t.Helper()
		before := b.got.count()
		if sum, err := sendRaw(t, lis.Addr().String(), pb); err != nil || sum.GetReceived() != 1 {
			t.Fatalf("%s: %v, %v; want it delivered", what, sum, err)
		}
		if b.got.count() != before+1 {
			t.Fatalf("%s: not delivered", what)
		}
	}
	refused := func(what string, pb *paxosdpb.PeerBatch, known uint64) {
		t.Helper()
		before := b.got.count()
		_, err := sendRaw(t, lis.Addr().String(), pb)
		ie := incarnationRefused(err)
		if status.Code(err) != codes.FailedPrecondition || ie == nil ||
			*ie != (IncarnationError{Node: pb.From, Peer: 2, Known: known, Got: pb.Incarnation}) {
			t.Fatalf("%s: %v (detail %+v); want FAILED_PRECONDITION refusing incarnation %x", what, err, ie, pb.Incarnation)
		}
		if b.got.count() != before {
			t.Fatalf("%s: delivered %d messages", what, b.got.count()-before)
		}
	}
	pass("first sighting of node 1", batch(1, 0x11, 0))
	pass("node 1 again, same incarnation", batch(1, 0x11, 1))
	pass("node 1 from an older build (incarnation 0)", batch(1, 0, 2))
	refused("node 1 with another incarnation", batch(1, 0x12, 3), 0x11)
	pass("node 3, known before", batch(3, 0x33, 4))
	refused("node 3 with another incarnation", batch(3, 0x34, 5), 0x33)
	pass("node 9, a follower", batch(9, 0x99, 6))
	pass("node 9, a follower, on a new directory", batch(9, 0x98, 7))
	mu.Lock()
	if len(remembered) != 1 || !slices.Equal(remembered[1], []uint64{0x11}) {
		t.Errorf("remembered %v, want node 1's incarnation once", remembered)
	}
	mu.Unlock()
	if st := b.tr.Stats(); st.Rejected != 2 || !strings.Contains(st.LastRejection, "0000000000000034") {
		t.Errorf("receiver stats %+v", st)
	}
	if !logged(b.logs, "node 1", "0000000000000012", "0000000000000011", "restore node 1's own data directory") {
		t.Errorf("receiver did not log the refusal: %q", lines(b.logs))
	}
}

// A node whose incarnation a peer refuses is told: its transport calls
// Refused with the refusal and logs what happened and what to do.
func TestIncarnationRefusedSender(t *testing.T) {
	lis := listen(t)
	check := NewIncarnationCheck(map[uint64]uint64{1: 0xaaaa}, func(uint64, uint64) error { return nil })
	b := startNode(t, TransportConfig{ClusterID: 7, SelfID: 2, Peers: map[uint64]string{1: "127.0.0.1:1"}, CheckPeer: check}, lis)
	got := make(chan *IncarnationError, 1)
	a := startNode(t, TransportConfig{ClusterID: 7, SelfID: 1, SelfAddress: "127.0.0.1:1", Peers: map[uint64]string{2: lis.Addr().String()},
		Incarnation: 0xbbbb, Refused: func(e *IncarnationError) {
			select {
			case got <- e:
			default:
			}
		}}, nil)
	r := rand.New(rand.NewPCG(7, 7))
	deadline := time.Now().Add(10 * time.Second)
	var ie *IncarnationError
	for i := 0; ie == nil; i++ {
		a.tr.Send(testMessage(r, 1, 2, i, 10))
		select {
		case ie = <-got:
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("Refused not called; sender's log: %q", lines(a.logs))
		}
	}
	if *ie != (IncarnationError{Node: 1, Peer: 2, Known: 0xaaaa, Got: 0xbbbb}) {
		t.Fatalf("Refused(%+v)", ie)
	}
	want := "node 1's data directory was created anew (incarnation 000000000000bbbb) but peer 2 knew node 1 with incarnation 000000000000aaaa: " +
		"this directory lost the state node 1 voted with, and it must not vote with it"
	if !strings.Contains(ie.Error(), want) || !logged(a.logs, want, "keep node 1 stopped") {
		t.Fatalf("sender's log %q lacks %q", lines(a.logs), want)
	}
	if n := b.got.count(); n != 0 {
		t.Fatalf("the refusing node delivered %d messages", n)
	}
}

// An incarnation the configuration records is authoritative: a member
// added again on a new directory is accepted (and remembered so) although
// another one was seen first, and its old directory is refused; members
// with none recorded are trusted on first use as before.
func TestConfiguredIncarnation(t *testing.T) {
	remembered := map[uint64]uint64{}
	c := NewIncarnations(map[uint64]uint64{3: 0xaaaa}, func(id, inc uint64) error { remembered[id] = inc; return nil })
	if err := c.Check(3, 0xbbbb); err == nil {
		t.Fatal("another incarnation of a known peer passed with nothing configured")
	}
	c.SetConfigured(map[uint64]uint64{1: 0, 3: 0xbbbb})
	if err := c.Check(3, 0xbbbb); err != nil || remembered[3] != 0xbbbb {
		t.Fatalf("the configured incarnation: %v, remembered %x", err, remembered[3])
	}
	var ie *IncarnationError
	if err := c.Check(3, 0xaaaa); !errors.As(err, &ie) || ie.Known != 0xbbbb || ie.Got != 0xaaaa || !ie.Configured {
		t.Fatalf("the old directory: %v, want an IncarnationError naming the configured one", err)
	}
	if err := c.Check(1, 0x1111); err != nil || remembered[1] != 0x1111 {
		t.Fatalf("first use of a member with none configured: %v", err)
	}
	if err := c.Check(1, 0x2222); err == nil {
		t.Fatal("another incarnation of a member with none configured passed")
	}
}
