package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
)

// Whether a trim is past the end of the log is the master's to say, from
// the log it has applied, not the reached node's: a node cut off from its
// peers lags behind the log but still knows the master for up to a lease,
// and forwards. A trim sent there within the master's log succeeds; one
// past the master's end is refused, naming that end.
func TestTrimThroughALaggingNode(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	const tries = 5 // a try is lost only if the cut node forgets the master (a lease, 3 s) before its trims arrive
	for try := 1; ; try++ {
		m := c.master(t)
		lag := (m + 1) % 3
		mc := newClient(t, []string{c.addrs[m]}, client.Options{})
		r, err := mc.Append(ctx, []byte(fmt.Sprint("before cut ", try)))
		if err != nil {
			t.Fatal(err)
		}
		// The lagging node has applied everything so far and knows the master.
		waitUntil(t, fmt.Sprintf("node %d applies index %d and names node %d master", lag+1, r.Last, m+1), func() bool {
			st, err := c.servers[lag].Node().Status(ctx)
			_, next := c.servers[lag].Node().Bounds()
			return err == nil && st.Master == uint64(m+1) && next > r.Last
		})
		cut := func(on bool) {
			for i := range c.servers {
				if i != lag {
					c.servers[lag].Transport().CutLink(uint64(i+1), on)
					c.servers[i].Transport().CutLink(uint64(lag+1), on)
				}
			}
		}
		cut(true)
		for i := 0; i < 5; i++ {
			if r, err = mc.Append(ctx, []byte(fmt.Sprint("while cut ", try, i))); err != nil {
				t.Fatal(err)
			}
		}
		end := r.Last + 1
		if _, next := c.servers[lag].Node().Bounds(); next >= end {
			t.Fatalf("node %d, cut off, holds the log up to %d: it does not lag behind the master's end %d", lag+1, next, end)
		}
		lc := newClient(t, []string{c.addrs[lag]}, client.Options{Retries: 1, CallTimeout: 10 * time.Second})
		_, pastErr := lc.Trim(ctx, end+1)
		first, err := lc.Trim(ctx, end)
		_, _, lost := api.AsNotMaster(pastErr)
		if _, _, l := api.AsNotMaster(err); l {
			lost = true
		}
		cut(false)
		if lost && try < tries {
			t.Logf("try %d: node %d forgot the master before the trims arrived (%v; %v); again", try, lag+1, pastErr, err)
			continue
		}
		var pe *client.TrimPastEndError
		if !errors.As(pastErr, &pe) || pe.End != end {
			t.Errorf("trim before %d through lagging node %d: %v; want a TrimPastEndError naming the master's end %d", end+1, lag+1, pastErr, end)
		}
		if err != nil || first != end {
			t.Errorf("trim before %d (the master's end) through lagging node %d: first %d, %v; want %d", end, lag+1, first, err, end)
		}
		_, lagNext := c.servers[lag].Node().Bounds()
		t.Logf("node %d's log ended at %d, the master's at %d", lag+1, lagNext, end)
		return
	}
}

// waitUntil waits for cond, for up to 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
