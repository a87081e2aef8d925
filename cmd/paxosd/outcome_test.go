package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// brokenLog answers every append as a connection that broke after the
// append arrived would, and records the (client_id, seq) of each.
type brokenLog struct {
	paxosdpb.UnimplementedLogServiceServer
	mu   sync.Mutex
	seen []string
}

func (b *brokenLog) Append(_ context.Context, req *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error) {
	b.mu.Lock()
	b.seen = append(b.seen, fmt.Sprintf("--client-id %d --seq %d", req.ClientId, req.Seq))
	b.mu.Unlock()
	return nil, status.Error(codes.Unavailable, "test: the connection broke after the append arrived")
}

// An append whose outcome stays unknown says so, and names the client ID
// and seq it was sent with, which a repeat must reuse.
func TestAppendUnknownOutcome(t *testing.T) {
	needProcesses(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &brokenLog{}
	srv := grpc.NewServer()
	paxosdpb.RegisterLogServiceServer(srv, b)
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()

	r := run(t, "", "append", "--endpoints", lis.Addr().String(), "--timeout", "2s", "x")
	b.mu.Lock()
	seen := b.seen
	b.mu.Unlock()
	if len(seen) == 0 {
		t.Fatalf("the append never reached the server\n%v", r)
	}
	for _, s := range seen[1:] {
		if s != seen[0] {
			t.Fatalf("a retry changed the append's identity: %q, then %q", seen[0], s)
		}
	}
	refused(t, "append of unknown outcome", r, "outcome unknown", "may or may not have been applied", "paxosd append "+seen[0])
	if strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("the error is not one line\n%v", r)
	}
}
