package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// streamFake serves AppendStream: each stream is handed to serve, with
// its number (from 1). Unary Append is counted and refused.
type streamFake struct {
	paxosdpb.UnimplementedLogServiceServer
	addr    string
	serve   func(n int, st paxosdpb.LogService_AppendStreamServer) error
	streams atomic.Int64
	unary   atomic.Int64
}

func (f *streamFake) AppendStream(st paxosdpb.LogService_AppendStreamServer) error {
	return f.serve(int(f.streams.Add(1)), st)
}

func (f *streamFake) Append(context.Context, *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error) {
	f.unary.Add(1)
	return nil, status.Error(codes.Internal, "test: the client sent a unary Append to a node with AppendStream")
}

func startStreamFake(t *testing.T, serve func(n int, st paxosdpb.LogService_AppendStreamServer) error) *streamFake {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &streamFake{addr: lis.Addr().String(), serve: serve}
	srv := grpc.NewServer()
	paxosdpb.RegisterLogServiceServer(srv, f)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	return f
}

// recvN reads n requests of a stream.
func recvN(st paxosdpb.LogService_AppendStreamServer, n int) ([]*paxosdpb.AppendStreamRequest, error) {
	var reqs []*paxosdpb.AppendStreamRequest
	for len(reqs) < n {
		r, err := st.Recv()
		if err != nil {
			return nil, err
		}
		reqs = append(reqs, r)
	}
	return reqs, nil
}

func ok(req *paxosdpb.AppendStreamRequest) *paxosdpb.AppendStreamResponse {
	i := req.Append.Seq * 10
	return &paxosdpb.AppendStreamResponse{Id: req.Id, Append: &paxosdpb.AppendResponse{FirstIndex: i, LastIndex: i}}
}

// appendAll runs AppendSeq(clientID, seq) for seq 1..n concurrently and
// returns the results by seq.
func appendAll(cl *client.Client, clientID uint64, n int) ([]client.AppendResult, []error) {
	res, errs := make([]client.AppendResult, n+1), make([]error, n+1)
	var wg sync.WaitGroup
	for seq := 1; seq <= n; seq++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[seq], errs[seq] = cl.AppendSeq(context.Background(), clientID, uint64(seq), []byte(fmt.Sprint(seq)))
		}()
	}
	wg.Wait()
	return res, errs
}

// Concurrent appends of one Client share one stream, and each caller gets
// the answer to its own append although the node answers in reverse order.
func TestStreamMultiplexesConcurrentAppends(t *testing.T) {
	const n = 12
	f := startStreamFake(t, func(_ int, st paxosdpb.LogService_AppendStreamServer) error {
		reqs, err := recvN(st, n)
		if err != nil {
			return err
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			if err := st.Send(ok(reqs[i])); err != nil {
				return err
			}
		}
		<-st.Context().Done()
		return nil
	})
	cl := fastClient(t, f.addr)
	res, errs := appendAll(cl, 77, n)
	for seq := 1; seq <= n; seq++ {
		if errs[seq] != nil || res[seq].First != uint64(seq)*10 {
			t.Errorf("seq %d: %+v, %v, want index %d", seq, res[seq], errs[seq], seq*10)
		}
	}
	if s, u := f.streams.Load(), f.unary.Load(); s != 1 || u != 0 {
		t.Errorf("%d streams and %d unary appends, want 1 stream", s, u)
	}
}

// When a stream breaks with appends in flight, the client sends each again
// with the same (client ID, seq) on a new stream; an append without a
// client ID is not sent again, and says its outcome is unknown.
func TestStreamBrokenRetriesInFlight(t *testing.T) {
	const n = 6
	var (
		mu    sync.Mutex
		pairs [3]map[[2]uint64]bool // by stream number
	)
	f := startStreamFake(t, func(k int, st paxosdpb.LogService_AppendStreamServer) error {
		want := n
		if k > 1 {
			want = n - 1 // the untagged one is not sent again
		}
		reqs, err := recvN(st, want)
		if err != nil {
			return err
		}
		mu.Lock()
		pairs[min(k, 2)] = map[[2]uint64]bool{}
		for _, r := range reqs {
			pairs[min(k, 2)][[2]uint64{r.Append.ClientId, r.Append.Seq}] = true
		}
		mu.Unlock()
		if k == 1 {
			return status.Error(codes.Internal, "test: the stream broke with every append in flight")
		}
		for _, r := range reqs {
			if err := st.Send(ok(r)); err != nil {
				return err
			}
		}
		<-st.Context().Done()
		return nil
	})
	cl := fastClient(t, f.addr)
	var (
		untagged error
		wg       sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, untagged = cl.AppendSeq(context.Background(), 0, 0, []byte("untagged"))
	}()
	res, errs := appendAll(cl, 77, n-1)
	wg.Wait()
	for seq := 1; seq < n; seq++ {
		if errs[seq] != nil || res[seq].First != uint64(seq)*10 {
			t.Errorf("seq %d: %+v, %v", seq, res[seq], errs[seq])
		}
	}
	var uo *client.UnknownOutcomeError
	if !errors.As(untagged, &uo) || uo.ClientID != 0 {
		t.Errorf("untagged append: %v, want an *UnknownOutcomeError", untagged)
	}
	mu.Lock()
	defer mu.Unlock()
	for p := range pairs[2] {
		if !pairs[1][p] {
			t.Errorf("pair %v sent again was not in flight on the broken stream", p)
		}
	}
	if len(pairs[2]) != n-1 || f.streams.Load() != 2 {
		t.Errorf("%d streams, %d pairs sent again, want 2 streams and %d pairs", f.streams.Load(), len(pairs[2]), n-1)
	}
}

// A node without AppendStream (an older server) gets unary appends.
func TestStreamFallsBackToUnary(t *testing.T) {
	f := startFake(t, always(nil))
	cl := fastClient(t, f.addr)
	for i := 0; i < 3; i++ {
		if _, err := cl.Append(context.Background(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if f.count() != 3 {
		t.Fatalf("%d unary appends reached the node, want 3", f.count())
	}
}

// An append's error comes back on the stream as the unary call would
// return it, and the client maps it to the same typed error; an outcome
// the node could not learn is retried with the same pair on the stream.
func TestStreamPerRequestErrors(t *testing.T) {
	var seen sync.Map // seq -> times sent
	f := startStreamFake(t, func(_ int, st paxosdpb.LogService_AppendStreamServer) error {
		for {
			r, err := st.Recv()
			if err != nil {
				return err
			}
			v, _ := seen.LoadOrStore(r.Append.Seq, new(atomic.Int64))
			times := v.(*atomic.Int64).Add(1)
			var e error
			switch {
			case r.Append.Seq == 1:
				e = api.NoSpaceError(1, "/data", 10, 100)
			case r.Append.Seq == 2 && times == 1:
				e = api.OutcomeUnknownError("test: the master lost it")
			case r.Append.Seq == 3:
				e = api.ExpectedIndexError(4, 9)
			}
			resp := ok(r)
			if e != nil {
				st := status.Convert(e).Proto()
				resp = &paxosdpb.AppendStreamResponse{Id: r.Id, Error: &paxosdpb.AppendError{Code: st.Code, Message: st.Message, Details: st.Details}}
			}
			if err := st.Send(resp); err != nil {
				return err
			}
		}
	})
	cl := fastClient(t, f.addr)
	if _, err := cl.AppendSeq(context.Background(), 9, 1, []byte("a")); !errors.Is(err, client.ErrNoSpace) {
		t.Errorf("NO_SPACE: %v, want client.ErrNoSpace", err)
	}
	if r, err := cl.AppendSeq(context.Background(), 9, 2, []byte("b")); err != nil || r.First != 20 {
		t.Errorf("after OUTCOME_UNKNOWN: %+v, %v, want the retry's index 20", r, err)
	}
	var ce *client.ConflictError
	if _, err := cl.AppendSeq(context.Background(), 9, 3, []byte("c")); !errors.As(err, &ce) || ce.End != 9 {
		t.Errorf("expected index: %v, want a *ConflictError at 9", err)
	}
	if v, _ := seen.Load(uint64(2)); v.(*atomic.Int64).Load() != 2 || f.streams.Load() != 1 {
		t.Errorf("seq 2 sent %d times on %d streams, want twice on 1", v.(*atomic.Int64).Load(), f.streams.Load())
	}
}
