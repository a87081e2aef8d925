package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
)

// MaxSize bounds --size: paxosd's own limit on an entry
// (api.DefaultMaxEntryBytes by default, api.MaxEntryBytesLimit at most).
const MaxSize = api.MaxEntryBytesLimit

// MaxBatch bounds --batch for every system (paxosd packs at most 4096
// entries into one instance); a system's Limits may bound it lower.
const MaxBatch = 4096

// verifyTimeout bounds the read-back after a run.
const verifyTimeout = 10 * time.Minute

// Config is one run.
type Config struct {
	Clients int // concurrent clients
	// Conns is how many connections the clients share, client c using
	// connection c mod Conns (0: one per client).
	Conns int
	Size  int // bytes per value
	// Exactly one of Duration and Total: how long to measure, or how many
	// requests to measure (after Warmup either way).
	Duration time.Duration
	Total    int64
	Warmup   time.Duration // runs first; not in the numbers
	// Rate, when above 0, is the open loop: requests per second over all
	// clients, each due at a fixed time, latency measured from then.
	Rate     float64
	Batch    int           // values per request
	Inflight int           // requests each client keeps outstanding
	Timeout  time.Duration // per request
	// Every Interval, a line of the last interval's numbers goes to
	// Progress (0 or nil: none).
	Interval time.Duration
	Progress io.Writer
	NoVerify bool   // skip the read-back
	RunID    string // 8 hexadecimal digits; "" picks a random one
	// ServerPIDs are the processes of the system under test, on this
	// machine: their user and system CPU time over the measured part goes
	// into the result (none: not measured).
	ServerPIDs []int
}

// DefaultConfig is `paxosd bench` without flags: 16 clients, 100 B values,
// 10 s measured after a 1 s warmup, closed loop, one value per request and
// one request outstanding per client, a progress line every 5 s.
func DefaultConfig() Config {
	return Config{Clients: 16, Size: 100, Duration: 10 * time.Second, Warmup: time.Second,
		Batch: 1, Inflight: 1, Timeout: 10 * time.Second, Interval: 5 * time.Second}
}

// Validate says which field of c is wrong for system, whose limits are
// lim, in terms of the command's flags.
func (c Config) Validate(system string, lim Limits) error {
	maxB, maxInflight := MaxBatch, lim.MaxInflight
	if lim.MaxBatch > 0 {
		maxB = min(lim.MaxBatch, MaxBatch)
	}
	switch {
	case c.Clients < 1 || c.Clients > MaxClients:
		return fmt.Errorf("--clients %d: pick 1 to %d", c.Clients, MaxClients)
	case c.Conns < 0 || c.Conns > c.Clients:
		return fmt.Errorf("--conns %d: pick 1 to --clients (%d), or 0 for one per client", c.Conns, c.Clients)
	case c.Size < MinSize || c.Size > MaxSize:
		return fmt.Errorf("--size %d: pick %d to %d bytes (a value starts with its %d-byte identity)", c.Size, MinSize, MaxSize, MinSize)
	case c.Duration > 0 && c.Total > 0:
		return errors.New("--duration and --total: give one of them, not both")
	case c.Duration < 0:
		return fmt.Errorf("--duration %v: must be positive", c.Duration)
	case c.Total < 0:
		return fmt.Errorf("--total %d: must be positive", c.Total)
	case c.Duration == 0 && c.Total == 0:
		return errors.New("give --duration or --total")
	case c.Warmup < 0:
		return fmt.Errorf("--warmup %v: must be 0 or positive", c.Warmup)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("--rate %v: requests per second above 0 (or 0 for the closed loop)", c.Rate)
	case c.Batch < 1 || c.Batch > maxB:
		return fmt.Errorf("--batch %d: pick 1 to %d for %s", c.Batch, maxB, system)
	case c.Inflight < 1 || c.Inflight > maxInflight:
		return fmt.Errorf("--inflight %d: pick 1 to %d for %s", c.Inflight, maxInflight, system)
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout %v: must be positive", c.Timeout)
	case c.Interval < 0:
		return fmt.Errorf("--interval %v: must be 0 (no progress lines) or positive", c.Interval)
	case slices.ContainsFunc(c.ServerPIDs, func(p int) bool { return p <= 0 }):
		return fmt.Errorf("--server-pids %v: process IDs are positive", c.ServerPIDs)
	case c.RunID != "" && !validRunID(c.RunID):
		return fmt.Errorf("run ID %q: want %d hexadecimal digits", c.RunID, runIDLen)
	}
	if int64(c.Batch)*int64(c.Size) > api.MaxMessageBytes {
		return fmt.Errorf("--batch %d of --size %d: a request of %d MiB is over the %d MiB a request may carry", c.Batch, c.Size, int64(c.Batch)*int64(c.Size)>>20, api.MaxMessageBytes>>20)
	}
	return nil
}

func validRunID(s string) bool {
	if len(s) != runIDLen {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Result is what a run measured; its JSON is `paxosd bench -w json`.
type Result struct {
	System    string   `json:"system"`
	Version   string   `json:"version,omitempty"`
	Endpoints []string `json:"endpoints,omitempty"`
	Nodes     int      `json:"nodes"`
	Fsync     bool     `json:"fsync"`
	Run       string   `json:"run"`
	Start     string   `json:"start"` // RFC 3339, when the clients started

	Mode     string  `json:"mode"` // "closed" or "open"
	Rate     float64 `json:"rate"` // open loop: requests per second due
	Clients  int     `json:"clients"`
	Conns    int     `json:"conns"`
	Size     int     `json:"size"`
	Batch    int     `json:"batch"`
	Inflight int     `json:"inflight"`
	WarmupS  float64 `json:"warmup_s"`

	// The measured part (after the warmup).
	DurationS float64 `json:"duration_s"`
	Ops       int64   `json:"ops"`     // requests acknowledged
	Entries   int64   `json:"entries"` // values in them
	Errors    int64   `json:"errors"`  // requests that failed (timeouts included)
	Timeouts  int64   `json:"timeouts"`
	// The distinct error messages, warmup included, most frequent first.
	ErrorKinds  []ErrorKind `json:"error_kinds,omitempty"`
	Unsent      int64       `json:"unsent"`     // open loop: requests due that were never sent (the system fell behind)
	Throughput  float64     `json:"throughput"` // ops/s
	EntriesPerS float64     `json:"entries_per_s"`
	MBPerS      float64     `json:"mb_per_s"` // of values (1 MB = 10^6 B)
	P50         float64     `json:"p50_ms"`
	P95         float64     `json:"p95_ms"`
	P99         float64     `json:"p99_ms"`
	P999        float64     `json:"p999_ms"`
	Max         float64     `json:"max_ms"`
	Mean        float64     `json:"mean_ms"`
	// With Config.ServerPIDs: the servers' user+system CPU time from the
	// warmup's end until the last client stopped, and that time per
	// request measured (Ops).
	ServerCPUS       float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPerOpUS float64 `json:"server_cpu_us_per_op,omitempty"`

	// The read-back, over every request of the run, warmup included.
	Verified   bool   `json:"verified"`
	Acked      int64  `json:"acked"` // values acknowledged
	Found      int64  `json:"found"` // values of the run found, duplicates included
	Lost       int64  `json:"lost"`
	Duplicated int64  `json:"duplicated"`
	Checked    string `json:"checked,omitempty"` // where it read

	Interrupted bool `json:"interrupted,omitempty"`
}

// Run runs cfg against sys: it dials the clients, runs the warmup and the
// measured part, and reads back what was written (unless cfg.NoVerify).
// When ctx ends early, the clients stop, the requests in flight finish, and
// Run returns what it measured with Interrupted set and no read-back.
func Run(ctx context.Context, sys System, cfg Config) (*Result, error) {
	if err := cfg.Validate(sys.Name(), sys.Limits()); err != nil {
		return nil, err
	}
	if cfg.RunID == "" {
		var b [runIDLen / 2]byte
		rand.Read(b[:])
		cfg.RunID = hex.EncodeToString(b[:])
	}
	if cfg.Conns == 0 {
		cfg.Conns = cfg.Clients
	}
	if len(cfg.ServerPIDs) > 0 {
		if _, err := ProcessCPU(cfg.ServerPIDs); err != nil {
			return nil, fmt.Errorf("--server-pids: %w", err)
		}
	}
	info, err := sys.Begin(ctx, cfg.RunID, cfg.Clients)
	if err != nil {
		return nil, err
	}
	targets := make([]Target, cfg.Conns)
	defer func() {
		for _, t := range targets {
			if t != nil {
				t.Close()
			}
		}
	}()
	for i := range targets {
		if targets[i], err = sys.Dial(ctx, i); err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
	}

	written := NewWritten(cfg.RunID, cfg.Clients)
	rec := newRecorder()
	start := time.Now()
	d := newDriver(cfg, start, rec, written)

	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		rec.progress(start, cfg, stopProgress)
	}()

	var cpu *cpuWindow
	if len(cfg.ServerPIDs) > 0 {
		cpu = startCPUWindow(d.warmupEnd, cfg.ServerPIDs)
	}
	var wg sync.WaitGroup
	for c := range cfg.Clients {
		for range cfg.Inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.slot(ctx, c, targets[c%len(targets)])
			}()
		}
	}
	wg.Wait()
	close(stopProgress)
	<-progressDone

	res := d.result(info, time.Now(), ctx.Err() != nil)
	if cpu != nil {
		used, err := cpu.end()
		if err != nil && !res.Interrupted {
			return res, fmt.Errorf("server CPU: %w", err)
		}
		if err == nil {
			res.ServerCPUS = used.Seconds()
			if res.Ops > 0 {
				res.ServerCPUPerOpUS = float64(used.Microseconds()) / float64(res.Ops)
			}
		}
	}
	res.Run, res.Start = cfg.RunID, start.UTC().Format(time.RFC3339)
	res.Acked = written.Acked()
	if res.Interrupted || cfg.NoVerify {
		return res, nil
	}
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	check, err := sys.Verify(vctx, written)
	if err != nil {
		return res, fmt.Errorf("read-back: %w", err)
	}
	res.Verified, res.Found, res.Lost, res.Duplicated, res.Checked = true, check.Found, check.Lost, check.Duplicated, check.Where
	return res, nil
}

// driver hands out requests: which client sends which entries, and when.
type driver struct {
	cfg       Config
	rec       *recorder
	written   *Written
	warmupEnd time.Time
	end       time.Time // no request starts (closed) or is due (open) at or after it; zero: none
	// closed loop with Total: measured requests started so far.
	started atomic.Int64
	// per client: the next request number.
	next []atomic.Uint64
	// open loop: request k over all clients is due at start + k/Rate;
	// measured requests are k in [k0, kEnd).
	start    time.Time
	k0, kEnd uint64
	sent     atomic.Int64 // open loop: measured requests sent
}

func newDriver(cfg Config, start time.Time, rec *recorder, written *Written) *driver {
	d := &driver{cfg: cfg, rec: rec, written: written, warmupEnd: start.Add(cfg.Warmup), start: start,
		next: make([]atomic.Uint64, cfg.Clients)}
	if cfg.Rate > 0 {
		d.k0 = uint64(math.Ceil(cfg.Warmup.Seconds() * cfg.Rate))
		if cfg.Total > 0 {
			d.kEnd = d.k0 + uint64(cfg.Total)
		} else {
			d.kEnd = uint64(math.Ceil((cfg.Warmup + cfg.Duration).Seconds() * cfg.Rate))
		}
		d.end = d.due(d.kEnd)
	} else if cfg.Duration > 0 {
		d.end = d.warmupEnd.Add(cfg.Duration)
	}
	return d
}

func (d *driver) due(k uint64) time.Time {
	return d.start.Add(time.Duration(float64(k) / d.cfg.Rate * float64(time.Second)))
}

// slot is one outstanding request of client c, sent again and again until
// the run ends.
func (d *driver) slot(ctx context.Context, c int, t Target) {
	buf := make([]byte, 0, d.cfg.Batch*d.cfg.Size)
	values := make([][]byte, d.cfg.Batch)
	// Requests in flight finish even when ctx ends: their outcome is known.
	opCtx := context.WithoutCancel(ctx)
	var timer *time.Timer
	for ctx.Err() == nil {
		j := d.next[c].Add(1) - 1
		var began time.Time // latency counts from here
		var measured bool
		if d.cfg.Rate > 0 {
			k := j*uint64(d.cfg.Clients) + uint64(c)
			if k >= d.kEnd {
				return
			}
			began, measured = d.due(k), k >= d.k0
			if wait := time.Until(began); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-ctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				}
			}
			// A system far behind the schedule: give up on the rest, which
			// the result counts as unsent.
			if time.Since(d.end) > d.cfg.Timeout {
				return
			}
			if measured {
				d.sent.Add(1)
			}
		} else {
			began = time.Now()
			if !d.end.IsZero() && !began.Before(d.end) {
				return
			}
			measured = !began.Before(d.warmupEnd)
			if measured && d.cfg.Total > 0 && d.started.Add(1) > d.cfg.Total {
				return
			}
		}
		n := j * uint64(d.cfg.Batch)
		buf = buf[:0]
		for i := range values {
			off := len(buf)
			buf = appendValue(buf, Identity{Run: d.written.Run, Client: c, N: n + uint64(i)}, d.cfg.Size)
			values[i] = buf[off:len(buf):len(buf)]
		}
		rctx, cancel := context.WithTimeout(opCtx, d.cfg.Timeout)
		err := t.Put(rctx, Op{Client: c, Seq: j + 1, N: n, Values: values})
		cancel()
		if err == nil {
			d.written.Ack(c, n, len(values))
		}
		d.rec.record(measured, began, time.Now(), len(values), err)
	}
}

// result turns the recorder's counts into a Result at time now.
func (d *driver) result(info Info, now time.Time, interrupted bool) *Result {
	cfg, rec := d.cfg, d.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	stop := now
	if !interrupted {
		stop = rec.lastDone
		if d.end.After(stop) {
			stop = d.end
		}
	}
	elapsed := max(stop.Sub(d.warmupEnd), 0)
	r := &Result{System: info.System, Version: info.Version, Nodes: info.Nodes, Fsync: info.Fsync,
		Mode: "closed", Rate: cfg.Rate, Clients: cfg.Clients, Conns: cfg.Conns, Size: cfg.Size, Batch: cfg.Batch, Inflight: cfg.Inflight,
		WarmupS: cfg.Warmup.Seconds(), DurationS: elapsed.Seconds(),
		Ops: rec.ops, Entries: rec.entries, Errors: rec.errors, Timeouts: rec.timeouts, Interrupted: interrupted}
	if cfg.Rate > 0 {
		r.Mode = "open"
		if !interrupted {
			r.Unsent = int64(d.kEnd-d.k0) - d.sent.Load()
		}
	}
	if s := elapsed.Seconds(); s > 0 {
		r.Throughput = float64(r.Ops) / s
		r.EntriesPerS = float64(r.Entries) / s
		r.MBPerS = float64(r.Entries) * float64(cfg.Size) / s / 1e6
	}
	h := rec.total
	r.P50, r.P95, r.P99, r.P999 = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(95)), ms(h.ValueAtQuantile(99)), ms(h.ValueAtQuantile(99.9))
	r.Max, r.Mean = ms(h.Max()), h.Mean()/1000
	r.ErrorKinds = rec.errorKindList()
	return r
}

// ms converts the histograms' microseconds to milliseconds.
func ms(us int64) float64 { return float64(us) / 1000 }

// isTimeout says whether err is a request that ran out of time: its
// outcome is unknown.
func isTimeout(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}

// cpuWindow measures the CPU time of processes from a moment (the
// warmup's end) until end is called.
type cpuWindow struct {
	pids  []int
	timer *time.Timer
	done  chan struct{} // closed once the first reading is taken
	at    time.Duration
	err   error
}

func startCPUWindow(at time.Time, pids []int) *cpuWindow {
	w := &cpuWindow{pids: pids, done: make(chan struct{})}
	w.timer = time.AfterFunc(time.Until(at), func() {
		w.at, w.err = ProcessCPU(pids)
		close(w.done)
	})
	return w
}

// end returns the CPU time used since the window's start, or an error when
// the start had not come yet or a process could not be read.
func (w *cpuWindow) end() (time.Duration, error) {
	if w.timer.Stop() {
		return 0, errors.New("the run ended before its warmup did")
	}
	<-w.done
	if w.err != nil {
		return 0, w.err
	}
	now, err := ProcessCPU(w.pids)
	if err != nil {
		return 0, err
	}
	return now - w.at, nil
}
