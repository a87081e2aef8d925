package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/paxosd/paxosd/server"
)

// goleveldb's memory-pool drainer outlives DB.Close by up to a second, by
// design; everything else must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/syndtr/goleveldb/leveldb.(*DB).mpoolDrain"))
}

// ---------------------------------------------------------------------------
// Values and the read-back tally.

func TestValueRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id   Identity
		size int
	}{
		{Identity{"0a1b2c3d", 0, 0}, MinSize},
		{Identity{"ffffffff", MaxClients, 99_999_999_999_999_999}, MinSize},
		{Identity{"12345678", 17, 4242}, 4096},
	} {
		v := appendValue([]byte("prefix"), tc.id, tc.size)[len("prefix"):]
		if len(v) != tc.size {
			t.Errorf("%+v: value of %d bytes, want %d", tc.id, len(v), tc.size)
		}
		got, ok := ParseValue(v)
		if !ok || got != tc.id {
			t.Errorf("%+v: parsed %+v, %v from %q", tc.id, got, ok, v)
		}
	}
	for _, v := range []string{"", "hello", "0a1b2c3d/x/1/", "0a1b2c3d/1/-1/", "short/1/1/...", "0a1b2c3d/1/1"} {
		if id, ok := ParseValue([]byte(v)); ok {
			t.Errorf("ParseValue(%q) = %+v, want not a bench value", v, id)
		}
	}
}

func TestTally(t *testing.T) {
	w := NewWritten("0a1b2c3d", 2)
	w.Ack(0, 0, 3)   // entries 0, 1, 2 of client 0
	w.Ack(1, 100, 1) // entry 100 of client 1
	w.Ack(1, 100, 1) // acknowledged twice (a retry): still one entry
	if w.Acked() != 4 {
		t.Fatalf("acked %d, want 4", w.Acked())
	}
	tally := w.NewTally()
	for _, id := range []Identity{
		{"0a1b2c3d", 0, 0}, {"0a1b2c3d", 0, 2}, {"0a1b2c3d", 0, 2}, // entry 1 missing, entry 2 twice
		{"0a1b2c3d", 1, 100}, {"0a1b2c3d", 1, 7}, // 7 was never acknowledged (a timeout that landed)
		{"99999999", 0, 1}, // another run's: ignored
		{"0a1b2c3d", 5, 1}, // no such client: ignored
	} {
		tally.See(id)
	}
	got := tally.Result("here")
	want := Check{Verified: true, Found: 5, Lost: 1, Duplicated: 1, Where: "here"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// ---------------------------------------------------------------------------
// Config validation: every flag's error names the flag.

func TestValidate(t *testing.T) {
	good := Config{Clients: 2, Size: 100, Duration: time.Second, Batch: 1, Inflight: 1, Timeout: time.Second}
	if err := good.Validate("paxosd", paxosdLimits); err != nil {
		t.Fatalf("good config: %v", err)
	}
	// A system with a lower batch limit of its own, as etcd's 128 operations per transaction.
	small := Limits{MaxBatch: 128, MaxInflight: 1024}
	for _, tc := range []struct {
		system string
		change func(*Config)
		want   string
	}{
		{"paxosd", func(c *Config) { c.Clients = 0 }, "--clients 0"},
		{"paxosd", func(c *Config) { c.Clients = MaxClients + 1 }, "--clients"},
		{"paxosd", func(c *Config) { c.Size = 0 }, "--size 0"},
		{"paxosd", func(c *Config) { c.Size = MinSize - 1 }, "--size"},
		{"paxosd", func(c *Config) { c.Total = 10 }, "not both"},
		{"paxosd", func(c *Config) { c.Duration = 0 }, "--duration or --total"},
		{"paxosd", func(c *Config) { c.Duration = -time.Second }, "--duration"},
		{"paxosd", func(c *Config) { c.Warmup = -time.Second }, "--warmup"},
		{"paxosd", func(c *Config) { c.Rate = -1 }, "--rate"},
		{"paxosd", func(c *Config) { c.Batch = 0 }, "--batch 0"},
		{"small", func(c *Config) { c.Batch = small.MaxBatch + 1 }, "--batch 129: pick 1 to 128 for small"},
		{"small", func(c *Config) { c.Inflight = small.MaxInflight + 1 }, "--inflight 1025: pick 1 to 1024"},
		{"paxosd", func(c *Config) { c.Batch = MaxBatch + 1 }, "--batch"},
		{"paxosd", func(c *Config) { c.Inflight = 0 }, "--inflight 0"},
		{"paxosd", func(c *Config) { c.Inflight = paxosdLimits.MaxInflight + 1 }, "--inflight 33"},
		{"paxosd", func(c *Config) { c.Conns = 3 }, "--conns 3"},
		{"paxosd", func(c *Config) { c.Timeout = 0 }, "--timeout"},
		{"paxosd", func(c *Config) { c.Batch, c.Size = 100, 1<<20 }, "64 MiB"},
		{"paxosd", func(c *Config) { c.RunID = "xyz" }, "run ID"},
	} {
		c := good
		tc.change(&c)
		lim := paxosdLimits
		if tc.system == "small" {
			lim = small
		}
		err := c.Validate(tc.system, lim)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %+v: error %v, want one that mentions %q", tc.system, c, err, tc.want)
		}
	}
	// Open loop with pipelining is a valid combination.
	c := good
	c.Rate, c.Inflight = 100, 4
	if err := c.Validate("paxosd", paxosdLimits); err != nil {
		t.Errorf("--rate with --inflight: %v", err)
	}
}

// ---------------------------------------------------------------------------
// The driver against an in-memory system, with planted faults: the
// read-back must catch them.

// memSystem keeps every value it acknowledges; lose and dup plant faults.
type memSystem struct {
	mu     sync.Mutex
	values [][]byte
	puts   int
	lose   bool // acknowledge every 7th request without keeping it
	dup    bool // keep every 5th request twice
	fail   bool // every 3rd request times out, after keeping its values
}

func (m *memSystem) Name() string   { return "paxosd" }
func (m *memSystem) Limits() Limits { return paxosdLimits }

func (m *memSystem) Begin(context.Context, string, int) (Info, error) {
	return Info{System: "memory", Nodes: 1}, nil
}

func (m *memSystem) Dial(context.Context, int) (Target, error) { return memTarget{m}, nil }

func (m *memSystem) Verify(_ context.Context, w *Written) (Check, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := w.NewTally()
	for _, v := range m.values {
		if id, ok := ParseValue(v); ok {
			t.See(id)
		}
	}
	return t.Result("memory"), nil
}

func (m *memSystem) Close() error { return nil }

type memTarget struct{ m *memSystem }

func (t memTarget) Put(ctx context.Context, op Op) error {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts++
	keep := 1
	switch {
	case m.lose && m.puts%7 == 0:
		keep = 0
	case m.dup && m.puts%5 == 0:
		keep = 2
	}
	for range keep {
		for _, v := range op.Values {
			m.values = append(m.values, bytes.Clone(v))
		}
	}
	if m.fail && m.puts%3 == 0 {
		return context.DeadlineExceeded
	}
	return nil
}

func (t memTarget) Close() error { return nil }

func TestReadBackCatchesFaults(t *testing.T) {
	cfg := Config{Clients: 3, Size: MinSize, Total: 200, Batch: 2, Inflight: 2, Timeout: time.Second}
	for _, tc := range []struct {
		name                string
		sys                 *memSystem
		lost, dup, timeouts bool
	}{
		{name: "correct", sys: &memSystem{}},
		{name: "loses", sys: &memSystem{lose: true}, lost: true},
		{name: "duplicates", sys: &memSystem{dup: true}, dup: true},
		// A timeout is an unknown outcome: an error, never lost.
		{name: "times out", sys: &memSystem{fail: true}, timeouts: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), tc.sys, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Verified {
				t.Fatal("no read-back")
			}
			if (res.Lost > 0) != tc.lost || (res.Duplicated > 0) != tc.dup {
				t.Errorf("lost=%d duplicated=%d, want lost>0 %v, duplicated>0 %v", res.Lost, res.Duplicated, tc.lost, tc.dup)
			}
			if (res.Timeouts > 0) != tc.timeouts || res.Errors != res.Timeouts {
				t.Errorf("errors=%d timeouts=%d, want timeouts>0 %v and every error a timeout", res.Errors, res.Timeouts, tc.timeouts)
			}
			if res.Ops+res.Errors != cfg.Total {
				t.Errorf("ops %d + errors %d, want --total %d", res.Ops, res.Errors, cfg.Total)
			}
			if res.Entries != res.Ops*int64(cfg.Batch) {
				t.Errorf("entries %d for %d ops of %d", res.Entries, res.Ops, cfg.Batch)
			}
		})
	}
}

// TestOpenLoopLatencyFromDue: a system that stalls once charges the stall to
// the requests due during it, which the closed loop would not send.
func TestOpenLoopLatencyFromDue(t *testing.T) {
	sys := &stallSystem{stall: 300 * time.Millisecond}
	res, err := Run(context.Background(), sys, Config{Clients: 1, Size: MinSize, Duration: time.Second, Rate: 100,
		Batch: 1, Inflight: 1, Timeout: 5 * time.Second, NoVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "open" || res.Unsent != 0 {
		t.Errorf("mode %q unsent %d", res.Mode, res.Unsent)
	}
	// 100 requests due, the first stalls 300 ms: about 30 requests queue
	// behind it and are charged from when they were due.
	if res.Ops != 100 {
		t.Errorf("ops %d, want the 100 due", res.Ops)
	}
	if res.P50 >= 50 || res.P95 < 100 || res.Max < 250 {
		t.Errorf("p50 %.1f ms p95 %.1f ms max %.1f ms: want a short median and the stall in the tail", res.P50, res.P95, res.Max)
	}
}

// stallSystem answers at once, except that its first request takes stall.
type stallSystem struct {
	memSystem
	stall time.Duration
	once  sync.Once
}

func (s *stallSystem) Dial(context.Context, int) (Target, error) { return stallTarget{s}, nil }

type stallTarget struct{ s *stallSystem }

func (t stallTarget) Put(ctx context.Context, op Op) error {
	t.s.once.Do(func() {
		timer := time.NewTimer(t.s.stall)
		defer timer.Stop()
		<-timer.C
	})
	return nil
}

func (t stallTarget) Close() error { return nil }

// ---------------------------------------------------------------------------
// paxosd: an in-process 3-node cluster.

type testCluster struct {
	addrs   []string
	servers []*server.Server
}

func startTestCluster(t *testing.T) *testCluster {
	t.Helper()
	var ls []net.Listener
	c := &testCluster{}
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		c.addrs = append(c.addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	peers := map[uint64]string{}
	for i, a := range c.addrs {
		peers[uint64(i+1)] = a
	}
	dir := t.TempDir()
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Stop()
		}
	})
	for i := range c.addrs {
		s, err := server.Start(context.Background(), server.Config{ID: uint64(i + 1), Peers: peers,
			DataDir: filepath.Join(dir, fmt.Sprint(i+1)), Cluster: "bench-test",
			GossipListen: server.GossipOff}) // an OS-picked gossip port could take one picked above for a node not yet started
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		c.servers = append(c.servers, s)
	}
	return c
}

// requiredKeys are the JSON keys `paxosd bench -w json` prints, which the
// side-by-side report (docs/benchmarks.md) relies on.
var requiredKeys = []string{"throughput", "p50_ms", "p99_ms", "p999_ms", "clients", "size", "ops",
	"entries_per_s", "mb_per_s", "errors", "batch", "inflight", "duration_s", "nodes", "fsync", "lost", "duplicated"}

func TestPaxosdCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	c := startTestCluster(t)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"closed loop", Config{Clients: 2, Size: 40, Duration: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond, Batch: 1, Inflight: 1}},
		{"batched", Config{Clients: 2, Size: 40, Total: 40, Batch: 25, Inflight: 4}},
		{"open loop, shared connection", Config{Clients: 3, Conns: 1, Size: 40, Duration: 500 * time.Millisecond, Rate: 200, Batch: 1, Inflight: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys, err := Paxosd.Open(context.Background(), c.addrs, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer sys.Close()
			var progress bytes.Buffer
			cfg := tc.cfg
			cfg.Timeout, cfg.Interval, cfg.Progress = 10*time.Second, 200*time.Millisecond, &syncWriter{w: &progress}
			res, err := Run(context.Background(), sys, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Ops == 0 || !res.Verified || res.Lost != 0 || res.Duplicated != 0 {
				t.Fatalf("ops=%d verified=%v lost=%d duplicated=%d (errors %d: %v)", res.Ops, res.Verified, res.Lost, res.Duplicated, res.Errors, res.ErrorKinds)
			}
			if res.Found < res.Acked || res.Acked < res.Entries {
				t.Errorf("found %d, acknowledged %d, measured entries %d", res.Found, res.Acked, res.Entries)
			}
			if res.Nodes != 3 || !res.Fsync || res.System != "paxosd" {
				t.Errorf("learned nodes=%d fsync=%v system=%q", res.Nodes, res.Fsync, res.System)
			}
			if cfg.Total > 0 && res.Ops+res.Errors != cfg.Total {
				t.Errorf("ops %d + errors %d, want --total %d", res.Ops, res.Errors, cfg.Total)
			}
			if res.Entries != res.Ops*int64(cfg.Batch) || res.EntriesPerS <= 0 || res.MBPerS <= 0 {
				t.Errorf("entries %d (%.0f/s, %.3f MB/s) for %d ops of %d", res.Entries, res.EntriesPerS, res.MBPerS, res.Ops, cfg.Batch)
			}
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range requiredKeys {
				if _, ok := m[k]; !ok {
					t.Errorf("JSON has no %q: %s", k, b)
				}
			}
			if cfg.Duration > 0 && !strings.Contains(progress.String(), "ops/s") {
				t.Errorf("no progress line in %q", progress.String())
			}
		})
	}
}

// syncWriter serializes writes (the progress goroutine writes; the test
// reads after Run returns).
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// ---------------------------------------------------------------------------
// The report: a small fixed results file in, the section and the chart out.

func TestReport(t *testing.T) {
	f, err := os.Open("testdata/results.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := ReadRecords(f)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := NewReport(recs)
	if err != nil {
		t.Fatal(err)
	}
	md := rep.Markdown("benchmarks-sidebyside.svg")
	for _, want := range []string{
		"| paxosd | 1 | 1,020 | 0.95 | 2.10 | 3.50 | 0 | 0 | 0 | 1.20 | 0.40 | 0.10 |",
		"| etcd | 64 | 9,876 | 6.10 | 15.00 | 25.00 | 0 | 0 | 0 |",
		"| zookeeper | 16 | 4,000 | 3.90 | 9.00 | 14.00 | 0 | 0 | 0 |",
		"| baseline | 3 | 16 | 16 | 100 B | 1 | 1 | 7,000 |",
		"| value size | 3 | 16 | 16 | 4 KiB |",
		"| cluster size | 5 |",
		"| batched | 3 | 16 | 16 | 100 B | 100 | 4 | 1,500 | 150,000 | 15.0 |",
		"| shared connection | 3 | 64 | 1 | 100 B | 1 | 1 | 11,000 |",
		"1,000,000 entries", "2.50 s",
		"| etcd | 60, 61, 62 |",
		"bash bench/sidebyside.sh", "AMD EPYC", "etcd 3.4.23", "ZooKeeper 3.8.0",
		"![throughput and latency against clients](benchmarks-sidebyside.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("section does not contain %q:\n%s", want, md)
		}
	}
	// paxosd's own rows come grouped by client count, each group after its
	// baseline.
	order := []string{"| baseline | 3 | 16 |", "| value size | 3 | 16 | 16 | 4 KiB |", "| batched |", "| baseline | 3 | 64 |", "| shared connection |"}
	for i := 1; i < len(order); i++ {
		if a, b := strings.Index(md, order[i-1]), strings.Index(md, order[i]); a < 0 || b < 0 || a > b {
			t.Errorf("%q should come before %q:\n%s", order[i-1], order[i], md)
		}
	}
	// The comparison is sorted: paxosd, etcd, zookeeper; clients ascending.
	if i, j := strings.Index(md, "| paxosd | 64 |"), strings.Index(md, "| etcd | 1 |"); i < 0 || j < 0 || i > j {
		t.Errorf("comparison rows out of order:\n%s", md)
	}

	svg := rep.SVG()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	lines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	if lines != 9 { // 3 systems: throughput, p50, p99
		t.Errorf("%d lines in the chart, want 9", lines)
	}
	for _, want := range []string{"paxosd", "etcd", "zookeeper", "Throughput", "p99 dashed"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("chart does not mention %q", want)
		}
	}
}

func TestReplaceSection(t *testing.T) {
	section := "new text\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"no markers", "# Benchmarks\n\nold\n", "# Benchmarks\n\nold\n\n" + SectionBegin + "\nnew text\n" + SectionEnd + "\n"},
		{"no trailing newline", "# B", "# B\n\n" + SectionBegin + "\nnew text\n" + SectionEnd + "\n"},
		{"markers", "a\n" + SectionBegin + "\nold\nolder\n" + SectionEnd + "\nb\n", "a\n" + SectionBegin + "\nnew text\n" + SectionEnd + "\nb\n"},
	} {
		got, err := ReplaceSection(tc.doc, section)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v\nwant %q", tc.name, got, err, tc.want)
		}
		// Replacing again changes nothing.
		if again, err := ReplaceSection(got, section); err != nil || again != got {
			t.Errorf("%s: not idempotent: %q, %v", tc.name, again, err)
		}
	}
	for _, doc := range []string{SectionEnd + "\n" + SectionBegin, SectionBegin + " only", SectionBegin + SectionEnd + SectionBegin + SectionEnd} {
		if _, err := ReplaceSection(doc, section); err == nil {
			t.Errorf("%q: no error for broken markers", doc)
		}
	}
}
