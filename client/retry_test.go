package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// fakeLog is a LogService that answers every Append and Trim with answer
// and counts the appends that reached it.
type fakeLog struct {
	paxosdpb.UnimplementedLogServiceServer
	addr   string
	answer func(ctx context.Context, n int) error // n: this append's number, from 1

	mu      sync.Mutex
	appends int
	pairs   [][2]uint64 // the (client_id, seq) of each append
	dup     bool        // answer with Duplicate set
}

func (f *fakeLog) Append(ctx context.Context, req *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error) {
	f.mu.Lock()
	f.appends++
	n := f.appends
	f.pairs = append(f.pairs, [2]uint64{req.ClientId, req.Seq})
	dup := f.dup
	f.mu.Unlock()
	if err := f.answer(ctx, n); err != nil {
		return nil, err
	}
	return &paxosdpb.AppendResponse{FirstIndex: 7, LastIndex: 7, Duplicate: dup}, nil
}

func (f *fakeLog) Trim(ctx context.Context, req *paxosdpb.TrimRequest) (*paxosdpb.TrimResponse, error) {
	if err := f.answer(ctx, 0); err != nil {
		return nil, err
	}
	return &paxosdpb.TrimResponse{FirstIndex: req.Before}, nil
}

func (f *fakeLog) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.appends
}

// startFake serves a fakeLog on 127.0.0.1 until the test ends.
func startFake(t *testing.T, answer func(ctx context.Context, n int) error) *fakeLog {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLog{addr: lis.Addr().String(), answer: answer}
	srv := grpc.NewServer()
	paxosdpb.RegisterLogServiceServer(srv, f)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	return f
}

// always answers every request with err.
func always(err error) func(context.Context, int) error {
	return func(context.Context, int) error { return err }
}

// deadAddr returns an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

const rounds = 4 // Options.Retries of the clients below

func fastClient(t *testing.T, eps ...string) *client.Client {
	return newClient(t, eps, client.Options{Retries: rounds, CallTimeout: 2 * time.Second, DialTimeout: 2 * time.Second})
}

// An append without a client ID whose attempt reached a node and failed in
// a way that leaves its outcome open is sent once, never again (nothing
// would deduplicate a second copy), and says the outcome is unknown. An
// append with a client ID is retried on the same failures.
func TestUntaggedAppendIsSentOnceAfterReachingANode(t *testing.T) {
	broken := status.Error(codes.Unavailable, "test: the connection broke after the append arrived")
	for _, tc := range []struct {
		name   string
		answer func(context.Context, int) error
		// tagged: how many times an append with a client ID is sent (once
		// a round; an internal error is not retried)
		tagged int
	}{
		{"unavailable", always(broken), rounds},
		{"dropped proposal", always(status.Error(codes.Unavailable, "proposal dropped: mastership changed")), rounds},
		{"internal", always(status.Error(codes.Internal, "test: failed after proposing")), 1},
		{"bare resource exhausted", always(status.Error(codes.ResourceExhausted, "test: gRPC's own")), rounds},
		{"timeout", func(ctx context.Context, _ int) error { <-ctx.Done(); return ctx.Err() }, rounds},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := startFake(t, tc.answer)
			cl := newClient(t, []string{f.addr}, client.Options{Retries: rounds, CallTimeout: 300 * time.Millisecond})
			_, err := cl.AppendSeq(context.Background(), 0, 0, []byte("x"))
			if n := f.count(); n != 1 {
				t.Errorf("the untagged append reached the node %d times, want once", n)
			}
			var uo *client.UnknownOutcomeError
			if !errors.Is(err, client.ErrUnknownOutcome) || !errors.As(err, &uo) || uo.ClientID != 0 {
				t.Fatalf("untagged append: %v, want ErrUnknownOutcome", err)
			}
			if !strings.Contains(err.Error(), "outcome unknown") || !strings.Contains(err.Error(), "no client ID") {
				t.Errorf("the error does not say the outcome is unknown and why it was not retried: %v", err)
			}

			// The same failures, with a client ID: retried every round, and
			// still unknown when the client gives up.
			g := startFake(t, tc.answer)
			cl = newClient(t, []string{g.addr}, client.Options{Retries: rounds, CallTimeout: 300 * time.Millisecond})
			_, err = cl.AppendSeq(context.Background(), 77, 5, []byte("x"))
			if n := g.count(); n != tc.tagged {
				t.Errorf("the tagged append reached the node %d times, want %d", n, tc.tagged)
			}
			if !errors.As(err, &uo) || uo.ClientID != 77 || uo.Seq != 5 {
				t.Fatalf("tagged append that gave up: %v, want an UnknownOutcomeError naming (77, 5)", err)
			}
		})
	}
}

// A tagged append is retried until it succeeds.
func TestTaggedAppendRetried(t *testing.T) {
	f := startFake(t, func(_ context.Context, n int) error {
		if n < 3 {
			return status.Error(codes.Unavailable, "test: reply lost")
		}
		return nil
	})
	res, err := fastClient(t, f.addr).Append(context.Background(), []byte("x"))
	if err != nil || res.First != 7 || f.count() != 3 {
		t.Fatalf("append: %+v, %v after %d attempts; want index 7 after 3", res, err, f.count())
	}
}

// An append without a client ID is sent again after an answer that says
// nothing was applied, and to another endpoint when one was never reached.
func TestUntaggedAppendRetriedWhenNothingApplied(t *testing.T) {
	master := startFake(t, always(nil))
	for _, tc := range []struct {
		name  string
		first func(context.Context, int) error
	}{
		{"not the master", always(api.NotMasterError(2, master.addr))},
		{"no master known", always(api.NotMasterError(0, ""))},
		{"overloaded", always(api.Overloaded("test: queue full", 0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, tc.first)
			before := master.count()
			res, err := fastClient(t, f.addr, master.addr).AppendSeq(context.Background(), 0, 0, []byte("x"))
			if err != nil || res.First != 7 {
				t.Fatalf("append: %+v, %v", res, err)
			}
			if f.count() != 1 || master.count() != before+1 {
				t.Errorf("attempts: %d at the refusing node, %d at the master; want 1 and 1", f.count(), master.count()-before)
			}
		})
	}
	t.Run("never connected", func(t *testing.T) {
		before := master.count()
		res, err := fastClient(t, deadAddr(t), master.addr).AppendSeq(context.Background(), 0, 0, []byte("x"))
		if err != nil || res.First != 7 || master.count() != before+1 {
			t.Fatalf("append with a dead endpoint first: %+v, %v, %d attempts at the live one", res, err, master.count()-before)
		}
	})
	t.Run("every endpoint dead", func(t *testing.T) {
		dead := deadAddr(t)
		_, err := fastClient(t, dead).AppendSeq(context.Background(), 0, 0, []byte("x"))
		if err == nil || errors.Is(err, client.ErrUnknownOutcome) || !strings.Contains(err.Error(), dead) {
			t.Fatalf("append to a dead endpoint: %v; want a failure naming %s, not an unknown outcome (nothing was sent)", err, dead)
		}
	})
}

// The cluster's definite refusals become the client's errors, at once:
// never spun on, never an unknown outcome.
func TestRefusalsMapToClientErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer error
		want   error
		msg    string // the error says this
	}{
		{"too many clients", api.TooManyClientsError("too many exactly-once clients: the dedup table holds its cap of 3 clients"), client.ErrTooManyClients, "cap of 3"},
		{"seq reused", api.SeqReusedError("this (client_id, seq) was already applied with different entries"), client.ErrSeqReused, "already applied with different entries"},
		{"stale seq", api.InvalidArgumentReason("seq", "too old", api.ReasonStaleSeq), client.ErrStaleSeq, "too old"},
		{"no space", api.NoSpaceError(1, "/data", 10, 64), client.ErrNoSpace, "below its --min-free-bytes of 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFake(t, always(tc.answer))
			start := time.Now()
			_, err := fastClient(t, f.addr).AppendSeq(context.Background(), 77, 5, []byte("x"))
			if !errors.Is(err, tc.want) || errors.Is(err, client.ErrUnknownOutcome) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("append: %v, want %v saying %q", err, tc.want, tc.msg)
			}
			if n := f.count(); n != 1 {
				t.Errorf("the append was sent %d times (in %v), want once", n, time.Since(start))
			}
		})
	}
	t.Run("trim past the end", func(t *testing.T) {
		f := startFake(t, always(api.TrimPastEndError(100, 42)))
		_, err := fastClient(t, f.addr).Trim(context.Background(), 100)
		var pe *client.TrimPastEndError
		if !errors.As(err, &pe) || pe.End != 42 || !errors.Is(err, client.ErrTrimPastEnd) || !strings.Contains(err.Error(), "42") {
			t.Fatalf("trim: %v, want a TrimPastEndError naming the end 42", err)
		}
	})
}

// OUTCOME_UNKNOWN is retried, with the same (client ID, seq), until an
// answer settles it: the append's own retry finds it applied (Duplicate)
// and returns its indexes.
func TestOutcomeUnknownRetriedWithTheSamePair(t *testing.T) {
	f := startFake(t, func(_ context.Context, n int) error {
		if n < 3 {
			return api.OutcomeUnknownError("test: node stopped with the append in flight")
		}
		return nil
	})
	f.dup = true
	cl := fastClient(t, f.addr)
	res, err := cl.Append(context.Background(), []byte("x"))
	if err != nil || res.First != 7 || !res.Duplicate {
		t.Fatalf("append: %+v, %v; want index 7, found applied by the retry", res, err)
	}
	f.mu.Lock()
	pairs := f.pairs
	f.mu.Unlock()
	if len(pairs) != 3 || pairs[0][0] != cl.ID() || pairs[0][0] == 0 {
		t.Fatalf("attempts %v, want 3 with the client's ID %d", pairs, cl.ID())
	}
	for _, p := range pairs[1:] {
		if p != pairs[0] {
			t.Fatalf("a retry changed the pair: %v", pairs)
		}
	}

	// Without a client ID it is never sent again.
	g := startFake(t, always(api.OutcomeUnknownError("test")))
	_, err = fastClient(t, g.addr).AppendSeq(context.Background(), 0, 0, []byte("x"))
	if !errors.Is(err, client.ErrUnknownOutcome) || g.count() != 1 {
		t.Fatalf("untagged append: %v after %d attempts; want ErrUnknownOutcome after 1", err, g.count())
	}
}

// NO_SPACE is the master's refusal before proposing: not retried, and it
// settles nothing of an earlier attempt whose outcome was open, which the
// client reports as unknown, not as "nothing appended".
func TestNoSpaceAfterAnUnknownOutcome(t *testing.T) {
	f := startFake(t, func(_ context.Context, n int) error {
		if n == 1 {
			return api.OutcomeUnknownError("test: the forward broke")
		}
		return api.NoSpaceError(1, "/data", 10, 64)
	})
	_, err := fastClient(t, f.addr).AppendSeq(context.Background(), 77, 5, []byte("x"))
	var uo *client.UnknownOutcomeError
	if !errors.As(err, &uo) || uo.ClientID != 77 || uo.Seq != 5 || !errors.Is(err, client.ErrNoSpace) {
		t.Fatalf("append: %v; want an UnknownOutcomeError naming (77, 5) whose last failure is ErrNoSpace", err)
	}
	if n := f.count(); n != 2 {
		t.Errorf("sent %d times, want 2 (NO_SPACE is not retried)", n)
	}
}
