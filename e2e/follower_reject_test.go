package e2e

// A follower its cluster refuses stops, loudly; a follower whose member is
// merely down waits for it, and serves no log until it has heard from its
// cluster (docs/operations.md, "Followers").

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/internal/testports"
)

// follower is a `paxosd server --follow` process started by a test.
type follower struct {
	cmd  *exec.Cmd
	log  string        // its stdout and stderr
	done chan struct{} // closed when it has exited
}

// startFollowerWith starts follower id of member target on addr with the
// given --peers and more flags.
func (c *cluster) startFollowerWith(t *testing.T, id, target int, addr, peers string, extra ...string) *follower {
	t.Helper()
	f := &follower{log: filepath.Join(c.dir, fmt.Sprintf("follower%d.log", id)), done: make(chan struct{})}
	logf, err := os.OpenFile(f.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"server", "--id", fmt.Sprint(id), "--follow", fmt.Sprint(target), "--listen", addr,
		"--peers", peers, "--data-dir", filepath.Join(c.dir, fmt.Sprintf("follower%d", id))}, extra...)
	f.cmd = exec.Command(binary, args...)
	f.cmd.Stdout, f.cmd.Stderr = logf, logf
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { f.cmd.Wait(); logf.Close(); close(f.done) }()
	t.Cleanup(func() {
		f.cmd.Process.Signal(syscall.SIGTERM)
		<-f.done
	})
	return f
}

func (f *follower) output(t *testing.T) string {
	b, _ := os.ReadFile(f.log)
	return string(b)
}

// waitExit waits (generously) for the follower to exit by itself and
// returns its exit code.
func (f *follower) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the follower still runs after 30 s:\n%s", f.output(t))
	}
	return f.cmd.ProcessState.ExitCode() // -1 if a signal ended it
}

// TestFollowerRejectedExits: a follower started with another --cluster (so
// another cluster ID), or whose --peers gives its member's ID the address of
// another member, is refused by its member; it exits non-zero, naming why,
// instead of serving an empty log.
func TestFollowerRejectedExits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	c.master(t)
	appendValues(t, c.client(t), 0, 100)

	t.Run("wrong cluster", func(t *testing.T) {
		f := c.startFollowerWith(t, 10, 1, testports.Addrs(t, 1)[0], c.peers, "--cluster", "another")
		code := f.waitExit(t)
		out := f.output(t)
		if code != 1 || !strings.Contains(out, "wrong cluster") || !strings.Contains(out, "--cluster") || !strings.Contains(out, "is in cluster") {
			t.Fatalf("exit code %d; want 1 and a message naming the cluster mismatch:\n%s", code, out)
		}
		t.Logf("exit code %d:\n%s", code, out)
	})
	t.Run("unknown member", func(t *testing.T) {
		// Nodes 1 and 2 swapped: the follower reaches node 2 as node 1.
		peers := fmt.Sprintf("1=%s,2=%s,3=%s", c.addrs[1], c.addrs[0], c.addrs[2])
		f := c.startFollowerWith(t, 11, 1, testports.Addrs(t, 1)[0], peers)
		code := f.waitExit(t)
		out := f.output(t)
		if code != 1 || !strings.Contains(out, "unknown member") || !strings.Contains(out, "this is node 2") {
			t.Fatalf("exit code %d; want 1 and a message naming the wrong member:\n%s", code, out)
		}
		t.Logf("exit code %d:\n%s", code, out)
	})
}

// TestFollowerWaitsForItsMember: a follower whose member (here, the whole
// cluster) is down when it starts keeps running and retrying, refuses local
// reads meanwhile (it has no log of the cluster's yet), and catches up once
// the members are back.
func TestFollowerWaitsForItsMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	c.master(t)
	appendValues(t, c.client(t), 0, 100)
	for i := range 3 {
		c.stop(i)
	}

	addr := testports.Addrs(t, 1)[0]
	f := c.startFollowerWith(t, 10, 1, addr, c.peers)
	// Wait until it has tried its member at least once and serves reads.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(f.output(t), `msg="peer link down" node=10 peer=1 `) {
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not try its member within 30 s:\n%s", f.output(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
	fc, err := client.New([]string{addr}, client.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	var rerr error
	for {
		var r client.ReadResult
		r, rerr = fc.Read(context.Background(), 0, 100, true)
		if rerr != nil && status.Code(rerr) != codes.Unavailable {
			break
		}
		if rerr == nil {
			t.Fatalf("a follower that never heard from its cluster served a local read: %d entries", len(r.Entries))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower does not answer: %v", rerr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !api.AsNotConnected(rerr) || !strings.Contains(rerr.Error(), "not heard from its cluster") {
		t.Fatalf("local read on a follower not yet connected: %v; want NOT_CONNECTED", rerr)
	}
	select {
	case <-f.done:
		t.Fatalf("the follower exited while its member was down:\n%s", f.output(t))
	default:
	}

	for i := range 3 {
		c.start(i)
	}
	waitValues(t, addr, 100)
	select {
	case <-f.done:
		t.Fatalf("the follower exited:\n%s", f.output(t))
	default:
	}
}
