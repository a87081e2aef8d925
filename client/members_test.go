package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
	"github.com/paxosd/paxosd/node"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
	"github.com/paxosd/paxosd/server"
)

// waitMembers polls ListMembers until ok accepts the answer.
func waitMembers(t *testing.T, cl *client.Client, what string, ok func(*paxosdpb.ListMembersResponse) bool) *paxosdpb.ListMembersResponse {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := cl.ListMembers(ctx)
		cancel()
		if err == nil && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s (last answer %v, %v)", what, r, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func roleOf(r *paxosdpb.ListMembersResponse, id uint64) string {
	for _, m := range r.Members {
		if m.Id == id {
			return m.Role
		}
	}
	return ""
}

// A node joins a running cluster through any member (Join), is promoted
// once caught up, and the master is removed (it hands over first); the
// removed node stops with node.ErrRemoved. The joined node restarts from
// its directory with no member given, and a second directory for the same
// ID is refused with a message naming members replace.
func TestJoinPromoteRemoveMaster(t *testing.T) {
	c := newTestCluster(t, 3)
	c.master(t)
	cl := newClient(t, c.addrs, client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for k := range 20 {
		if _, err := cl.Append(ctx, []byte(fmt.Sprint("v", k))); err != nil {
			t.Fatal(err)
		}
	}
	addr4 := testports.Addrs(t, 1)
	// Added ahead, with no incarnation: the node that joins at its address
	// takes the entry's place.
	if _, err := cl.ChangeMembers(ctx, &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_ADD_FOLLOWER, Id: 4, Address: addr4[0]}); err != nil {
		t.Fatalf("add 4 ahead: %v", err)
	}
	dir4 := c.dir + "/node4"
	cfg4 := server.Config{ID: 4, Listen: addr4[0], DataDir: dir4, Join: []string{c.addrs[1]}}
	s4, err := server.Start(context.Background(), cfg4)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s4.Stop() }()
	r := waitMembers(t, cl, "node 4 a follower with its incarnation", func(r *paxosdpb.ListMembersResponse) bool {
		for _, m := range r.Members {
			if m.Id == 4 {
				return m.Role == "follower" && m.Incarnation != 0
			}
		}
		return false
	})
	t.Logf("after the join: %v", r.Members)

	// Promote once caught up (a refusal for lag is retried).
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cl.ChangeMembers(ctx, &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_PROMOTE, Id: 4})
		if err == nil {
			break
		}
		if reason, ok := api.AsChangeRefused(err); !ok || reason != api.ReasonMemberBehind || time.Now().After(deadline) {
			t.Fatalf("promote 4: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitMembers(t, cl, "node 4 a voter", func(r *paxosdpb.ListMembersResponse) bool { return roleOf(r, 4) == "voter" })

	// Remove the master, through another node.
	m := c.master(t)
	other := client.Options{CallTimeout: 10 * time.Second, Retries: 30}
	via := newClient(t, []string{c.addrs[(m+1)%3]}, other)
	if _, err := via.ChangeMembers(ctx, &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_REMOVE, Id: uint64(m + 1)}); err != nil {
		t.Fatalf("remove the master, node %d: %v", m+1, err)
	}
	select {
	case <-c.servers[m].Done():
		if err := c.servers[m].Wait(); !errors.Is(err, node.ErrRemoved) {
			t.Fatalf("the removed node stopped with %v, want ErrRemoved", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("node %d still runs after its removal", m+1)
	}
	c.servers[m] = nil
	var rest []string
	for i, a := range c.addrs {
		if i != m {
			rest = append(rest, a)
		}
	}
	rest = append(rest, addr4[0])
	cl2 := newClient(t, rest, client.Options{CallTimeout: 5 * time.Second, Retries: 30})
	for k := range 20 {
		if _, err := cl2.Append(ctx, []byte(fmt.Sprint("w", k))); err != nil {
			t.Fatalf("append after the removal: %v", err)
		}
	}

	// Node 4 restarts from its directory alone.
	s4.Stop()
	s4, err = server.Start(context.Background(), server.Config{ID: 4, Listen: addr4[0], DataDir: dir4})
	if err != nil {
		t.Fatalf("restart of the joined node without --join: %v", err)
	}
	if _, err := cl2.Append(ctx, []byte("after-restart")); err != nil {
		t.Fatal(err)
	}

	// Another directory for ID 4 is refused, naming members replace.
	other4 := testports.Addrs(t, 1)
	dirY := t.TempDir() + "/y"
	_, err = server.Start(context.Background(), server.Config{ID: 4, Listen: other4[0], DataDir: dirY, Join: rest[:1], JoinTimeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "members replace 4") {
		t.Fatalf("a second directory for node 4: %v, want a refusal naming members replace", err)
	}
	t.Logf("refused: %v", err)
	if _, err := os.Stat(dirY); err == nil {
		t.Fatal("a refused join created its data directory")
	}
}
