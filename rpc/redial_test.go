package rpc

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/paxosd/paxosd/internal/testports"
)

// A forward connection that failed while its peer was not listening yet
// (a node asks its peers for their gossip addresses at start) dials again
// as soon as a forward needs it, not when gRPC's backoff ends: with a
// minute of backoff, the connection is ready within the redial.
func TestRedialAfterAFailedDial(t *testing.T) {
	addr := testports.Addrs(t, 1)[0]
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: time.Minute, Multiplier: 1, MaxDelay: time.Minute}, MinConnectTimeout: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.Connect()
	for st := c.GetState(); st != connectivity.TransientFailure; st = c.GetState() {
		if !c.WaitForStateChange(ctx, st) {
			t.Fatalf("the dial of %s, where nothing listens, did not fail: %v", addr, st)
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("%s was taken in between: %v", addr, err)
	}
	srv := grpc.NewServer()
	go srv.Serve(l)
	defer srv.Stop()
	redial(ctx, c)
	if st := c.GetState(); st != connectivity.Ready {
		t.Fatalf("after the redial the connection to %s, listening now, is %v; want READY", addr, st)
	}
}
