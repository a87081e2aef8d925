package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ---- helpers ----

// collector records what a transport delivers, as encodings.
type collector struct {
	mu  sync.Mutex
	got map[string]int
	n   int
}

func newCollector() *collector { return &collector{got: map[string]int{}} }

func (c *collector) deliver(m core.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[string(core.AppendMessage(nil, m))]++
	c.n++
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *collector) has(enc []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[string(enc)] > 0
}

// linkLog records a transport's OnLink calls, as "up 2" or "down 2".
type linkLog struct {
	mu    sync.Mutex
	links []string
}

func (l *linkLog) onLink(peer uint64, _ string, up bool, _ error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.links = append(l.links, fmt.Sprintf("%s %d", map[bool]string{true: "up", false: "down"}[up], peer))
}

// logged reports whether a record of rec has every one of subs in its
// message or attribute values.
func logged(rec *event.Recorder, subs ...string) bool {
next:
	for _, r := range rec.All() {
		line := r.Message
		for _, v := range r.Attrs {
			line += " " + v.String()
		}
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		return true
	}
	return false
}

// lines returns rec's records, for failure messages.
func lines(rec *event.Recorder) []event.Record { return rec.All() }

func (l *linkLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.links)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return lis
}

// deadAddr returns a loopback address nobody listens on (for now).
func deadAddr(t *testing.T) string {
	lis := listen(t)
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// testNode is a transport served by its own grpc.Server on lis.
type testNode struct {
	id    uint64
	tr    *Transport
	got   *collector
	logs  *event.Recorder
	links *linkLog
	stop  func() // closes the transport, stops the server; idempotent
}

func startNode(t *testing.T, cfg TransportConfig, lis net.Listener) *testNode {
	t.Helper()
	n := &testNode{id: cfg.SelfID, got: newCollector(), logs: event.NewRecorder(), links: &linkLog{}}
	cfg.Logger, cfg.OnLink = slog.New(n.logs), n.links.onLink
	n.tr = NewTransport(cfg, n.got.deliver)
	var srv *grpc.Server
	served := make(chan struct{})
	if lis != nil {
		srv = grpc.NewServer(n.tr.ServerOptions()...)
		n.tr.Register(srv)
		go func() {
			defer close(served)
			srv.Serve(lis)
		}()
	} else {
		close(served)
	}
	var once sync.Once
	n.stop = func() {
		once.Do(func() {
			if err := n.tr.Close(); err != nil {
				t.Errorf("node %d: Close: %v", n.id, err)
			}
			if srv != nil {
				srv.Stop()
			}
			<-served
		})
	}
	t.Cleanup(n.stop)
	return n
}

// cluster starts n nodes of cluster 7 that all know each other.
func cluster(t *testing.T, n int, tweak func(*TransportConfig)) []*testNode {
	t.Helper()
	lis := make([]net.Listener, n)
	peers := map[uint64]string{}
	for i := range lis {
		lis[i] = listen(t)
		peers[uint64(i+1)] = lis[i].Addr().String()
	}
	nodes := make([]*testNode, n)
	for i := range nodes {
		cfg := TransportConfig{ClusterID: 7, SelfID: uint64(i + 1), Peers: peers}
		if tweak != nil {
			tweak(&cfg)
		}
		nodes[i] = startNode(t, cfg, lis[i])
	}
	return nodes
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testMessage builds a varied message from -> to; seq makes it unique. Its
// value carries valueBytes of payload unless seq%3 == 2 (a Commit).
func testMessage(r *rand.Rand, from, to uint64, seq int, valueBytes int) core.Message {
	entry := make([]byte, valueBytes)
	for i := range entry {
		entry[i] = byte(r.Uint32())
	}
	m := core.Message{From: from, To: to, Ballot: idgen.Ballot(r.Uint64N(1 << 40)), Instance: uint64(seq), Committed: r.Uint64()}
	switch seq % 3 {
	case 0:
		m.Type = core.MsgAccept
		m.Value = core.Value{Commands: []core.Command{{Kind: core.CmdUser, Entries: [][]byte{entry}, ClientID: r.Uint64(), Seq: uint64(seq)}}}
	case 1:
		m.Type = core.MsgPromise
		m.Reject = seq%2 == 0
		m.Promised = idgen.Ballot(seq)
		m.Entries = []core.InstanceValue{{Instance: uint64(seq), Ballot: 3, Value: core.Value{Commands: []core.Command{{Kind: core.CmdNoop}, {Kind: core.CmdUser, Entries: [][]byte{entry, nil}}}}}}
	default:
		m.Type = core.MsgCommit
		m.End = uint64(seq) + 10
	}
	return m
}

// ---- transport ----

// Every message sent on every link arrives intact, in both directions, with
// two and three nodes; nothing is dropped while no queue overflows.
func TestExchange(t *testing.T) {
	for _, size := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d-nodes", size), func(t *testing.T) {
			const perLink = 3000
			nodes := cluster(t, size, nil)
			want := make([]map[string]int, size) // by receiver
			for i := range want {
				want[i] = map[string]int{}
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			for i, from := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(i), 1))
					for seq := range perLink {
						for j, to := range nodes {
							if j == i {
								continue
							}
							m := testMessage(r, from.id, to.id, seq, r.IntN(300))
							enc := core.AppendMessage(nil, m)
							mu.Lock()
							want[j][string(enc)]++
							mu.Unlock()
							from.tr.Send(m)
						}
					}
				}()
			}
			wg.Wait()
			total := perLink * (size - 1)
			for i, n := range nodes {
				waitFor(t, 30*time.Second, fmt.Sprintf("node %d to receive %d messages", n.id, total), func() bool { return n.got.count() >= total })
				time.Sleep(50 * time.Millisecond) // let any excess arrive
				if got := n.got.count(); got != total {
					t.Errorf("node %d received %d messages, want %d", n.id, got, total)
				}
				n.got.mu.Lock()
				for enc, c := range want[i] {
					if n.got.got[enc] != c {
						t.Errorf("node %d: message received %d times, sent %d times", n.id, n.got.got[enc], c)
						break
					}
				}
				n.got.mu.Unlock()
			}
			for _, n := range nodes {
				st := n.tr.Stats()
				if st.Corrupt != 0 || st.Rejected != 0 || st.Unroutable != 0 || st.Received != uint64(total) {
					t.Errorf("node %d stats: %+v", n.id, st)
				}
				for id, ps := range st.Peers {
					if ps.Dropped != 0 || ps.Sent != perLink || ps.Received != perLink || !ps.Connected || ps.Batches == 0 || ps.Batches > perLink {
						t.Errorf("node %d, peer %d: %+v", n.id, id, ps)
					}
				}
			}
			t.Logf("node 1 stats: %+v", nodes[0].tr.Stats())
		})
	}
}

// A peer that is down at first is reached once it comes up: the sender
// reconnects with backoff, and messages sent after that arrive.
func TestPeerComesUpLater(t *testing.T) {
	addrB := deadAddr(t)
	a := startNode(t, TransportConfig{ClusterID: 7, SelfID: 1, Peers: map[uint64]string{2: addrB}}, listen(t))
	r := rand.New(rand.NewPCG(2, 2))

	// While B is down: sends are dropped, the link says why.
	for i := range 50 {
		a.tr.Send(testMessage(r, 1, 2, i, 10))
	}
	waitFor(t, 5*time.Second, "a failed connection attempt", func() bool {
		ps := a.tr.Stats().Peers[2]
		return ps.LastError != "" && ps.Dropped > 0 && !ps.Connected
	})
	time.Sleep(300 * time.Millisecond) // a few more failures: the backoff grows

	lis, err := net.Listen("tcp", addrB)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addrB, err)
	}
	b := startNode(t, TransportConfig{ClusterID: 7, SelfID: 2, Peers: map[uint64]string{1: a.tr.cfg.Peers[1]}}, lis)

	// Probe until the link is up (the stream opens lazily).
	probe := 1000
	waitFor(t, 15*time.Second, "the link to come up", func() bool {
		a.tr.Send(testMessage(r, 1, 2, probe, 10))
		probe++
		return a.tr.Stats().Peers[2].Connected && b.got.count() > 0
	})
	before := b.got.count()
	var sent [][]byte
	for i := range 500 {
		m := testMessage(r, 1, 2, 10000+i, 100)
		sent = append(sent, core.AppendMessage(nil, m))
		a.tr.Send(m)
	}
	waitFor(t, 10*time.Second, "500 messages after reconnect", func() bool { return b.got.count() >= before+500 })
	for _, enc := range sent {
		if !b.got.has(enc) {
			t.Fatalf("a message sent after the peer came up was lost")
		}
	}
	// OnLink: down (the first failure), then up once, however many
	// attempts failed in between.
	if got := a.links.get(); !slices.Equal(got, []string{"down 2", "up 2"}) {
		t.Errorf("OnLink calls %q, want down 2, up 2", got)
	}
}

// A node that comes back after a long outage is redialled as soon as it
// sends a batch, not when the backoff runs out. With the backoff stretched
// to an hour, only that wake-up can bring the link back within the test.
func TestRestartedPeerIsRedialledAtOnce(t *testing.T) {
	oldMin, oldMax := minBackoff, maxBackoff
	minBackoff, maxBackoff = time.Hour, time.Hour
	t.Cleanup(func() { minBackoff, maxBackoff = oldMin, oldMax })

	lisA, addrB := listen(t), deadAddr(t)
	peers := map[uint64]string{1: lisA.Addr().String(), 2: addrB}
	a := startNode(t, TransportConfig{ClusterID: 7, SelfID: 1, Peers: peers}, lisA)
	r := rand.New(rand.NewPCG(3, 3))
	a.tr.Send(testMessage(r, 1, 2, 0, 10))
	waitFor(t, 5*time.Second, "a failed connection attempt", func() bool {
		ps := a.tr.Stats().Peers[2]
		return ps.LastError != "" && !ps.Connected
	})

	lisB, err := net.Listen("tcp", addrB)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addrB, err)
	}
	b := startNode(t, TransportConfig{ClusterID: 7, SelfID: 2, Peers: peers}, lisB)
	seq := 1
	waitFor(t, 30*time.Second, "node 1 to reach node 2 again", func() bool {
		b.tr.Send(testMessage(r, 2, 1, seq, 10)) // node 2 is back and says so
		a.tr.Send(testMessage(r, 1, 2, seq, 10))
		seq++
		return b.got.count() > 0
	})
}

// A batch of another cluster, or addressed to another node, is rejected:
// nothing is delivered, the receiver counts it, and both sides say why.
func TestRejectWrongClusterOrNode(t *testing.T) {
	lisB := listen(t)
	b := startNode(t, TransportConfig{ClusterID: 2, SelfID: 2, Peers: map[uint64]string{}}, lisB)
	var rejMu sync.Mutex
	var rejections []PeerRejection
	rejected := func(rj PeerRejection) {
		rejMu.Lock()
		defer rejMu.Unlock()
		rejections = append(rejections, rj)
	}
	// rejectedBy says whether Rejected reported kind from peer, with a
	// message that contains want.
	rejectedBy := func(peer uint64, kind, want string) bool {
		rejMu.Lock()
		defer rejMu.Unlock()
		for _, rj := range rejections {
			if rj.Peer == peer && rj.Kind == kind && strings.Contains(rj.Message, want) && !strings.Contains(rj.Message, "stream ended") {
				return true
			}
		}
		return false
	}
	a := startNode(t, TransportConfig{ClusterID: 1, SelfID: 1, Peers: map[uint64]string{2: lisB.Addr().String()}, Rejected: rejected}, nil)
	r := rand.New(rand.NewPCG(3, 3))
	for i := range 100 {
		a.tr.Send(testMessage(r, 1, 2, i, 10))
	}
	waitFor(t, 5*time.Second, "the sender to see the rejection", func() bool {
		e := a.tr.Stats().Peers[2].LastError
		return strings.Contains(e, "FailedPrecondition") && strings.Contains(e, "cluster 1") && strings.Contains(e, "cluster 2")
	})
	st := b.tr.Stats()
	if st.Rejected == 0 || !strings.Contains(st.LastRejection, "cluster 1") || !strings.Contains(st.LastRejection, "cluster 2") {
		t.Errorf("receiver stats do not show the rejection: %+v", st)
	}
	if !logged(b.logs, "cluster 1", "cluster 2") {
		t.Errorf("receiver did not log the rejection: %q", lines(b.logs))
	}
	if !logged(a.logs, event.PeerLinkError, "cluster 1", "cluster 2") {
		t.Errorf("sender did not log the rejection: %q", lines(a.logs))
	}
	if a.tr.Stats().Peers[2].Connected {
		t.Errorf("a rejected link shows as connected")
	}
	waitFor(t, 5*time.Second, "Rejected to report the wrong cluster", func() bool {
		return rejectedBy(2, RejectWrongCluster, "this node (2) is in cluster 2")
	})

	// Same cluster, but the address belongs to node 2 while the sender
	// believes it is node 3.
	c := startNode(t, TransportConfig{ClusterID: 2, SelfID: 1, Peers: map[uint64]string{3: lisB.Addr().String()}, Rejected: rejected}, nil)
	for i := range 100 {
		c.tr.Send(testMessage(r, 1, 3, i, 10))
	}
	waitFor(t, 5*time.Second, "the wrong-node rejection", func() bool {
		e := c.tr.Stats().Peers[3].LastError
		return strings.Contains(e, "addressed to node 3") && strings.Contains(e, "this is node 2")
	})
	waitFor(t, 5*time.Second, "Rejected to report the wrong node", func() bool {
		return rejectedBy(3, RejectWrongNode, "this is node 2")
	})
	if n := b.got.count(); n != 0 {
		t.Fatalf("delivered %d messages from a wrong cluster or for a wrong node", n)
	}
	// A peer that is down is not a rejection: it may come back.
	d := startNode(t, TransportConfig{ClusterID: 2, SelfID: 1, Peers: map[uint64]string{4: deadAddr(t)}, Rejected: rejected}, nil)
	d.tr.Send(testMessage(r, 1, 4, 0, 10))
	waitFor(t, 5*time.Second, "the link to a closed port to fail", func() bool { return d.tr.Stats().Peers[4].LastError != "" })
	rejMu.Lock()
	for _, rj := range rejections {
		if rj.Peer == 4 {
			t.Errorf("a peer that is down was reported as a rejection: %+v", rj)
		}
	}
	rejMu.Unlock()
	if st := b.tr.Stats(); st.Received != 0 || st.Rejected < 2 {
		t.Errorf("receiver stats: %+v", st)
	}
}

// Oversized messages are refused by the sender (dropped and counted), and
// the receiver's limit holds against a sender with a larger one.
func TestOversized(t *testing.T) {
	const small = 64 << 10
	lisB := listen(t)
	b := startNode(t, TransportConfig{ClusterID: 7, SelfID: 2, MaxMessageBytes: small}, lisB)
	r := rand.New(rand.NewPCG(4, 4))

	// Sender side: a message over the sender's own limit never leaves.
	a := startNode(t, TransportConfig{ClusterID: 7, SelfID: 1, MaxMessageBytes: small, Peers: map[uint64]string{2: lisB.Addr().String()}}, nil)
	start := time.Now()
	a.tr.Send(testMessage(r, 1, 2, 0, small+1))
	if d := time.Since(start); d > time.Second {
		t.Errorf("Send of an oversized message took %v", d)
	}
	if ps := a.tr.Stats().Peers[2]; ps.Oversized != 1 || ps.Dropped != 1 || ps.Sent != 0 {
		t.Errorf("oversized message not refused on send: %+v", ps)
	}
	ok := testMessage(r, 1, 2, 1, 100)
	a.tr.Send(ok)
	waitFor(t, 5*time.Second, "a normal message after the oversized one", func() bool { return b.got.has(core.AppendMessage(nil, ok)) })
	if n := b.got.count(); n != 1 {
		t.Fatalf("receiver got %d messages, want just the normal one", n)
	}

	// Receiver side, gRPC limit: a sender allowing 1 MiB sends 200 KiB to a
	// receiver that allows 64 KiB (+ headroom): the receiver refuses it.
	big := startNode(t, TransportConfig{ClusterID: 7, SelfID: 3, MaxMessageBytes: 1 << 20, Peers: map[uint64]string{2: lisB.Addr().String()}}, nil)
	large := testMessage(r, 3, 2, 3, 200<<10)
	if n := len(core.AppendMessage(nil, large)); n <= small+grpcHeadroom {
		t.Fatalf("test bug: the large message (%d bytes) is within the receiver's limit", n)
	}
	big.tr.Send(large)
	waitFor(t, 5*time.Second, "the receiver to refuse the large batch", func() bool {
		e := big.tr.Stats().Peers[2].LastError
		return strings.Contains(e, "ResourceExhausted")
	})
	if n := b.got.count(); n != 1 {
		t.Fatalf("receiver delivered %d messages, want 1: the large one went through", n)
	}
	// The link recovers for messages within the limit.
	ok = testMessage(r, 3, 2, 4, 100)
	waitFor(t, 10*time.Second, "a small message after the refused one", func() bool {
		big.tr.Send(ok)
		return b.got.has(core.AppendMessage(nil, ok))
	})

	// Receiver side, per message: under the gRPC limit (thanks to the
	// headroom) but over MaxMessageBytes: dropped and counted, the rest of
	// the batch delivered.
	huge := core.AppendMessage(nil, testMessage(r, 4, 2, 6, small+10))
	fine := core.AppendMessage(nil, testMessage(r, 4, 2, 7, 10))
	if len(huge) <= small || len(huge) >= small+grpcHeadroom/2 {
		t.Fatalf("test bug: message of %d bytes is not between the two limits", len(huge))
	}
	sum := rawSend(t, lisB.Addr().String(), &paxosdpb.PeerBatch{ClusterId: 7, From: 4, To: 2, Messages: [][]byte{huge, fine}})
	if sum.GetReceived() != 1 || sum.GetDropped() != 1 || !b.got.has(fine) || b.got.has(huge) {
		t.Errorf("per-message limit not enforced: summary %v", sum)
	}
}

// rawSend sends one batch on a fresh stream and closes it cleanly.
func rawSend(t *testing.T, addr string, b *paxosdpb.PeerBatch) *paxosdpb.PeerSummary {
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
	if err := stream.Send(b); err != nil {
		t.Fatal(err)
	}
	sum, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("CloseAndRecv: %v", err)
	}
	return sum
}

// Messages that do not decode or do not match their batch are dropped and
// counted; the valid ones of the same batch are delivered.
func TestReceiveValidation(t *testing.T) {
	lis := listen(t)
	b := startNode(t, TransportConfig{ClusterID: 7, SelfID: 2}, lis)
	r := rand.New(rand.NewPCG(5, 5))
	valid := core.AppendMessage(nil, testMessage(r, 1, 2, 0, 20))
	truncated := valid[:len(valid)-3]
	otherTo := core.AppendMessage(nil, testMessage(r, 1, 3, 1, 20))
	otherFrom := core.AppendMessage(nil, testMessage(r, 9, 2, 2, 20))
	sum := rawSend(t, lis.Addr().String(), &paxosdpb.PeerBatch{ClusterId: 7, From: 1, To: 2,
		Messages: [][]byte{[]byte("garbage"), nil, truncated, otherTo, otherFrom, valid}})
	if sum.GetReceived() != 1 || sum.GetDropped() != 5 {
		t.Errorf("summary %v, want 1 received and 5 dropped", sum)
	}
	if b.got.count() != 1 || !b.got.has(valid) {
		t.Errorf("delivered %d messages, want only the valid one", b.got.count())
	}
	if st := b.tr.Stats(); st.Corrupt != 5 || st.Received != 1 || st.Peers[1].Received != 1 {
		t.Errorf("stats %+v", st)
	}
}

// Send to a dead peer never blocks: 100k messages return at once, the
// overflow is dropped and counted, and every message is accounted for.
func TestQueueOverflow(t *testing.T) {
	a := startNode(t, TransportConfig{ClusterID: 7, SelfID: 1, Peers: map[uint64]string{2: deadAddr(t), 3: deadAddr(t)}}, nil)
	m := testMessage(rand.New(rand.NewPCG(6, 6)), 1, 2, 0, 50)
	const n = 100_000
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			a.tr.Send(m)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%d Sends to a dead peer still blocked after 10s", n)
	}
	elapsed := time.Since(start)
	if elapsed > 5*time.Second {
		t.Errorf("%d Sends to a dead peer took %v", n, elapsed)
	}
	st := a.tr.Stats().Peers[2]
	if st.Dropped < n-DefaultQueueLen-1 {
		t.Errorf("dropped %d of %d right after sending, want at least %d", st.Dropped, n, n-DefaultQueueLen-1)
	}
	waitFor(t, 15*time.Second, "every message to be accounted for", func() bool {
		return a.tr.Stats().Peers[2].Dropped == n
	})
	if ps := a.tr.Stats().Peers[2]; ps.Sent != 0 || ps.Connected || ps.LastError == "" {
		t.Errorf("peer stats %+v", ps)
	}
	if ps := a.tr.Stats().Peers[3]; ps.Dropped != 0 || ps.LastError != "" {
		t.Errorf("untouched peer 3 has stats %+v", ps)
	}
	if full := a.logs.Find(event.PeerQueueFull); len(full) != 1 || full[0].Attrs[event.KeyPeer].Uint64() != 2 ||
		full[0].Attrs[event.KeyNode].Uint64() != 1 {
		t.Errorf("logged %+v for the full queue, want one %q for peer 2 from node 1", full, event.PeerQueueFull)
	}
	// Unroutable: unknown peer, self, wrong From.
	a.tr.Send(testMessage(rand.New(rand.NewPCG(1, 1)), 1, 99, 0, 1))
	a.tr.Send(testMessage(rand.New(rand.NewPCG(1, 1)), 1, 1, 0, 1))
	a.tr.Send(testMessage(rand.New(rand.NewPCG(1, 1)), 5, 2, 0, 1))
	if u := a.tr.Stats().Unroutable; u != 3 {
		t.Errorf("unroutable = %d, want 3", u)
	}
	t.Logf("%d Sends in %v", n, elapsed)
}

// Close ends every goroutine of the transport, including the handlers of
// incoming streams while the grpc.Server keeps running; Send after Close
// does nothing and deliver is not called again.
func TestClose(t *testing.T) {
	nodes := cluster(t, 3, nil)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 300 {
		for _, from := range nodes {
			for _, to := range nodes {
				if from != to {
					from.tr.Send(testMessage(r, from.id, to.id, i, 50))
				}
			}
		}
	}
	for _, n := range nodes {
		waitFor(t, 10*time.Second, "traffic", func() bool { return n.got.count() == 600 })
	}

	// Close node 3's transport but keep its server: the peers' streams to it
	// end with Unavailable, and it delivers nothing more.
	if err := nodes[2].tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := nodes[2].tr.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	nodes[2].tr.Send(testMessage(r, 3, 1, 0, 10)) // no-op, no panic
	delivered := nodes[2].got.count()
	for i := range 50 {
		nodes[0].tr.Send(testMessage(r, 1, 3, 1000+i, 10))
	}
	waitFor(t, 5*time.Second, "the closed peer to end the stream", func() bool {
		return strings.Contains(nodes[0].tr.Stats().Peers[3].LastError, "transport closed")
	})
	if n := nodes[2].got.count(); n != delivered {
		t.Errorf("closed transport delivered %d more messages", n-delivered)
	}

	// Once Close has returned, no goroutine of the transport is left, even
	// though the servers still run: no waiting for them to wind down.
	for _, n := range nodes {
		if err := n.tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if g := transportGoroutines(); g != "" {
		t.Fatalf("transport goroutines running after Close returned:\n%s", g)
	}
	for _, n := range nodes {
		n.stop()
	}
	if err := goleak.Find(); err != nil {
		t.Fatalf("goroutines left after Close: %v", err)
	}
}

// transportGoroutines returns the stacks of the goroutines running code of
// this package's Transport ("" if none).
func transportGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "paxosd/rpc.(*Transport)") || strings.Contains(g, "paxosd/rpc.(*peerStream)") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// ---- errors ----

// errService answers every Append with the error selected by client_id.
type errService struct {
	paxosdpb.UnimplementedLogServiceServer
	errs []error
}

func (s *errService) Append(_ context.Context, req *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error) {
	return nil, s.errs[req.GetClientId()]
}

func TestErrorsRoundTrip(t *testing.T) {
	errs := []error{
		api.NotMasterError(3, "127.0.0.1:7003"),
		api.NotMasterError(0, ""),
		api.TrimmedError(42),
		api.InvalidArgument("entries[3]", "1048577 bytes, over the 1048576-byte limit"),
		api.ExpectedIndexError(5, 9),
		api.Overloaded("proposal queue full", 250*time.Millisecond),
		api.Overloaded("too many tails", 0),
		status.Error(codes.Internal, "plain"),
	}
	lis := listen(t)
	srv := grpc.NewServer()
	paxosdpb.RegisterLogServiceServer(srv, &errService{errs: errs})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(transportCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := paxosdpb.NewLogServiceClient(conn)
	got := make([]error, len(errs))
	for i := range errs {
		_, got[i] = c.Append(context.Background(), &paxosdpb.AppendRequest{ClientId: uint64(i)})
		if got[i] == nil {
			t.Fatalf("call %d: no error", i)
		}
		// Wrapping must not hide the status.
		got[i] = fmt.Errorf("append: %w", got[i])
	}

	wantCodes := []codes.Code{codes.FailedPrecondition, codes.Unavailable, codes.OutOfRange, codes.InvalidArgument, codes.Aborted, codes.ResourceExhausted, codes.ResourceExhausted, codes.Internal}
	for i, err := range got {
		if c := status.Code(errors.Unwrap(err)); c != wantCodes[i] {
			t.Errorf("error %d: code %v, want %v", i, c, wantCodes[i])
		}
	}
	if id, addr, ok := api.AsNotMaster(got[0]); !ok || id != 3 || addr != "127.0.0.1:7003" {
		t.Errorf("api.AsNotMaster(known master) = %d, %q, %v", id, addr, ok)
	}
	if id, addr, ok := api.AsNotMaster(got[1]); !ok || id != 0 || addr != "" {
		t.Errorf("api.AsNotMaster(no master) = %d, %q, %v", id, addr, ok)
	}
	if first, ok := api.AsTrimmed(got[2]); !ok || first != 42 {
		t.Errorf("api.AsTrimmed = %d, %v", first, ok)
	}
	if field, desc, ok := api.AsInvalidArgument(got[3]); !ok || field != "entries[3]" || !strings.Contains(desc, "over the") {
		t.Errorf("api.AsInvalidArgument = %q, %q, %v", field, desc, ok)
	}
	if !strings.Contains(got[3].Error(), "entries[3]") {
		t.Errorf("api.InvalidArgument message does not name the field: %v", got[3])
	}
	if end, ok := api.AsExpectedIndex(got[4]); !ok || end != 9 {
		t.Errorf("api.AsExpectedIndex = %d, %v", end, ok)
	}
	if d, ok := api.AsOverloaded(got[5]); !ok || d != 250*time.Millisecond {
		t.Errorf("api.AsOverloaded = %v, %v", d, ok)
	}
	if d, ok := api.AsOverloaded(got[6]); !ok || d != 0 {
		t.Errorf("api.AsOverloaded(no delay) = %v, %v", d, ok)
	}

	// Each parser says no to everything else.
	others := append(got[:0:0], got...)
	others = append(others, nil, errors.New("not a status"), context.Canceled)
	for i, err := range others {
		if _, _, ok := api.AsNotMaster(err); ok && i > 1 {
			t.Errorf("api.AsNotMaster(%v) = ok", err)
		}
		if _, ok := api.AsTrimmed(err); ok && i != 2 {
			t.Errorf("api.AsTrimmed(%v) = ok", err)
		}
		if _, _, ok := api.AsInvalidArgument(err); ok && i != 3 {
			t.Errorf("api.AsInvalidArgument(%v) = ok", err)
		}
		if _, ok := api.AsExpectedIndex(err); ok && i != 4 {
			t.Errorf("api.AsExpectedIndex(%v) = ok", err)
		}
		if _, ok := api.AsOverloaded(err); ok && i != 5 && i != 6 {
			t.Errorf("api.AsOverloaded(%v) = ok", err)
		}
	}
	// A detail under the wrong code is not taken for the error.
	forged, _ := status.New(codes.Internal, "x").WithDetails(&paxosdpb.Trimmed{FirstIndex: 1})
	if _, ok := api.AsTrimmed(forged.Err()); ok {
		t.Errorf("api.AsTrimmed accepted a Trimmed detail under code Internal")
	}
}

// The batch builder respects the payload bound and keeps what does not fit.
func TestFillBounds(t *testing.T) {
	tr := &Transport{cfg: TransportConfig{ClusterID: 7, SelfID: 1, MaxMessageBytes: 1000}}
	q := make(chan []byte, 10)
	for range 5 {
		q <- bytes.Repeat([]byte{1}, 300)
	}
	var carry []byte
	b, n := tr.fill(2, bytes.Repeat([]byte{1}, 300), q, &carry)
	if n != 3 || len(b.Messages) != 3 || carry == nil || b.To != 2 || b.From != 1 || b.ClusterId != 7 {
		t.Fatalf("fill: n=%d carry=%v batch to=%d from=%d cluster=%d", n, carry != nil, b.To, b.From, b.ClusterId)
	}
	if size := batchHeaderBytes + 3*fieldSize(b.Messages[0]); size > 1000 {
		t.Errorf("batch payload %d over the bound", size)
	}
	if len(q) != 2 {
		t.Errorf("queue holds %d, want 2", len(q))
	}
}

func TestBackoffDelay(t *testing.T) {
	for f := range 20 {
		d := backoffDelay(f)
		if d < minBackoff/2 || d > maxBackoff {
			t.Fatalf("backoffDelay(%d) = %v, outside [%v, %v]", f, d, minBackoff/2, maxBackoff)
		}
	}
	if d := backoffDelay(0); d >= minBackoff {
		t.Errorf("first delay %v, want below %v", d, minBackoff)
	}
	if d := backoffDelay(10); d < maxBackoff/2 {
		t.Errorf("delay after 10 failures %v, want at least %v", d, maxBackoff/2)
	}
}

// SetMembers adds a link to a member added later, checks the new voters'
// batches, and drops the link to a member removed: Send to it is then
// unroutable.
func TestSetMembers(t *testing.T) {
	l1, l3 := listen(t), listen(t)
	a1, a3 := l1.Addr().String(), l3.Addr().String()
	var checked sync.Map
	check := func(id, inc uint64) error { checked.Store(id, inc); return nil }
	n1 := startNode(t, TransportConfig{ClusterID: 7, SelfID: 1, Peers: map[uint64]string{1: a1}, CheckPeer: check}, l1)
	n3 := startNode(t, TransportConfig{ClusterID: 7, SelfID: 3, Peers: map[uint64]string{1: a1}, SelfAddress: a3, Incarnation: 0x33}, l3)
	msg := func(from, to uint64, k int) core.Message {
		return core.Message{Type: core.MsgProbe, From: from, To: to, Instance: uint64(k)}
	}
	// Node 3 is not a member yet: node 1 cannot reach it.
	n1.tr.Send(msg(1, 3, 1))
	if n1.tr.Stats().Unroutable != 1 {
		t.Fatal("a message to a node outside the membership was not unroutable")
	}
	n1.tr.SetMembers(map[uint64]string{1: a1, 3: a3}, map[uint64]bool{1: true, 3: true})
	n3.tr.SetMembers(map[uint64]string{1: a1, 3: a3}, map[uint64]bool{1: true, 3: true})
	n1.tr.Send(msg(1, 3, 2))
	waitFor(t, 5*time.Second, "node 3 to get node 1's message", func() bool { return n3.got.count() == 1 })
	n3.tr.Send(msg(3, 1, 3))
	waitFor(t, 5*time.Second, "node 1 to get node 3's message", func() bool { return n1.got.count() == 1 })
	if inc, ok := checked.Load(uint64(3)); !ok || inc.(uint64) != 0x33 {
		t.Fatalf("node 3, now a voter, was not checked: %v", inc)
	}
	n1.tr.SetMembers(map[uint64]string{1: a1}, map[uint64]bool{1: true})
	n1.tr.Send(msg(1, 3, 4))
	if st := n1.tr.Stats(); st.Unroutable != 2 || st.Peers[3].Address != "" {
		t.Fatalf("after node 3's removal: unroutable %d, peers %v", st.Unroutable, st.Peers)
	}
}
