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

// lostReply answers the first append as a connection that broke after the
// append was applied would, and every later one as the dedup table answers
// a retry of an applied pair: the original indexes, Duplicate set.
type lostReply struct {
	paxosdpb.UnimplementedLogServiceServer
	mu   sync.Mutex
	seen []string
}

func (l *lostReply) Append(_ context.Context, req *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, fmt.Sprintf("%d/%d", req.ClientId, req.Seq))
	if len(l.seen) == 1 {
		return nil, status.Error(codes.Unavailable, "test: the reply was lost")
	}
	return &paxosdpb.AppendResponse{FirstIndex: 5, LastIndex: 5, Duplicate: true}, nil
}

// The CLI's own retry of an append whose reply was lost finds it applied:
// it prints the index, exits 0, and says nothing of a duplicate (the user
// typed the command once); the retry carried the first attempt's pair. A
// duplicate of the user's own --client-id/--seq is still reported.
func TestAppendOwnRetryIsNoDuplicate(t *testing.T) {
	needProcesses(t)
	start := func() (*lostReply, string) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l := &lostReply{}
		srv := grpc.NewServer()
		paxosdpb.RegisterLogServiceServer(srv, l)
		served := make(chan struct{})
		go func() { defer close(served); srv.Serve(lis) }()
		t.Cleanup(func() { srv.Stop(); <-served })
		return l, lis.Addr().String()
	}
	l, addr := start()
	r := run(t, "", "append", "--endpoints", addr, "x")
	if r.code != 0 || r.stdout != "5\n" || r.stderr != "" {
		t.Fatalf("append whose reply was lost: want index 5 and nothing on stderr\n%v", r)
	}
	l.mu.Lock()
	seen := l.seen
	l.mu.Unlock()
	if len(seen) != 2 || seen[0] != seen[1] || strings.HasPrefix(seen[0], "0/") {
		t.Fatalf("attempts %q: want two with the same non-zero client ID and seq", seen)
	}
	r = run(t, "", "append", "--endpoints", addr, "-w", "json", "x")
	if r.code != 0 || r.stdout != `{"index":5,"duplicate":true}`+"\n" || r.stderr != "" {
		t.Fatalf("append -w json whose reply was lost: want the index, duplicate true in JSON, nothing on stderr\n%v", r)
	}

	_, addr = start()
	r = run(t, "", "append", "--endpoints", addr, "--client-id", "9", "--seq", "1", "x")
	if r.code != 0 || r.stdout != "5\n" || !strings.Contains(r.stderr, "duplicate") {
		t.Fatalf("append with the user's own pair found applied: want index 5 and the duplicate note\n%v", r)
	}
}
