package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/client"
)

// handoverLoad runs exactly-once clients appending small values until stop
// is called, recording every append in h.
func handoverLoad(t *testing.T, c *cluster, h *history, clients int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for k := range clients {
		cl, err := client.New(c.addrs, client.Options{CallTimeout: 2 * time.Second, Retries: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cl.Close()
			for j := 0; ctx.Err() == nil; j++ {
				name := fmt.Sprintf("c%d-%d", k, j)
				h.appendOnce(ctx, cl, k, name, []byte(name), 30*time.Second)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// waitAcked waits until n more appends than before are acknowledged.
func waitAcked(t *testing.T, h *history, n int) {
	count := func() (k int) {
		for _, op := range h.snapshot() {
			if op.Status == checker.OK {
				k++
			}
		}
		return k
	}
	want := count() + n
	deadline := time.Now().Add(30 * time.Second)
	for count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d appends acknowledged in 30s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The master role moves without waiting for a lease: by `master transfer`
// (the client's TransferMaster) to a named voter and to the one the master
// picks, and by a SIGTERM of the master, which hands over before it stops.
// Exactly-once clients append throughout; every acknowledged append must be
// in the log once, at its index, on every node.
func TestMasterHandover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	c := newCluster(t, 3)
	h := &history{base: time.Now()}
	stopLoad := handoverLoad(t, c, h, 4)
	defer stopLoad()
	waitAcked(t, h, 20)
	cl := c.client(t)

	m := c.master(t)
	to := uint64((m+1)%3 + 1) // another voter, by its member ID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	from, got, err := cl.TransferMaster(ctx, to)
	cancel()
	if err != nil {
		t.Fatalf("transfer from node %d to node %d: %v", m+1, to, err)
	}
	if from != uint64(m+1) || got != to {
		t.Fatalf("transfer reported %d -> %d, want %d -> %d", from, got, m+1, to)
	}
	if now := c.master(t); now != int(to-1) {
		t.Fatalf("node %d is master after the transfer to %d", now+1, to)
	}
	waitAcked(t, h, 20)

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	from, got, err = cl.TransferMaster(ctx, 0)
	cancel()
	if err != nil || from != to || got == to || got == 0 {
		t.Fatalf("transfer to the voter the master picks: %d -> %d, %v", from, got, err)
	}
	waitAcked(t, h, 20)

	// A planned stop of the master: it hands over first, and says so.
	m = c.master(t)
	c.stop(m)
	logText, _ := os.ReadFile(c.logPath(m))
	if !strings.Contains(string(logText), `msg="handover on shutdown" node=`+fmt.Sprint(m+1)+" to=") {
		t.Errorf("node %d stopped by SIGTERM as master without handing its lease over; its log:\n%s", m+1, logText)
	}
	waitAcked(t, h, 20)
	c.start(m)
	waitAcked(t, h, 20)
	stopLoad()

	var end uint64
	hist := h.snapshot()
	for _, op := range hist {
		if op.Status == checker.OK {
			end = max(end, op.Index+1)
		}
	}
	logs := sameLogs(t, c, []int{0, 1, 2}, end, 30*time.Second)
	if res := checker.Check(hist, logs[0]); !res.OK() {
		t.Fatalf("history against the log: %s", res)
	}
	t.Logf("%d operations, %d entries", len(hist), len(logs[0]))
}
