package rpc

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// gatedAppends settles each append (by its seq) when the test opens its
// gate, and counts how many it holds at once.
type gatedAppends struct {
	mu      sync.Mutex
	gates   map[uint64]chan error
	held    int
	maxHeld int
	arrived chan uint64
}

func newGated() *gatedAppends {
	return &gatedAppends{gates: map[uint64]chan error{}, arrived: make(chan uint64, 1000)}
}

func (g *gatedAppends) gate(seq uint64) chan error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates[seq] == nil {
		g.gates[seq] = make(chan error, 1)
	}
	return g.gates[seq]
}

// settle answers the append with seq: with err, or (nil) at index seq*10.
func (g *gatedAppends) settle(seq uint64, err error) { g.gate(seq) <- err }

func (g *gatedAppends) append(ctx context.Context, req *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error) {
	g.mu.Lock()
	g.held++
	g.maxHeld = max(g.maxHeld, g.held)
	g.mu.Unlock()
	defer func() { g.mu.Lock(); g.held--; g.mu.Unlock() }()
	g.arrived <- req.Seq
	select {
	case err := <-g.gate(req.Seq):
		if err != nil {
			return nil, err
		}
		return &paxosdpb.AppendResponse{FirstIndex: req.Seq * 10, LastIndex: req.Seq * 10}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// streamService serves AppendStream with a given bound and append.
type streamService struct {
	paxosdpb.UnimplementedLogServiceServer
	bound int
	fn    func(context.Context, *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error)
}

func (s *streamService) AppendStream(st grpc.BidiStreamingServer[paxosdpb.AppendStreamRequest, paxosdpb.AppendStreamResponse]) error {
	return serveAppendStream(st, s.bound, s.fn)
}

// openStream serves svc on 127.0.0.1 and opens an AppendStream to it with
// the metadata md (key, value pairs).
func openStream(t *testing.T, svc *streamService, opts []grpc.ServerOption, md ...string) paxosdpb.LogService_AppendStreamClient {
	t.Helper()
	lis := listen(t)
	srv := grpc.NewServer(opts...)
	paxosdpb.RegisterLogServiceServer(srv, svc)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(transportCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), metadata.Pairs(md...)))
	t.Cleanup(func() { cancel(); conn.Close(); srv.Stop(); <-served })
	st, err := paxosdpb.NewLogServiceClient(conn).AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func sendAppend(t *testing.T, st paxosdpb.LogService_AppendStreamClient, id, seq uint64) {
	t.Helper()
	if err := st.Send(&paxosdpb.AppendStreamRequest{Id: id, Append: &paxosdpb.AppendRequest{Entries: [][]byte{{1}}, ClientId: 5, Seq: seq}}); err != nil {
		t.Fatal(err)
	}
}

func waitArrived(t *testing.T, g *gatedAppends, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for len(seqs) < n {
		select {
		case s := <-g.arrived:
			seqs = append(seqs, s)
		case <-time.After(30 * time.Second):
			t.Fatalf("%d appends reached the node, want %d", len(seqs), n)
		}
	}
	return seqs
}

// Many appends are in flight on one stream at once; each is answered, with
// its own request ID, as it settles, in the order they settle; a failed
// append is answered with its status, details and all, and the stream goes
// on; once the client closes its side, the node answers what is in flight
// and ends the stream cleanly.
func TestAppendStreamOutOfOrder(t *testing.T) {
	const n = 40
	g := newGated()
	st := openStream(t, &streamService{bound: StreamInFlight, fn: g.append}, nil)
	for seq := uint64(1); seq <= n; seq++ {
		sendAppend(t, st, 1000+seq, seq) // IDs differ from seqs: the answer must carry the ID
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitArrived(t, g, n)
	noSpace := api.NoSpaceError(1, "/data", 10, 100)
	for seq := uint64(n); seq >= 1; seq-- { // the last sent settles first
		var err error
		if seq%7 == 0 {
			err = noSpace
		}
		g.settle(seq, err)
		r, rerr := st.Recv()
		if rerr != nil {
			t.Fatalf("after settling seq %d: %v", seq, rerr)
		}
		if r.Id != 1000+seq {
			t.Fatalf("settled seq %d (ID %d), got the answer of ID %d", seq, 1000+seq, r.Id)
		}
		if seq%7 != 0 {
			if r.Error != nil || r.Append.GetFirstIndex() != seq*10 {
				t.Fatalf("ID %d: %v, want index %d", r.Id, r, seq*10)
			}
			continue
		}
		if r.Append != nil || r.Error == nil {
			t.Fatalf("ID %d: %v, want the NO_SPACE error", r.Id, r)
		}
		got := status.FromProto(&spb.Status{Code: r.Error.Code, Message: r.Error.Message, Details: r.Error.Details}).Err()
		if free, min, ok := api.AsNoSpace(got); !ok || free != 10 || min != 100 || status.Code(got) != codes.ResourceExhausted {
			t.Fatalf("ID %d: %v, want NO_SPACE (free 10, min 100) as the node returned it", r.Id, got)
		}
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("after every answer: %v, want the stream's clean end", err)
	}
}

// The node works on at most bound appends of a stream at once and reads no
// more until one settles; every append is answered in the end.
func TestAppendStreamBound(t *testing.T) {
	const bound, n = 4, 16
	g := newGated()
	st := openStream(t, &streamService{bound: bound, fn: g.append}, nil)
	for seq := uint64(1); seq <= n; seq++ {
		sendAppend(t, st, seq, seq)
	}
	// Release one append at a time, and take the next that arrives: a node
	// that read on would hold all n by now.
	held := waitArrived(t, g, bound)
	arrived := bound
	for answered := 0; answered < n; answered++ {
		g.settle(held[0], nil)
		held = held[1:]
		if r, err := st.Recv(); err != nil {
			t.Fatal(err)
		} else if r.Error != nil {
			t.Fatalf("ID %d: %v", r.Id, r.Error)
		}
		if arrived < n {
			held = append(held, waitArrived(t, g, 1)...)
			arrived++
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxHeld > bound {
		t.Fatalf("the node held %d appends of one stream at once, over its bound of %d", g.maxHeld, bound)
	}
}

// The stream is authorized as Append is: a writer may open it, a reader
// is refused before the node reads any append, as is a caller without a
// token, and a client that expects another cluster.
func TestAppendStreamAuth(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(f, []byte("r reader\nw writer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := ParseAuthFile(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		md   []string
		want codes.Code
	}{
		{"writer", []string{AuthorizationKey, "Bearer w"}, codes.OK},
		{"reader", []string{AuthorizationKey, "Bearer r"}, codes.PermissionDenied},
		{"no token", nil, codes.Unauthenticated},
		{"other cluster", []string{AuthorizationKey, "Bearer w", ClusterKey, "other"}, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGated()
			st := openStream(t, &streamService{bound: StreamInFlight, fn: g.append}, ServerOptions(a, "test"), tc.md...)
			// A refused stream may end before the Send (io.EOF); Recv says why.
			st.Send(&paxosdpb.AppendStreamRequest{Id: 1, Append: &paxosdpb.AppendRequest{Entries: [][]byte{{1}}, ClientId: 5, Seq: 1}})
			g.settle(1, nil)
			r, err := st.Recv()
			if c := status.Code(err); c != tc.want {
				t.Fatalf("%v, %v: code %v, want %v", r, err, c, tc.want)
			}
			if tc.want != codes.OK && len(g.arrived) > 0 {
				t.Fatalf("a refused stream's append reached the node")
			}
		})
	}
}

// A stream that breaks (here: the node fails to send an answer) ends with
// the failure, and the node sends nothing more on it.
func TestAppendStreamSendFailure(t *testing.T) {
	g := newGated()
	broken := status.Error(codes.Internal, "test: send failed")
	var sends int
	var mu sync.Mutex
	breakSecond := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, &failingSend{ServerStream: ss, fail: func() error {
			mu.Lock()
			defer mu.Unlock()
			if sends++; sends == 2 {
				return broken
			}
			return nil
		}})
	})
	st := openStream(t, &streamService{bound: StreamInFlight, fn: g.append}, []grpc.ServerOption{breakSecond})
	for seq := uint64(1); seq <= 3; seq++ {
		sendAppend(t, st, seq, seq)
	}
	waitArrived(t, g, 3)
	g.settle(1, nil)
	if r, err := st.Recv(); err != nil || r.Id != 1 {
		t.Fatalf("first answer: %v, %v", r, err)
	}
	g.settle(2, nil)
	if r, err := st.Recv(); status.Code(err) != codes.Internal {
		t.Fatalf("after the failed send: %v, %v, want the stream ended with the failure", r, err)
	}
	g.settle(3, nil)
}

type failingSend struct {
	grpc.ServerStream
	fail func() error
}

func (f *failingSend) SendMsg(m any) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.ServerStream.SendMsg(m)
}
