package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/paxosd/paxosd/internal/testports"
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
		{"paxosd", func(c *Config) { c.ServerPIDs = []int{1, -2} }, "--server-pids"},
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
	c := &testCluster{addrs: testports.Addrs(t, 3)}
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
		// The cluster runs in this process, so its CPU is this process's.
		{"closed loop", Config{Clients: 2, Size: 40, Duration: 1500 * time.Millisecond, Warmup: 300 * time.Millisecond, Batch: 1, Inflight: 1,
			ServerPIDs: []int{os.Getpid()}}},
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
			if measured := len(cfg.ServerPIDs) > 0; measured != (res.ServerCPUS > 0 && res.ServerCPUPerOpUS > 0) ||
				res.ServerCPUPerOpUS != 0 && math.Abs(res.ServerCPUPerOpUS*float64(res.Ops)/1e6-res.ServerCPUS) > 0.01 {
				t.Errorf("server PIDs %v: server CPU %.3f s, %.1f µs per request of %d", cfg.ServerPIDs, res.ServerCPUS, res.ServerCPUPerOpUS, res.Ops)
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
		// The median round of each (by throughput, with its latencies), the
		// configuration it ran in, the median of the rounds' CPU per append
		// (paxosd at 64: 210 of 210, 190 and 230, though the median round
		// had 230), and every round in file order.
		"| paxosd | 1 | one connection, master only | 715 | 1.00x | 1.29 | 2.90 | 1400 | 715, 740, 700 | 1.20 | 0.40 | 0.10 |",
		"| paxosd | 64 | one shared connection, master only | 5,761 | 0.99x | 9.90 | 24.10 | 210 | 5,235, 6,136, 5,761 |",
		"| etcd | 64 | one shared connection, all endpoints | 5,811 | 1.00x | 10.50 | 28.40 | 150 | 5,811, 7,468, 5,216 |",
		"| zookeeper | 64 | a connection per client, all endpoints | 7,870 | 1.35x | 6.90 | 26.60 | 170 |",
		"Over all the rounds: 0 errors, 0 values lost, 0 duplicated.",
		// The configurations tried.
		"| etcd | 64 | a connection per client, leader only | 5,000 |",
		"| zookeeper | 1 | one connection, all endpoints | 500 |",
		// The checks, and a tool that did not run.
		"| paxosd | 64 | ghz | 4,770 | 12.00 | 30.00 | 4,800 | 12.50 | 31.00 |",
		"| etcd | | etcd-benchmark | not built: a reason |",
		// paxosd's own experiments, start-up, memory, the machine.
		"| batched | 3 | 16 | 16 | 100 B | 100 | 4 | 1,500 | 150,000 | 15.0 |",
		"| value size | 3 | 16 | 16 | 4 KiB |",
		"| cluster size | 5 |",
		"1,000,000 entries", "2.50 s",
		"| etcd | 60, 61, 62 |",
		"bash bench/sidebyside.sh", "AMD EPYC", "etcd 3.4.23", "ZooKeeper 3.8.0", "BENCH_ROUNDS",
		"![throughput and latency against clients](benchmarks-sidebyside.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("section does not contain %q:\n%s", want, md)
		}
	}
	// The comparison is sorted: paxosd, etcd, zookeeper; clients ascending.
	if i, j := strings.Index(md, "| paxosd | 64 |"), strings.Index(md, "| etcd | 1 | one"); i < 0 || j < 0 || i > j {
		t.Errorf("comparison rows out of order:\n%s", md)
	}
	recsCopy := slices.Clone(recs)
	for _, tc := range []struct {
		system  string
		clients int
		want    string
	}{{"paxosd", 64, SetupSharedLeader}, {"etcd", 64, SetupSharedAll}, {"zookeeper", 64, SetupOwnAll}, {"etcd", 1, SetupOwnLeader}} {
		if got, err := BestSetup(recsCopy, tc.system, tc.clients); err != nil || got != tc.want {
			t.Errorf("BestSetup(%s, %d) = %q, %v; want %q", tc.system, tc.clients, got, err, tc.want)
		}
	}
	if _, err := BestSetup(recsCopy, "paxosd", 16); err == nil {
		t.Error("BestSetup with no pick runs: no error")
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

// ---------------------------------------------------------------------------
// Server CPU: /proc/PID/stat and the clock tick rate.

func TestClockTicksMatchesGetconf(t *testing.T) {
	hz, err := ClockTicks()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		t.Skipf("getconf CLK_TCK: %v (ClockTicks says %d)", err, hz)
	}
	if want, _ := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); hz != want {
		t.Fatalf("ClockTicks %d, getconf CLK_TCK %d", hz, want)
	}
}

func TestStatTicks(t *testing.T) {
	// A command name with spaces and a ')' of its own; utime 1234, stime 56.
	stat := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 9 0 100 1000 200\n"
	got, err := statTicks([]byte(stat))
	if err != nil || got != 1290 {
		t.Fatalf("statTicks = %d, %v; want 1290", got, err)
	}
	if _, err := statTicks([]byte("4242 (x) S 1 2")); err == nil {
		t.Fatal("a short stat line parsed")
	}
}

// TestProcessCPUCounts: this process's CPU time, as ProcessCPU reads it,
// grows while the test burns CPU (until it has grown by 50 ms, or a
// generous deadline), and an unknown PID is an error.
func TestProcessCPUCounts(t *testing.T) {
	self := []int{os.Getpid()}
	before, err := ProcessCPU(self)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	x := uint64(1)
	for {
		for range 1 << 20 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		now, err := ProcessCPU(self)
		if err != nil {
			t.Fatal(err)
		}
		if now-before >= 50*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time grew %v in 60 s of spinning (x=%d)", now-before, x)
		}
	}
	if _, err := ProcessCPU([]int{0}); err == nil {
		t.Fatal("ProcessCPU of PID 0: no error")
	}
}

// ---------------------------------------------------------------------------
// The outside tools' outputs (real ones, from a trial run; ghz's per-request
// details cut to two).

func TestParseGhz(t *testing.T) {
	b, err := os.ReadFile("testdata/ghz.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseGhz(b)
	if err != nil {
		t.Fatal(err)
	}
	// 11,037 OK in 4.010035873 s; the 64 cut when the duration ended are
	// not counted.
	if want := 11037 / 4.010035873; math.Abs(got.Throughput-want) > 0.01 || got.P50 <= 0 || got.P99 < got.P50 {
		t.Fatalf("ParseGhz = %+v, want throughput %.2f and p50 <= p99", got, want)
	}
	// Any other error, or more cut requests than workers, refuses it.
	for _, bad := range []string{
		strings.Replace(string(b), "transport is closing", "deadline exceeded", 1),
		strings.Replace(string(b), `transport is closing": 64`, `transport is closing": 65`, 1),
	} {
		if bad == string(b) {
			t.Fatal("the sample changed: the replacement did not apply")
		}
		if _, err := ParseGhz([]byte(bad)); err == nil {
			t.Errorf("accepted a report with other errors")
		}
	}
}

func TestParseEtcdBenchmark(t *testing.T) {
	b, err := os.ReadFile("testdata/etcd-benchmark.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseEtcdBenchmark(b)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got.Throughput-400.331) > 0.001 || math.Abs(got.P50-1.983859) > 1e-6 || math.Abs(got.P99-11.995368) > 1e-6 {
		t.Fatalf("ParseEtcdBenchmark = %+v", got)
	}
	if _, err := ParseEtcdBenchmark([]byte("Summary:\n")); err == nil {
		t.Error("accepted a summary without figures")
	}
}
