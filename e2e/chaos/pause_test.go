package chaos

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// A master paused (SIGSTOP) for longer than its lease must not serve
// linearizable reads from its old state when it resumes: by then another
// node is master and has acknowledged appends. The reads are sent to the
// paused master after the new master acknowledged an append, and are served
// when it resumes (the paused master's kernel holds them meanwhile). This is
// the pause-master fault of the chaos schedule made deterministic: in a
// chaos run the resumed master may hear from the new master before it
// serves a read, and then forwards it; here the links into it stall for
// the pause.
func TestPausedMasterServesNoStaleRead(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c, err := NewCluster(ClusterOptions{Binary: binary, Nodes: 3, Dir: t.TempDir(), Seed: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := client.New(c.Addrs, client.Options{CallTimeout: 2 * time.Second, Retries: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// Load, so that the links to the paused node are full when it resumes.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	var load sync.WaitGroup
	defer func() { stopLoad(); load.Wait() }()
	for k := 0; k < 4; k++ {
		// One client each: a client's appends carry increasing seqs, and
		// the dedup table refuses a seq below one already applied.
		lc, err := client.New(c.Addrs, client.Options{CallTimeout: 2 * time.Second, Retries: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer lc.Close()
		load.Add(1)
		go func() {
			defer load.Done()
			for n := 0; loadCtx.Err() == nil; n++ {
				ctx, cancel := context.WithTimeout(loadCtx, 5*time.Second)
				lc.Append(ctx, []byte(fmt.Sprintf("load-%d-%d", k, n)))
				cancel()
			}
		}()
	}
	for round := 0; round < 2; round++ {
		old := waitMaster(c, 30*time.Second)
		if old < 0 {
			t.Fatal("no master")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := cl.Append(ctx, []byte(fmt.Sprintf("before-%d", round))); err != nil {
			t.Fatal(err)
		}
		cancel()
		// Pause it, and hold back what the others send it (a congested
		// network), so that nothing but its own clock can tell it, when it
		// resumes, that it is no longer master.
		c.Pause(old)
		pausedAt := time.Now()
		for j := range c.Addrs {
			if j != old {
				c.SetLink(j, old, LinkState{Block: Stall})
			}
		}
		// Wait for another master to acknowledge an append.
		ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		res, err := cl.Append(ctx, []byte(fmt.Sprintf("during-%d", round)))
		cancel()
		if err != nil {
			c.Resume(old)
			t.Fatalf("no append acknowledged while node %d was paused: %v", old+1, err)
		}
		acked := res.First
		t.Logf("round %d: node %d paused; append acknowledged at index %d after %v", round, old+1, acked, time.Since(pausedAt).Round(time.Millisecond))
		// Linearizable reads to the paused node, invoked now: each must see
		// index acked.
		cc, err := grpc.NewClient(c.Addrs[old], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		api := paxosdpb.NewLogServiceClient(cc)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var stale, ends []string
		served := 0
		for k := 0; k < 20; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				r, err := api.Read(ctx, &paxosdpb.ReadRequest{From: 0, MaxCount: 1, Consistency: paxosdpb.Consistency_LINEARIZABLE})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					return // refused or forwarded and failed: no claim made
				}
				served++
				ends = append(ends, fmt.Sprint(r.EndIndex))
				if r.EndIndex <= acked {
					stale = append(stale, fmt.Sprintf("end %d", r.EndIndex))
				}
			}()
		}
		// Let the reads reach the paused node's socket, and resume it.
		time.Sleep(500 * time.Millisecond)
		c.Resume(old)
		wg.Wait()
		c.HealNetwork()
		cc.Close()
		t.Logf("round %d: node %d resumed after %v; %d of 20 reads served (log ends %v)", round, old+1, time.Since(pausedAt).Round(time.Millisecond), served, ends)
		if len(stale) > 0 {
			t.Fatalf("node %d, paused past its lease while node(s) elsewhere acknowledged index %d, served %d linearizable reads "+
				"without it when it resumed (%v): its lease clock did not count the pause", old+1, acked, len(stale), stale)
		}
	}
}
