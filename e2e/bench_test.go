package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/paxosd/paxosd/client"
)

// probe appends one entry every interval until stop is closed and records
// each append's latency.
func probe(t testing.TB, cl *client.Client, interval time.Duration, stop <-chan struct{}) *hdrhistogram.Histogram {
	h := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return h
		case <-tick.C:
		}
		start := time.Now()
		if _, err := cl.Append(context.Background(), []byte(fmt.Sprintf("probe-%d", i))); err != nil {
			t.Errorf("probe append: %v", err)
			return h
		}
		h.RecordValue(time.Since(start).Microseconds())
	}
}

func ms(us int64) float64 { return float64(us) / 1000 }

// BenchmarkCatchUp1M measures how fast a node 1,000,000 entries (100 B)
// behind catches up, and the master's append latency (one append every 5 ms)
// while it does, against the same probe on the idle cluster. "replay" learns
// the chosen values; "base" trims the first 1,000 entries first, so the node
// fetches the base (999,000 entries and the dedup table) instead. Run it with
//
//	go test ./e2e -run XXX -bench CatchUp1M -benchtime 1x -v
func BenchmarkCatchUp1M(b *testing.B) {
	b.Run("replay", func(b *testing.B) { benchCatchUp(b, 0) })
	b.Run("base", func(b *testing.B) { benchCatchUp(b, 1000) })
}

// benchCatchUp is BenchmarkCatchUp1M, trimming below trim (if not 0) before
// the node behind restarts.
func benchCatchUp(b *testing.B, trim uint64) {
	const total, batch, size = 1_000_000, 1000, 100
	for range b.N {
		c := newCluster(b, 3, benchFlags...)
		m := c.master(b)
		behind := (m + 1) % 3
		c.stop(behind)
		cl, err := client.New(c.addrs, client.Options{CallTimeout: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		var wg sync.WaitGroup
		loadStart := time.Now()
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				vals := make([][]byte, batch)
				for k := w; k < total/batch; k += 4 {
					for j := range vals {
						v := fmt.Sprintf("%08d-", k*batch+j)
						vals[j] = []byte(v + strings.Repeat("z", size-len(v)))
					}
					if _, err := cl.Append(context.Background(), vals...); err != nil {
						b.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		b.Logf("loaded %d entries of %d B in %v", total, size, time.Since(loadStart).Round(time.Millisecond))
		if trim > 0 {
			if _, err := cl.Trim(context.Background(), trim); err != nil {
				b.Fatal(err)
			}
		}

		// The probe on the idle cluster.
		stop := make(chan struct{})
		time.AfterFunc(5*time.Second, func() { close(stop) })
		idle := probe(b, cl, 5*time.Millisecond, stop)

		// The same probe while the node catches up.
		stop = make(chan struct{})
		res := make(chan *hdrhistogram.Histogram)
		go func() { res <- probe(b, cl, 5*time.Millisecond, stop) }()
		c.start(behind)
		start := time.Now()
		bc, err := client.New([]string{c.addrs[behind]}, client.Options{})
		if err != nil {
			b.Fatal(err)
		}
		for {
			st, err := bc.Status(context.Background(), c.addrs[behind])
			if err == nil && st.EndIndex >= total {
				if st.FirstIndex != trim {
					b.Fatalf("caught up with first index %d, want %d", st.FirstIndex, trim)
				}
				break
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("no catch-up within 5 minutes: %v %v", st, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		d := time.Since(start)
		n := float64(total - trim) // entries the node fetched
		close(stop)
		during := <-res
		bc.Close()
		b.ReportMetric(n/d.Seconds(), "entries/s")
		b.ReportMetric(n*size/d.Seconds()/1e6, "MB/s")
		b.ReportMetric(ms(idle.ValueAtQuantile(99)), "idle-p99-ms")
		b.ReportMetric(ms(during.ValueAtQuantile(99)), "catchup-p99-ms")
		b.Logf("catch-up of %d entries in %v (from the restart command, process start included): %.0f entries/s, %.1f MB/s",
			int(n), d.Round(time.Millisecond), n/d.Seconds(), n*size/d.Seconds()/1e6)
		b.Logf("master append latency, 1 append / 5 ms: idle p50 %.2f ms p99 %.2f ms (%d samples); during catch-up p50 %.2f ms p99 %.2f ms (%d samples)",
			ms(idle.ValueAtQuantile(50)), ms(idle.ValueAtQuantile(99)), idle.TotalCount(),
			ms(during.ValueAtQuantile(50)), ms(during.ValueAtQuantile(99)), during.TotalCount())
	}
}

var benchFlags = strings.Fields(os.Getenv("PAXOSD_BENCH_FLAGS"))

// BenchmarkMasterStopStall measures how long appends stall when the master
// is stopped: by SIGTERM (a planned stop: it hands its lease over first)
// and by SIGKILL (a crash: the others wait for its lease to run out), in
// the same run, alternating, rounds times each. One client appends every
// 2 ms, one append at a time; the stall of a round is the time from the
// signal to the acknowledgement of the first append sent after it. The
// stopped node is started again, and the next round waits until it has
// caught up.
// Run it with
//
//	go test ./e2e -run XXX -bench MasterStopStall -benchtime 1x -v
func BenchmarkMasterStopStall(b *testing.B) {
	const rounds = 5
	for range b.N {
		c := newCluster(b, 3, benchFlags...)
		cl, err := client.New(c.addrs, client.Options{CallTimeout: 2 * time.Second, Retries: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		type ack struct{ invoke, done time.Time }
		var mu sync.Mutex
		var acks []ack
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
				start := time.Now()
				if _, err := cl.Append(context.Background(), []byte(fmt.Sprintf("stall-%d", i))); err != nil {
					b.Errorf("append: %v", err)
					return
				}
				mu.Lock()
				acks = append(acks, ack{start, time.Now()})
				mu.Unlock()
			}
		}()
		// stallAfter waits for the first append sent after t to be
		// acknowledged and returns how long after t that was.
		stallAfter := func(t time.Time) time.Duration {
			for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				mu.Lock()
				for _, a := range acks {
					if !a.invoke.Before(t) {
						mu.Unlock()
						return a.done.Sub(t)
					}
				}
				mu.Unlock()
			}
			b.Fatal("no append acknowledged within 60s of stopping the master")
			return 0
		}
		stalls := map[string][]time.Duration{}
		for r := range 2 * rounds {
			kind := []string{"sigterm", "sigkill"}[r%2]
			m := c.master(b)
			time.Sleep(500 * time.Millisecond) // steady load before the fault
			t := time.Now()
			stopped := make(chan struct{})
			if kind == "sigterm" {
				go func() { c.stop(m); close(stopped) }() // it hands over, then exits
			} else {
				c.kill(m)
				close(stopped)
			}
			stalls[kind] = append(stalls[kind], stallAfter(t))
			<-stopped
			c.start(m)
			c.master(b)
			// A planned stop waits for a healthy cluster: the restarted node
			// caught up (within 50 entries of the others).
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				var ends []uint64
				for _, a := range c.addrs {
					if st, err := cl.Status(context.Background(), a); err == nil {
						ends = append(ends, st.EndIndex)
					}
				}
				if len(ends) == len(c.addrs) && slices.Max(ends)-slices.Min(ends) <= 50 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("node %d did not catch up within 60s of its restart: ends %v", m+1, ends)
				}
			}
		}
		close(stop)
		wg.Wait()
		cl.Close()
		for _, kind := range []string{"sigterm", "sigkill"} {
			s := slices.Clone(stalls[kind])
			slices.Sort(s)
			med := s[len(s)/2]
			b.ReportMetric(float64(med.Microseconds())/1000, kind+"-stall-ms")
			b.Logf("%s of the master: append stall median %v over %d rounds (all: %v)", kind, med.Round(time.Millisecond), len(s), stalls[kind])
		}
		c.stopAll()
	}
}
