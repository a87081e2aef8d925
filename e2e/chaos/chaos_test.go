package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/e2e/internal/testca"
)

// binary is the paxosd server the tests run; bugBinary the same built with
// -tags paxosd_bugs (it has the hidden --bug flag), built on first use.
var (
	binDir       string
	binary       string
	bugBinary    string
	bugBuildErr  error
	bugBuildOnce sync.Once
)

func build(out string, tags ...string) error {
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	b, err := exec.Command("go", append(args, "../../cmd/paxosd")...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return nil
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "paxosd-chaos-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	binary = filepath.Join(dir, "paxosd")
	if err := build(binary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func buggyBinary(t *testing.T) string {
	bugBuildOnce.Do(func() {
		bugBinary = filepath.Join(binDir, "paxosd-bugs")
		bugBuildErr = build(bugBinary, "paxosd_bugs")
	})
	if bugBuildErr != nil {
		t.Fatal(bugBuildErr)
	}
	return bugBinary
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 30m", name, s)
	}
	return d
}

// envFaults reads PAXOSD_CHAOS_FAULTS, a comma-separated list of faults to
// inject (default: all of them, alike), e.g. "pause-master,kill".
func envFaults(t *testing.T) map[Fault]int {
	s := os.Getenv("PAXOSD_CHAOS_FAULTS")
	if s == "" {
		return nil
	}
	w := map[Fault]int{}
	for _, name := range strings.Split(s, ",") {
		f := Fault(strings.TrimSpace(name))
		if !slices.Contains(AllFaults, f) {
			t.Fatalf("PAXOSD_CHAOS_FAULTS: unknown fault %q; known: %v", f, AllFaults)
		}
		w[f] = 1
	}
	return w
}

// outDir is where a run keeps its node logs, history and Porcupine's HTML:
// under PAXOSD_CHAOS_OUT if set, else the system's temporary directory. A
// clean run removes it; a failing one keeps it and says where.
func outDir(t *testing.T, name string) string {
	base := os.Getenv("PAXOSD_CHAOS_OUT")
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp(base, "paxosd-chaos-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// finish removes a clean run's directory.
func finish(t *testing.T, rep *Report, dir string) {
	if rep.OK() && os.Getenv("PAXOSD_CHAOS_OUT") == "" {
		os.RemoveAll(dir)
	}
}

// runClean runs cfg with its output in the directory named name, logs the
// summary, and fails the test on any violation, naming the environment
// that replays the schedule (replay: the variables beyond seed and nodes).
// It returns the report and the run's directory (the node logs), which a
// clean run's test keeps until it ends.
func runClean(t *testing.T, cfg Config, name, replay string) (*Report, string) {
	t.Helper()
	cfg.OutDir = outDir(t, name)
	cfg.KeepOut = os.Getenv("PAXOSD_CHAOS_OUT") != ""
	cfg.Deadline, _ = t.Deadline()
	rep, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { finish(t, rep, cfg.OutDir) })
	t.Log(rep.Summary())
	if !rep.OK() {
		t.Fatalf("chaos run %s failed; replay the schedule with PAXOSD_CHAOS_SEED=%d PAXOSD_CHAOS_NODES=%d %s\n%s",
			name, cfg.Seed, cfg.Nodes, replay, rep.Summary())
	}
	return rep, cfg.OutDir
}

// Defaults of the run in `go test ./...`: 3 nodes, a fixed seed, about two
// minutes in all.
const (
	defaultSeed     = 1
	defaultDuration = 100 * time.Second
	// A long run is checked every round (heal, converge, check) so that a
	// violation is found, and reported, early.
	maxRound = 5 * time.Minute
)

// TestChaos runs the fault schedule against a real cluster and checks the
// history. PAXOSD_CHAOS_DURATION (default 100s of faults), PAXOSD_CHAOS_SEED
// (default 1) and PAXOSD_CHAOS_NODES (default 3) change the run, e.g.
//
//	PAXOSD_CHAOS_DURATION=30m PAXOSD_CHAOS_NODES=5 go test ./e2e/chaos -run TestChaos -v -timeout 60m
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	cfg := Config{
		Binary:   binary,
		Nodes:    envInt(t, "PAXOSD_CHAOS_NODES", 3),
		Seed:     uint64(envInt(t, "PAXOSD_CHAOS_SEED", defaultSeed)),
		Duration: envDuration(t, "PAXOSD_CHAOS_DURATION", defaultDuration),
		Logf:     t.Logf,
	}
	cfg.Round = min(cfg.Duration, envDuration(t, "PAXOSD_CHAOS_ROUND", maxRound))
	cfg.Weights = envFaults(t)
	runClean(t, cfg, fmt.Sprintf("seed%d-n%d", cfg.Seed, cfg.Nodes), fmt.Sprintf("PAXOSD_CHAOS_DURATION=%v", cfg.Duration))
}

// TestChaosMembership runs the schedule biased toward wipe-replace (a
// node's disk wiped under load and the node replaced through the
// membership: removed, joined again on an empty directory, promoted),
// between kills and partitions, and checks the history and every node's
// log as TestChaos does. PAXOSD_CHAOS_MEMBERSHIP_DURATION changes its
// length (default 40 s of faults).
func TestChaosMembership(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	cfg := Config{
		Binary:   binary,
		Nodes:    envInt(t, "PAXOSD_CHAOS_NODES", 3),
		Seed:     uint64(envInt(t, "PAXOSD_CHAOS_SEED", defaultSeed)),
		Duration: envDuration(t, "PAXOSD_CHAOS_MEMBERSHIP_DURATION", 40*time.Second),
		Logf:     t.Logf,
		Weights:  map[Fault]int{WipeReplace: 3, Kill: 1, KillMaster: 1, IsolateOne: 1},
	}
	cfg.Round = min(cfg.Duration, maxRound)
	rep, _ := runClean(t, cfg, fmt.Sprintf("membership-seed%d-n%d", cfg.Seed, cfg.Nodes), "")
	if rep.Faults[string(WipeReplace)] == 0 {
		t.Fatalf("no node was wiped and replaced: %v", rep.Faults)
	}
}

// plantedBugs are the bugs the chaos test must catch, each with the faults
// that expose it and the time it is given (faults only; each round adds a
// heal and a check of about 5-15 s), and the clients when not the default.
var plantedBugs = []struct {
	bug     string
	weights map[Fault]int
	minHold time.Duration
	budget  time.Duration
	why     string
	roles   []Role
}{
	{"ballot-reuse", map[Fault]int{BounceMaster: 3, FlipBounce: 1, KillMaster: 1}, 0, 60 * time.Second,
		"a master restarted at once reissues the ballot it led with; the status monitor sees the ballot again " +
			"(with SIGKILL the old incarnation's writes survive, so no history shows it: see docs/testing.md)", nil},
	{"ignore-accepted", map[Fault]int{MuteMaster: 4, KillMaster: 1}, 0, 60 * time.Second,
		"a new master re-proposes no-ops over accepted values, so a value the old master saw chosen (and acknowledged) is replaced", nil},
	{"stale-read", map[Fault]int{IsolateMast: 4, Split: 1}, 5 * time.Second, 60 * time.Second,
		"a master cut off from the others goes on serving linearizable reads after a new master took over and acknowledged appends", nil},
	{"skip-dedup", map[Fault]int{KillMaster: 2, BounceMaster: 1, IsolateMast: 1, Loss: 1}, 0, 60 * time.Second,
		"an exactly-once append retried after its first attempt landed is applied again: a duplicate in the log", nil},
	// A duplicate needs an append applied just before a master that is
	// hours ahead takes over and sent again just after: the exactly-once
	// clients re-send their acknowledged appends now and then (resendEO),
	// so the first master with a clock further ahead than any before is
	// caught. Before the re-sends, only an append the restart left
	// unacknowledged could show it, and one CI run of 6 rounds caught
	// nothing; the budget stays 10 rounds.
	{"log-time-jump", map[Fault]int{ClockJump: 4, KillMaster: 1, BounceMaster: 1}, 0, 150 * time.Second,
		"a master whose clock is hours ahead (or a correct one after a slow one) moves the log time by hours: every client's dedup row " +
			"expires and a retried exactly-once append lands twice",
		[]Role{ExactlyOnce, ExactlyOnce, ExactlyOnce, ExactlyOnce, ExactlyOnce, ExactlyOnce, ExactlyOnce, ExactlyOnce, Plain, Reader}},
	// Retries reach only a client's highest seq; the workload's re-sends of
	// acknowledged appends reach the older ones, with or without faults.
	{"dedup-latest-only", map[Fault]int{Loss: 1, KillMaster: 1}, 0, 30 * time.Second,
		"the dedup table answers only a client's highest seq: an acknowledged append sent again after a later one is applied again", nil},
}

// TestChaosPlantedBugs runs the chaos schedule against a binary with one
// planted bug at a time, biased toward the faults that expose it, in rounds
// of 15 s (each followed by a heal and a full check), and fails unless a
// safety violation is found within the bug's budget.
func TestChaosPlantedBugs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	bin := buggyBinary(t)
	for _, b := range plantedBugs {
		t.Run(b.bug, func(t *testing.T) {
			budget := envDuration(t, "PAXOSD_CHAOS_BUG_BUDGET", b.budget)
			cfg := Config{Binary: bin, Nodes: envInt(t, "PAXOSD_CHAOS_NODES", 3), Seed: uint64(envInt(t, "PAXOSD_CHAOS_SEED", defaultSeed)),
				Duration: budget, Round: 15 * time.Second, Weights: b.weights, MinHold: b.minHold, Bug: b.bug, Roles: b.roles, Logf: t.Logf}
			cfg.OutDir = outDir(t, "bug-"+b.bug)
			cfg.KeepOut = os.Getenv("PAXOSD_CHAOS_OUT") != ""
			cfg.Deadline, _ = t.Deadline()
			rep, err := Run(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Violations) == 0 {
				t.Fatalf("planted bug %s (%s) not caught in %v of faults:\n%s", b.bug, b.why, budget, rep.Summary())
			}
			if !cfg.KeepOut {
				os.RemoveAll(cfg.OutDir)
			}
			t.Logf("planted bug %s caught %v after the start (round %d, rounds of %v of faults): %s", b.bug, rep.CaughtAt.Round(time.Second),
				rep.Rounds, cfg.Round, firstLines(rep.Violations[0], 4))
		})
	}
}

// firstLines returns the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// TestChaosTLSAuth runs a short round of the schedule against a cluster
// secured as docs/operations.md's production guide says: peers with mutual
// TLS (their own CA, certificates naming the member by URI SAN), clients
// over TLS, and --auth-tokens-file; the workload, the nemesis (its
// wipe-replace joins and membership changes), the trimmer and the checks
// all connect with the CA and a token. PAXOSD_CHAOS_TLS_DURATION changes
// its length (default 20 s of faults), PAXOSD_CHAOS_FAULTS its faults.
func TestChaosTLSAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	ca := testca.New(t, dir, "clients")
	pca := testca.New(t, dir, "peers")
	cert, key := ca.Issue("node", "node")
	const token = "chaos-admin-token"
	tokens := filepath.Join(dir, "tokens")
	// Forwarding and joining nodes call as their peer certificate's name.
	if err := os.WriteFile(tokens, []byte(token+" admin\ncert:node1 admin\ncert:node2 admin\ncert:node3 admin\ncert:node4 admin\ncert:node5 admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := client.TLSConfig(ca.File, "", "")
	if err != nil {
		t.Fatal(err)
	}
	nodes := envInt(t, "PAXOSD_CHAOS_NODES", 3)
	peerArgs := make([][]string, nodes)
	for i := range peerArgs {
		pc, pk := pca.Issue(fmt.Sprintf("peer%d", i+1), fmt.Sprintf("node%d", i+1), fmt.Sprintf("paxosd://member/%d", i+1))
		peerArgs[i] = []string{"--peer-cert-file", pc, "--peer-key-file", pk}
	}
	sec := &Security{
		ServerArgs: []string{"--cert-file", cert, "--key-file", key, "--peer-trusted-ca-file", pca.File, "--auth-tokens-file", tokens},
		NodeArgs:   func(i int) []string { return peerArgs[i] },
		TLS:        tlsCfg, Token: token,
	}
	cfg := Config{
		Binary:   binary,
		Nodes:    nodes,
		Seed:     uint64(envInt(t, "PAXOSD_CHAOS_SEED", defaultSeed)),
		Duration: envDuration(t, "PAXOSD_CHAOS_TLS_DURATION", 20*time.Second),
		Weights:  envFaults(t),
		Security: sec,
		Logf:     t.Logf,
	}
	cfg.Round = cfg.Duration
	_, out := runClean(t, cfg, fmt.Sprintf("tls-seed%d-n%d", cfg.Seed, cfg.Nodes), fmt.Sprintf("PAXOSD_CHAOS_TLS_DURATION=%v", cfg.Duration))
	// The nodes ran secured: their start-up lines say so.
	for i := range cfg.Nodes {
		b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("node%d.log", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		if want := `security="TLS, peer mutual TLS, authentication required`; !strings.Contains(string(b), want) {
			t.Errorf("node %d's log has no start-up line with %q", i+1, want)
		}
	}
}
