package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/client"
)

// loseReplies is a server interceptor that loses one Append reply in
// twenty after the append was applied, as a broken connection would: the
// client sees Unavailable and must retry.
func loseReplies() grpc.ServerOption {
	var n atomic.Int64
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if err == nil && strings.HasSuffix(info.FullMethod, "/Append") && n.Add(1)%20 == 0 {
			return nil, status.Error(codes.Unavailable, "test: reply lost")
		}
		return resp, err
	})
}

// breakStreams is a server interceptor that breaks one append stream
// answer in every: the node fails to send it (a broken connection), the
// stream ends with its other appends in flight, and the client must send
// them again on a new stream. It counts the streams it broke.
func breakStreams(every int64, broken *atomic.Int64) grpc.ServerOption {
	var n atomic.Int64
	return grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !strings.HasSuffix(info.FullMethod, "/AppendStream") {
			return h(srv, ss)
		}
		return h(srv, &failingSend{ServerStream: ss, fail: func() bool {
			if n.Add(1)%every == 0 {
				broken.Add(1)
				return true
			}
			return false
		}})
	})
}

type failingSend struct {
	grpc.ServerStream
	fail func() bool
}

func (f *failingSend) SendMsg(m any) error {
	if f.fail() {
		return errors.New("test: connection lost")
	}
	return f.ServerStream.SendMsg(m)
}

// One Client appends from 16 goroutines (each with a client ID of its own) over its stream, first through a
// node that is not the master (it forwards), while streams keep breaking
// with appends in flight: every append is acknowledged and is in the log
// exactly once, and the dedup table answered the appends sent again.
func TestStreamBrokenMidFlightExactlyOnce(t *testing.T) {
	var broken atomic.Int64
	c := newTestCluster(t, 3, breakStreams(25, &broken))
	m := c.master(t)
	eps := []string{c.addrs[(m+1)%3], c.addrs[(m+2)%3], c.addrs[m]}
	cl := newClient(t, eps, client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	const workers, each = 16, 20
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				// Each worker numbers its own appends (one Client's
				// 16 outstanding seqs would overtake a retried one by
				// more than the dedup window: ErrStaleSeq).
				if _, err := cl.AppendSeq(context.Background(), uint64(1000+w), uint64(j+1), []byte(fmt.Sprintf("w%d-%d", w, j))); err != nil {
					t.Errorf("w%d-%d: %v", w, j, err)
				}
			}
		}()
	}
	wg.Wait()
	got := map[string]int{}
	for _, v := range readAll(t, c, m) {
		got[v]++
	}
	for w := 0; w < workers; w++ {
		for j := 0; j < each; j++ {
			if v := fmt.Sprintf("w%d-%d", w, j); got[v] != 1 {
				t.Errorf("%s is in the log %d times", v, got[v])
			}
		}
	}
	if len(got) != workers*each {
		t.Errorf("%d distinct values in the log, want %d", len(got), workers*each)
	}
	st, err := c.servers[m].Node().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d streams broken, %d dedup hits", broken.Load(), st.DedupHits)
	if broken.Load() == 0 || st.DedupHits == 0 {
		t.Fatal("no stream broke with an applied append in flight: the test did not exercise the retry")
	}
}

// While 4 clients append with retries, the master is stopped and restarted
// twice, one peer link is cut, and some replies are lost: no loss, no
// duplicate, no phantom, and the dedup table answered the retries.
func TestExactlyOnceThroughMasterChanges(t *testing.T) {
	var broken atomic.Int64
	c := newTestCluster(t, 3, loseReplies(), breakStreams(40, &broken))
	c.master(t)
	var (
		mu   sync.Mutex
		hist checker.History
		wg   sync.WaitGroup
		base = time.Now()
		stop = make(chan struct{})
	)
	for k := 0; k < 4; k++ {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			cl, err := client.New(c.addrs, client.Options{CallTimeout: 500 * time.Millisecond, Retries: 60})
			if err != nil {
				t.Error(err)
				return
			}
			defer cl.Close()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				v := fmt.Sprintf("c%d-%d", k, j)
				op := checker.Op{Client: k, Kind: checker.Append, Value: v, Invoke: int64(time.Since(base))}
				res, err := cl.Append(context.Background(), []byte(v))
				op.Complete = int64(time.Since(base))
				if err != nil {
					op.Status = checker.Unknown
				} else {
					op.Index = res.First
				}
				mu.Lock()
				hist = append(hist, op)
				mu.Unlock()
			}
		}(k)
	}
	pause := func() { time.Sleep(700 * time.Millisecond) }
	pause()
	for round := 0; round < 2; round++ {
		m := c.master(t)
		t.Logf("stopping master node %d", m+1)
		c.servers[m].Stop()
		pause()
		if err := c.start(m); err != nil {
			t.Fatal(err)
		}
		pause()
	}
	// Cut the link between the master and one other node, both ways.
	m := c.master(t)
	o := (m + 1) % 3
	c.servers[m].Transport().CutLink(uint64(o+1), true)
	c.servers[o].Transport().CutLink(uint64(m+1), true)
	pause()
	c.servers[m].Transport().CutLink(uint64(o+1), false)
	c.servers[o].Transport().CutLink(uint64(m+1), false)
	pause()
	close(stop)
	wg.Wait()

	final := readAll(t, c, 0)
	res := checker.Check(hist, final)
	t.Logf("%s", res)
	if !res.OK() || res.OKs == 0 {
		t.Fatal("history check failed")
	}
	var hits uint64
	for _, s := range c.servers {
		st, err := s.Node().Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		hits = max(hits, st.DedupHits)
	}
	t.Logf("dedup hits: %d, %d appends acknowledged", hits, res.OKs)
	if hits == 0 {
		t.Fatal("no retry was answered from the dedup table: the faults did not exercise exactly-once")
	}
}

// readAll reads node i's whole log locally, waiting until all nodes agree.
func readAll(t *testing.T, c *testCluster, i int) []string {
	t.Helper()
	var logs [][]string
	deadline := time.Now().Add(30 * time.Second)
	for {
		logs = logs[:0]
		for _, a := range c.addrs {
			cl := newClient(t, []string{a}, client.Options{})
			var out []string
			for {
				r, err := cl.Read(context.Background(), uint64(len(out)), 10000, true)
				if err != nil {
					t.Fatal(err)
				}
				if len(r.Entries) == 0 {
					break
				}
				for _, e := range r.Entries {
					out = append(out, string(e.Value))
				}
			}
			logs = append(logs, out)
		}
		same := true
		for _, l := range logs[1:] {
			if fmt.Sprint(l) != fmt.Sprint(logs[0]) {
				same = false
			}
		}
		if same {
			return logs[i]
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs of the nodes differ after 30s: lengths %d %d %d", len(logs[0]), len(logs[1]), len(logs[2]))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTypedErrors(t *testing.T) {
	c := newTestCluster(t, 3)
	c.master(t)
	cl := newClient(t, c.addrs, client.Options{})
	ctx := context.Background()

	// Exactly-once with explicit sequence numbers, and a retry below the window.
	r1, err := cl.AppendSeq(ctx, 77, 100, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := cl.AppendSeq(ctx, 77, 100, []byte("a"))
	if err != nil || !r2.Duplicate || r2.First != r1.First {
		t.Fatalf("retry of (77,100): %+v, %v; want the original index %d, duplicate", r2, err, r1.First)
	}
	if _, err := cl.AppendSeq(ctx, 77, 50, []byte("old")); !errors.Is(err, client.ErrStaleSeq) {
		t.Fatalf("seq below the window: %v, want ErrStaleSeq", err)
	}

	// Conditional append.
	end := r1.Last + 1
	if r, err := cl.AppendAt(ctx, end, []byte("b")); err != nil || r.First != end {
		t.Fatalf("AppendAt(%d): %+v, %v", end, r, err)
	}
	var ce *client.ConflictError
	if _, err := cl.AppendAt(ctx, end, []byte("c")); !errors.As(err, &ce) || !errors.Is(err, client.ErrConflict) || ce.End != end+1 {
		t.Fatalf("AppendAt at a stale index: %v, want ConflictError{End: %d}", err, end+1)
	}

	// Too large.
	if _, err := cl.Append(ctx, bytes.Repeat([]byte("x"), 2<<20)); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("2 MiB entry: %v, want ErrTooLarge", err)
	}

	// Trimmed.
	for i := 0; i < 5; i++ {
		if _, err := cl.Append(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	first, err := cl.Trim(ctx, 4)
	if err != nil || first != 4 {
		t.Fatalf("Trim(4): %d, %v", first, err)
	}
	var te *client.TrimmedError
	if _, err := cl.Read(ctx, 0, 10, false); !errors.As(err, &te) || te.First != 4 || !errors.Is(err, client.ErrTrimmed) {
		t.Fatalf("read below the first index: %v, want TrimmedError{4}", err)
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, err := range cl.Entries(tctx, 1) {
		if !errors.As(err, &te) || te.First != 4 {
			t.Fatalf("tail below the first index: %v, want TrimmedError{4}", err)
		}
		break
	}

	cl.Close()
	if _, err := cl.Append(ctx, []byte("z")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("append after Close: %v, want ErrClosed", err)
	}
}

// A token or cluster name gRPC cannot send as a header is refused at New,
// before anything is sent, not by every call once the command has begun.
func TestNewRefusesUnsendableMetadata(t *testing.T) {
	for _, opt := range []client.Options{{Token: "secret\n"}, {Cluster: "a\x00b"}, {Token: "é"}} {
		if c, err := client.New([]string{"127.0.0.1:1"}, opt); err == nil {
			c.Close()
			t.Errorf("New accepted token %q, cluster %q", opt.Token, opt.Cluster)
		}
	}
	c, err := client.New([]string{"127.0.0.1:1"}, client.Options{Token: "s3cr3t-token_ok", Cluster: "prod-1"})
	if err != nil {
		t.Fatalf("New refused a printable token and cluster name: %v", err)
	}
	c.Close()
}

// A node that forwards a streamed append to the master says where the
// master is, and the client goes there: once the node it was given is
// down, its appends still succeed, at the master.
func TestStreamFollowsTheMaster(t *testing.T) {
	c := newTestCluster(t, 3)
	m := c.master(t)
	other := (m + 1) % 3
	cl := newClient(t, []string{c.addrs[other]}, client.Options{CallTimeout: 5 * time.Second, Retries: 3})
	if _, err := cl.Append(context.Background(), []byte("forwarded")); err != nil {
		t.Fatal(err)
	}
	c.servers[other].Stop()
	if _, err := cl.Append(context.Background(), []byte("at the master")); err != nil {
		t.Fatalf("with the node it was given down: %v (the client did not learn the master from the forward)", err)
	}
}
