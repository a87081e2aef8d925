// Package chaos runs Jepsen-style fault tests of real paxosd clusters: 3 or
// 5 `paxosd server` processes on 127.0.0.1 whose peer links all go through
// fault-injecting TCP proxies (proxy.go), a nemesis that partitions, delays,
// loses, kills, restarts and pauses on a seeded schedule (nemesis.go), and
// clients that append unique values and read, recording every operation
// with its invoke and complete times and outcome (workload.go). Each round
// ends by healing everything, requiring progress, waiting for the nodes to
// converge, reading every node's whole log and checking the history with
// checker.Check and checker.CheckPorcupine.
//
// The tests (chaos_test.go) build the paxosd binary and call Run. See
// docs/testing.md for the fault model and what is claimed.
package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/client"
)

// Config sets up one chaos run.
type Config struct {
	Binary string // the paxosd binary (built with -tags paxosd_bugs when Bug is set)
	Nodes  int    // 3 or 5
	Seed   uint64
	// Duration is the total time faults are injected, over all rounds.
	// Round is the fault time between two checks (default: Duration).
	Duration, Round time.Duration
	// Weights bias the nemesis (nil: every fault alike). MinHold, when
	// set, is the least time partitions and pauses are held.
	Weights map[Fault]int
	MinHold time.Duration
	// Clients by role (nil: a default mix of 6 clients, 8 with 5 nodes).
	Roles []Role
	Bug   string // plant this bug in every node (--bug)
	// Security, when set, runs the nodes with TLS and authentication,
	// and every client of the harness with its credentials.
	Security *Security
	// OutDir receives the node logs, the history and Porcupine's HTML. It
	// is removed after a clean run unless KeepOut is set.
	OutDir  string
	KeepOut bool
	// Deadline, when set, is when the run must be over (the test's): no
	// round starts that could not be checked by then.
	Deadline time.Time
	Logf     func(format string, args ...any)
}

// Report is the outcome of a run.
type Report struct {
	Seed    uint64
	Nodes   int
	Bug     string
	Rounds  int
	Elapsed time.Duration
	// Ops counts operations by kind ("append-eo", "read-lin", ...) and
	// outcome ("ok", "fail", "unknown").
	Ops map[string]map[string]int
	// Faults counts the faults injected, by kind.
	Faults        map[string]int
	TrimsSent     int
	TrimsOK       int
	FinalLen      int // entries in the final log
	Check         checker.Result
	Porcupine     checker.PorcupineResult
	Proxy         ProxyStats
	MasterChanges int
	// Violations are broken safety claims: the checkers' findings, logs that
	// differ, a tail that skipped. CaughtAt is when the check that found the
	// first one finished (since the run began).
	Violations []string
	CaughtAt   time.Duration
	// Liveness lists progress that did not happen after healing; Crashes
	// lists processes that died by themselves, panicked or raced.
	Liveness []string
	Crashes  []string
	// Notes say what else a reader of the summary should know.
	Notes  []string
	OutDir string
}

// OK reports whether the run found nothing wrong.
func (r *Report) OK() bool { return len(r.Violations)+len(r.Liveness)+len(r.Crashes) == 0 }

// Summary describes the run in a few lines.
func (r *Report) Summary() string {
	var b strings.Builder
	bug := ""
	if r.Bug != "" {
		bug = ", planted bug " + r.Bug
	}
	fmt.Fprintf(&b, "chaos: seed %d, %d nodes%s, %d round(s) in %v\n", r.Seed, r.Nodes, bug, r.Rounds, r.Elapsed.Round(time.Second))
	kinds := make([]string, 0, len(r.Ops))
	total := 0
	for k, m := range r.Ops {
		kinds = append(kinds, k)
		for _, n := range m {
			total += n
		}
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "  operations: %d\n", total)
	for _, k := range kinds {
		m := r.Ops[k]
		fmt.Fprintf(&b, "    %-16s ok %6d  fail %6d  unknown %6d\n", k, m["ok"], m["fail"], m["unknown"])
	}
	faults := make([]string, 0, len(r.Faults))
	for f, n := range r.Faults {
		faults = append(faults, fmt.Sprintf("%s %d", f, n))
	}
	sort.Strings(faults)
	fmt.Fprintf(&b, "  faults: %s\n", strings.Join(faults, ", "))
	fmt.Fprintf(&b, "  trims: %d sent, %d acknowledged; final log %d entries; master changes seen %d\n", r.TrimsSent, r.TrimsOK, r.FinalLen, r.MasterChanges)
	fmt.Fprintf(&b, "  proxies: %d connections, %d refused, %d broken, %d MB forwarded\n", r.Proxy.Conns, r.Proxy.Refused, r.Proxy.Broken, r.Proxy.Bytes>>20)
	fmt.Fprintf(&b, "  checker: %s\n", strings.SplitN(r.Check.String(), "\n", 2)[0])
	fmt.Fprintf(&b, "  %s\n", r.Porcupine)
	verdict := "OK: no violation"
	if !r.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "  verdict: %s", verdict)
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "\n  violation: %s", v)
	}
	for _, v := range r.Liveness {
		fmt.Fprintf(&b, "\n  liveness: %s", v)
	}
	for _, v := range r.Crashes {
		fmt.Fprintf(&b, "\n  crash: %s", v)
	}
	for _, v := range r.Notes {
		fmt.Fprintf(&b, "\n  note: %s", v)
	}
	if r.OutDir != "" {
		fmt.Fprintf(&b, "\n  logs, history and visualizations kept in %s", r.OutDir)
	}
	return b.String()
}

// Run runs the chaos test cfg describes: rounds of faults, each followed by
// a heal and a full check, until cfg.Duration of faults have run or a round
// finds a violation.
func Run(cfg Config) (*Report, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.Round <= 0 || cfg.Round > cfg.Duration {
		cfg.Round = cfg.Duration
	}
	if cfg.Roles == nil {
		cfg.Roles = []Role{ExactlyOnce, ExactlyOnce, ExactlyOnce, Plain, Plain, Reader, Large}
		if cfg.Nodes >= 5 {
			cfg.Roles = append(cfg.Roles, ExactlyOnce, Reader)
		}
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	// Everything the run logs goes to run.log in OutDir too.
	runLog, err := os.Create(filepath.Join(cfg.OutDir, "run.log"))
	if err != nil {
		return nil, err
	}
	defer runLog.Close()
	var logMu sync.Mutex
	logf := cfg.Logf
	cfg.Logf = func(format string, args ...any) {
		logMu.Lock()
		fmt.Fprintf(runLog, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
		logMu.Unlock()
		logf(format, args...)
	}
	start := time.Now()
	rep := &Report{Seed: cfg.Seed, Nodes: cfg.Nodes, Bug: cfg.Bug, Ops: map[string]map[string]int{}}
	c, err := NewCluster(ClusterOptions{Binary: cfg.Binary, Nodes: cfg.Nodes, Dir: cfg.OutDir, Bug: cfg.Bug, Seed: cfg.Seed, Security: cfg.Security, Logf: cfg.Logf})
	if err != nil {
		return nil, err
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	if m := waitMaster(c, 60*time.Second); m < 0 {
		return nil, fmt.Errorf("no master within 60s of starting %d nodes; see the logs in %s", cfg.Nodes, cfg.OutDir)
	}
	rec := NewRecorder()
	w, err := NewWorkload(c, rec, cfg.Roles, cfg.Seed)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	tr, err := NewTrimmer(c, w, cfg.Seed, cfg.Logf)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	nem := NewNemesis(c, tr, cfg.Seed, cfg.Weights, cfg.Logf)
	nem.start = rec.base // the nemesis logs times on the history's clock
	nem.minHold = cfg.MinHold
	mon := newMonitor(c)

	var final []string
	for done := time.Duration(0); done < cfg.Duration && rep.OK(); done += cfg.Round {
		round := min(cfg.Round, cfg.Duration-done)
		// A round's check takes at most about 4 minutes (clients 10 s,
		// probe 60 s, convergence 120 s, reading and checking), 2 more in
		// the rare round whose nodes restored at its end converge slowly.
		if !cfg.Deadline.IsZero() && time.Until(cfg.Deadline) < round+4*time.Minute {
			rep.Notes = append(rep.Notes, fmt.Sprintf("stopped after %v of faults: the test's deadline is near", done))
			break
		}
		rep.Rounds++
		cfg.Logf("round %d: %v of faults (seed %d, %d nodes)", rep.Rounds, round, cfg.Seed, cfg.Nodes)
		ctx, cancel := context.WithTimeout(context.Background(), round)
		w.Start(rep.Rounds)
		var bg sync.WaitGroup
		bg.Add(2)
		go func() { defer bg.Done(); tr.Run(ctx) }()
		go func() { defer bg.Done(); mon.run(ctx) }()
		nem.Run(ctx) // returns at the deadline, everything healed
		cancel()
		bg.Wait()
		rep.Violations = append(rep.Violations, mon.problems()...)
		final = checkRound(c, w, tr, rec, rep, cfg)
		if len(rep.Violations) > 0 && rep.CaughtAt == 0 {
			rep.CaughtAt = time.Since(start)
		}
	}
	rep.Proxy = c.ProxyStats()
	closed = true
	if err := c.Close(); err != nil {
		rep.Crashes = append(rep.Crashes, err.Error())
	}
	for _, p := range append(c.Exits(), c.LogProblems()...) {
		if !slices.Contains(rep.Crashes, p) {
			rep.Crashes = append(rep.Crashes, p) // while stopping
		}
	}
	rep.Faults = nem.Counts()
	rep.TrimsSent, rep.TrimsOK = tr.Counts()
	rep.MasterChanges = mon.changes()
	rep.FinalLen = len(final)
	hist, kinds, nodes := rec.History()
	for i, op := range hist {
		m := rep.Ops[kinds[i]]
		if m == nil {
			m = map[string]int{}
			rep.Ops[kinds[i]] = m
		}
		m[[...]string{"ok", "fail", "unknown"}[op.Status]]++
	}
	if r := w.Resends(); len(r) > 0 {
		rep.Ops["append-eo-resend"] = r
	}
	rep.Elapsed = time.Since(start)
	if !rep.OK() || cfg.KeepOut {
		rep.OutDir = cfg.OutDir
		if err := writeHistory(filepath.Join(cfg.OutDir, "history.jsonl"), hist, kinds, nodes); err != nil {
			cfg.Logf("writing the history: %v", err)
		}
		if err := writeLines(filepath.Join(cfg.OutDir, "final-log.txt"), final); err != nil {
			cfg.Logf("writing the final log: %v", err)
		}
	}
	return rep, nil
}

// checkRound heals, stops the clients, requires progress and convergence,
// reads every node's log and checks the history; it returns the final log.
func checkRound(c *Cluster, w *Workload, tr *Trimmer, rec *Recorder, rep *Report, cfg Config) []string {
	logf := cfg.Logf
	begin := time.Now()
	w.Stop()
	stopped := time.Since(begin)
	// Progress: one exactly-once append must succeed within a minute.
	probe, ok := probeAppend(c, rec, 60*time.Second)
	probed := time.Since(begin)
	if !ok {
		rep.Liveness = append(rep.Liveness, "no exactly-once append succeeded within 60s of healing every fault")
	}
	// Convergence: every node reaches the same end of the log (the nodes
	// killed for good are still down: the survivors, then).
	want := uint64(0)
	if ok {
		want = probe + 1
	}
	if err := waitConverged(c, want, 120*time.Second); err != nil {
		rep.Liveness = append(rep.Liveness, err.Error())
	}
	// The faults that last the round end now: the nodes killed for good
	// come back, clocks are put right; then every node converges.
	if restored := c.Restore(); len(restored) > 0 {
		logf("round %d: %s", rep.Rounds, strings.Join(restored, "; "))
		if err := waitConverged(c, want, 120*time.Second); err != nil {
			rep.Liveness = append(rep.Liveness, err.Error()+" (after "+strings.Join(restored, "; ")+")")
		}
	}
	logf("round %d healed: clients stopped after %v, probe append done after %v, nodes converged after %v", rep.Rounds,
		stopped.Round(time.Millisecond), probed.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	archive := tr.Archive()
	logs := make([][]string, c.N())
	firsts := make([]uint64, c.N())
	var final []string
	for i := range c.Addrs {
		first, vals, err := c.ReadAll(context.Background(), i)
		if err != nil {
			rep.Liveness = append(rep.Liveness, fmt.Sprintf("reading node %d's log: %v", i+1, err))
			continue
		}
		if first > uint64(len(archive)) {
			rep.Violations = append(rep.Violations, fmt.Sprintf("node %d's log starts at %d, past the %d entries archived before trims", i+1, first, len(archive)))
			continue
		}
		full := append(append([]string(nil), archive[:first]...), vals...)
		for k := first; k < uint64(len(archive)) && k < uint64(len(full)); k++ {
			if full[k] != archive[k] {
				rep.Violations = append(rep.Violations, fmt.Sprintf("logs differ: node %d holds %q at index %d, where %q was read (from some node) before a trim", i+1, full[k], k, archive[k]))
				break
			}
		}
		logs[i], firsts[i] = full, first
		if len(full) > len(final) {
			final = full
		}
	}
	for i, l := range logs {
		if l == nil {
			continue
		}
		if len(l) != len(final) {
			rep.Violations = append(rep.Violations, fmt.Sprintf("logs differ: node %d has %d entries, another node %d (after healing and waiting)", i+1, len(l), len(final)))
		}
		for k := range min(len(l), len(final)) {
			if l[k] != final[k] {
				rep.Violations = append(rep.Violations, fmt.Sprintf("logs differ: node %d holds %q at index %d where another node holds %q", i+1, l[k], k, final[k]))
				break
			}
		}
	}
	rep.Violations = append(rep.Violations, tr.Problems()...)
	rep.Violations = append(rep.Violations, w.Problems()...)
	hist, kinds, nodes := rec.History()
	rep.Check = checker.Check(hist, final)
	if !rep.Check.OK() {
		rep.Violations = append(rep.Violations, "checker: "+rep.Check.String()+describeOps(rep.Check, hist, kinds, nodes))
	}
	rep.Porcupine = checker.CheckPorcupine(hist, final, checker.PorcupineOptions{MaxWindowOps: 300, VisualizeDir: filepath.Join(cfg.OutDir, "porcupine")})
	if !rep.Porcupine.OK() {
		rep.Violations = append(rep.Violations, rep.Porcupine.String())
	}
	if rep.Porcupine.Err != nil {
		logf("porcupine visualization: %v", rep.Porcupine.Err)
	}
	rep.Crashes = append(rep.Crashes, c.Exits()...)
	rep.Crashes = append(rep.Crashes, c.LogProblems()...)
	logf("round %d checked: %d ops, final log %d entries; %s; %s", rep.Rounds, len(hist), len(final),
		strings.SplitN(rep.Check.String(), "\n", 2)[0], rep.Porcupine)
	return final
}

// describeOps says where and when the first violating operations ran.
func describeOps(res checker.Result, hist checker.History, kinds []string, nodes []int) string {
	var b strings.Builder
	seen := map[int]bool{}
	for _, v := range res.Violations {
		if v.Op < 0 || seen[v.Op] || len(seen) == 5 {
			continue
		}
		seen[v.Op] = true
		o := hist[v.Op]
		where := "a client over every node"
		if nodes[v.Op] >= 0 {
			where = fmt.Sprintf("node %d", nodes[v.Op]+1)
		}
		fmt.Fprintf(&b, "\n  op %d: %s by client %d to %s, t=%.3fs..%.3fs", v.Op, kinds[v.Op], o.Client, where,
			float64(o.Invoke)/1e9, float64(o.Complete)/1e9)
	}
	return b.String()
}

// probeAppend appends one value exactly-once, retrying until it lands or d
// passes; it is recorded like any other operation.
func probeAppend(c *Cluster, rec *Recorder, d time.Duration) (uint64, bool) {
	cl, err := c.NewClient(c.Addrs, client.Options{CallTimeout: 2 * time.Second, DialTimeout: time.Second, Retries: 1 << 20})
	if err != nil {
		return 0, false
	}
	defer cl.Close()
	v := fmt.Sprintf("probe-%d", rec.Now())
	op := checker.Op{Client: -1, Kind: checker.Append, Value: v, Invoke: rec.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	res, err := cl.Append(ctx, []byte(v))
	op.Complete = rec.Now()
	if err != nil {
		op.Status = checker.Unknown
		rec.add("probe", -1, op)
		return 0, false
	}
	op.Status, op.Index = checker.OK, res.First
	rec.add("probe", -1, op)
	return res.First, true
}

// waitMaster waits for a node that says it is master.
func waitMaster(c *Cluster, d time.Duration) int {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m := c.Master(); m >= 0 {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1
}

// waitConverged waits until every node but those killed for good reports
// the same first and end index, the end at least want. It gives up early
// when no node's end has moved for 15 s (logs that differ never converge).
func waitConverged(c *Cluster, want uint64, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last string
	var prev []uint64
	moved := time.Now()
	for {
		var ends, firsts []uint64
		same, nodes := true, 0
		for i := range c.Addrs {
			if c.Held(i) {
				continue
			}
			nodes++
			st, err := c.Status(i, 2*time.Second)
			if err != nil {
				same = false
				last = fmt.Sprintf("node %d: %v", i+1, err)
				break
			}
			ends, firsts = append(ends, st.EndIndex), append(firsts, st.FirstIndex)
			if st.EndIndex < want || st.EndIndex != ends[0] || st.FirstIndex != firsts[0] {
				same = false
			}
		}
		if same {
			return nil
		}
		if len(ends) == nodes {
			last = fmt.Sprintf("end indexes %v, first indexes %v", ends, firsts)
			if !slices.Equal(ends, prev) {
				prev, moved = ends, time.Now()
			} else if time.Since(moved) > 15*time.Second {
				return fmt.Errorf("nodes did not converge: no end index moved for 15s (want end >= %d): %s", want, last)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes did not converge within %v of healing (want end >= %d): %s", d, want, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// historyLine is one operation in history.jsonl: line k+1 is op k of the
// checker's messages. Node is the node it was sent to (1-based), 0 for a
// client over every endpoint.
type historyLine struct {
	Kind string `json:"kind"`
	Node int    `json:"node"`
	checker.Op
}

func writeHistory(path string, h checker.History, kinds []string, nodes []int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for i, op := range h {
		if err := enc.Encode(historyLine{Kind: kinds[i], Node: nodes[i] + 1, Op: op}); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func writeLines(path string, lines []string) error {
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
