package bench

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// The side-by-side results file (bench/sidebyside.sh writes it) is JSON
// Lines, one Record per line.

// Record kinds.
const (
	KindMachine = "machine" // where and how the run happened
	KindBench   = "bench"   // one `paxosd bench -w json` result
	KindRSS     = "rss"     // resident memory of a system's nodes under load
	KindStartup = "startup" // time for a node holding many entries to start
	KindCheck   = "check"   // a driver's run beside an outside tool's, on the same endpoints
)

// Experiments of bench records.
const (
	ExpClients = "clients" // every system, 100 B: the comparison (one round, one configuration)
	ExpPick    = "pick"    // every system: each client configuration (Setup), to pick the best
	ExpRound   = "round"   // every system in its best configuration, alternating, Round 1, 2, ...
	ExpSize    = "size"    // paxosd, larger values
	ExpNodes   = "nodes"   // paxosd, 5 nodes
	ExpBatch   = "batch"   // paxosd, batched and pipelined
	ExpLoad    = "load"    // paxosd, loading the log for the start-up measurement
)

// Record is one line of the results file.
type Record struct {
	Kind       string   `json:"kind"`
	Experiment string   `json:"experiment,omitempty"` // bench
	CPU        *CPU     `json:"cpu,omitempty"`        // bench
	Result     *Result  `json:"result,omitempty"`     // bench
	Machine    *Machine `json:"machine,omitempty"`    // machine
	System     string   `json:"system,omitempty"`     // rss
	Clients    int      `json:"clients,omitempty"`    // rss: the load it was measured under
	RSSKB      []int64  `json:"rss_kb,omitempty"`     // rss: each node's peak VmRSS, KiB
	Entries    int64    `json:"entries,omitempty"`    // startup: entries the node held
	Seconds    float64  `json:"seconds,omitempty"`    // startup: process start to caught up
	Round      int      `json:"round,omitempty"`      // bench (ExpRound): which round
	Setup      string   `json:"setup,omitempty"`      // bench (ExpPick, ExpRound), check: the client configuration
	Tool       *Tool    `json:"tool,omitempty"`       // check: the outside tool's figures (Result: the driver's)
	Note       string   `json:"note,omitempty"`       // check: why the tool did not run
}

// The client configurations the side-by-side tries for each system: the
// clients share one connection or have one each, sent to the leader (the
// master) only or spread over every endpoint.
const (
	SetupSharedLeader = "shared-leader"
	SetupSharedAll    = "shared-all"
	SetupOwnLeader    = "own-leader"
	SetupOwnAll       = "own-all"
)

// SetupName says what setup means for system with clients clients.
func SetupName(system, setup string, clients int) string {
	conns, eps, ok := strings.Cut(setup, "-")
	if !ok {
		return setup
	}
	leader := "leader"
	if system == "paxosd" {
		leader = "master"
	}
	where := map[string]string{"leader": leader + " only", "all": "all endpoints"}[eps]
	switch {
	case clients == 1:
		return "one connection, " + where
	case conns == "shared":
		return "one shared connection, " + where
	}
	return "a connection per client, " + where
}

// BestSetup returns the setup of the pick runs of system with clients
// clients that had the highest throughput.
func BestSetup(recs []Record, system string, clients int) (string, error) {
	best, top := "", -1.0
	for _, r := range recs {
		if r.Kind == KindBench && r.Experiment == ExpPick && r.Result.System == system && r.Result.Clients == clients &&
			r.Result.Ops > 0 && r.Result.Throughput > top {
			best, top = r.Setup, r.Result.Throughput
		}
	}
	if best == "" {
		return "", fmt.Errorf("no successful pick run of %s with %d clients", system, clients)
	}
	return best, nil
}

// Tool is what an outside load generator (ghz, etcd's benchmark) measured.
type Tool struct {
	Name       string  `json:"name"`
	Command    string  `json:"command,omitempty"`
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
}

// CPU is the CPU time a bench run used, in cores (CPU-seconds per second)
// over the whole invocation, warmup and read-back included.
type CPU struct {
	Servers float64 `json:"servers"` // the system's nodes together
	Client  float64 `json:"client"`  // the bench process
	Other   float64 `json:"other"`   // everything else on the machine
}

// Machine describes the run: the host, the versions, the command.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	MemoryGiB string  `json:"memory_gib"`
	Kernel    string  `json:"kernel"`
	Go        string  `json:"go"`
	Etcd      string  `json:"etcd"`
	ZooKeeper string  `json:"zookeeper"`
	Java      string  `json:"java"`
	Date      string  `json:"date"`     // when the run started
	Command   string  `json:"command"`  // what to type to run it again
	Settings  string  `json:"settings"` // durations and other knobs, as set
	Minutes   float64 `json:"minutes"`  // how long the whole script took
	LoadAvg   string  `json:"load_avg"` // /proc/loadavg's 1, 5 and 15 minute loads when it started
}

// ReadRecords parses a results file.
func ReadRecords(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(text), &rec); err != nil {
			return nil, fmt.Errorf("results line %d: %w", line, err)
		}
		switch rec.Kind {
		case KindMachine:
			if rec.Machine == nil {
				return nil, fmt.Errorf("results line %d: a machine record without \"machine\"", line)
			}
		case KindBench:
			if rec.Result == nil {
				return nil, fmt.Errorf("results line %d: a bench record without \"result\"", line)
			}
		case KindCheck:
			if rec.Tool == nil {
				return nil, fmt.Errorf("results line %d: a check record without \"tool\"", line)
			}
		case KindRSS, KindStartup:
		default:
			return nil, fmt.Errorf("results line %d: unknown kind %q", line, rec.Kind)
		}
		out = append(out, rec)
	}
	return out, sc.Err()
}

// Report is the results file sorted for writing.
type Report struct {
	Machine Machine
	// Compared is the median round of each system and client count (by
	// throughput; the lower middle of an even count), by system then
	// clients; Rounds are all of them, in file order.
	Compared []*Result
	Rounds   map[string][]*Result
	Setup    map[*Result]string // a round's client configuration
	Picks    []Record
	Checks   []Record
	CPU      map[*Result]*CPU
	Alone    []Alone // paxosd's own experiments, in file order
	RSS      []Record
	Startup  []Record
}

// Alone is one of paxosd's own experiments.
type Alone struct {
	Experiment string
	Result     *Result
}

// NewReport sorts records into a Report; it needs a machine record and at
// least one comparison result.
func NewReport(recs []Record) (*Report, error) {
	rep := &Report{CPU: map[*Result]*CPU{}, Rounds: map[string][]*Result{}, Setup: map[*Result]string{}}
	haveMachine := false
	for _, rec := range recs {
		switch rec.Kind {
		case KindMachine:
			rep.Machine, haveMachine = *rec.Machine, true
		case KindBench:
			rep.CPU[rec.Result] = rec.CPU
			switch rec.Experiment {
			case ExpClients, ExpRound:
				k := roundKey(rec.Result)
				rep.Rounds[k] = append(rep.Rounds[k], rec.Result)
				rep.Setup[rec.Result] = rec.Setup
			case ExpPick:
				rep.Picks = append(rep.Picks, rec)
			case ExpLoad:
			default:
				rep.Alone = append(rep.Alone, Alone{rec.Experiment, rec.Result})
			}
		case KindRSS:
			rep.RSS = append(rep.RSS, rec)
		case KindStartup:
			rep.Startup = append(rep.Startup, rec)
		case KindCheck:
			rep.Checks = append(rep.Checks, rec)
		}
	}
	if !haveMachine {
		return nil, errors.New("results: no machine record")
	}
	for _, rs := range rep.Rounds {
		rep.Compared = append(rep.Compared, median(rs, func(r *Result) float64 { return r.Throughput }))
	}
	if len(rep.Compared) == 0 {
		return nil, errors.New("results: no comparison (experiment \"round\" or \"clients\") results")
	}
	slices.SortStableFunc(rep.Compared, func(a, b *Result) int {
		if a.System != b.System {
			return systemOrder(a.System) - systemOrder(b.System)
		}
		return a.Clients - b.Clients
	})
	return rep, nil
}

func roundKey(r *Result) string { return fmt.Sprintf("%s/%d", r.System, r.Clients) }

// median returns the element of rs whose value is the median (the lower
// middle of an even count).
func median(rs []*Result, value func(*Result) float64) *Result {
	sorted := slices.Clone(rs)
	slices.SortStableFunc(sorted, func(a, b *Result) int { return cmp.Compare(value(a), value(b)) })
	return sorted[(len(sorted)-1)/2]
}

// reportOrder is the order of the systems in the comparison.
var reportOrder = []string{"paxosd", "etcd", "zookeeper"}

func systemOrder(s string) int {
	if i := slices.Index(reportOrder, s); i >= 0 {
		return i
	}
	return len(reportOrder)
}

// Section markers in docs/benchmarks.md: the report rewrites what is
// between them and nothing else.
const (
	SectionBegin = "<!-- sidebyside:begin -->"
	SectionEnd   = "<!-- sidebyside:end -->"
)

// ReplaceSection returns doc with the text between the markers replaced by
// section; without markers, it appends them (and section) at the end.
func ReplaceSection(doc, section string) (string, error) {
	body := SectionBegin + "\n" + strings.TrimRight(section, "\n") + "\n" + SectionEnd
	b := strings.Index(doc, SectionBegin)
	e := strings.Index(doc, SectionEnd)
	switch {
	case b < 0 && e < 0:
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		if doc != "" {
			doc += "\n"
		}
		return doc + body + "\n", nil
	case b < 0 || e < b:
		return "", fmt.Errorf("the markers %s and %s are not both there, in that order", SectionBegin, SectionEnd)
	}
	if strings.Count(doc, SectionBegin) != 1 || strings.Count(doc, SectionEnd) != 1 {
		return "", fmt.Errorf("the markers %s and %s must appear once each", SectionBegin, SectionEnd)
	}
	return doc[:b] + body + doc[e+len(SectionEnd):], nil
}

// Markdown writes the section: the machine and the command, the chart, the
// comparison table, paxosd's own experiments, start-up and memory. svgName
// is the chart's file name, relative to the document.
func (rep *Report) Markdown(svgName string) string {
	var b strings.Builder
	m := rep.Machine
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## paxosd, etcd and ZooKeeper side by side\n\n")
	p("Everything in this section is written by `bench/sidebyside.sh` (the comment at its top says what it\n")
	p("does) from its run of %s, which took %.1f minutes. To run it again, from the repository root:\n\n", m.Date, m.Minutes)
	p("```\n%s\n```\n\n", m.Command)
	p("It needs root only to install etcd-server, zookeeper and protobuf-compiler from Debian when they are\n")
	p("missing. The environment sets shorter or longer runs: `BENCH_ROUNDS` (3), `BENCH_DURATION` (20s), `BENCH_WARMUP` (3s),\n")
	p("`BENCH_PICK_DURATION` (10s), `BENCH_CLIENTS` (\"1 64\"), `BENCH_LOAD` (1000000 entries for the start-up\n")
	p("test, 0 skips it), `BENCH_ALONE=0` (skip paxosd's own experiments), `BENCH_OUT` (where the results and\n")
	p("logs go), `BENCH_REPORT=0` (leave docs/ alone). This run: %s.\n\n", m.Settings)
	p("**Setup.** Each system runs as a 3-node cluster on 127.0.0.1, one system at a time, with its\n")
	p("defaults: every acknowledged write is fsynced on a majority (paxosd always, etcd's WAL, ZooKeeper's\n")
	p("forceSync). The comparison tool (bench/compare: the driver of `paxosd bench` with --target) drives\n")
	p("all three through their own Go clients (paxosd's client, etcd's clientv3, go-zookeeper), one request\n")
	p("outstanding per client (closed loop). A request writes one 100 B value: a paxosd append, an etcd Put\n")
	p("of bench/RUN/CLIENT/N, a ZooKeeper create of a persistent sequential znode. After each run the driver\n")
	p("reads back what it wrote. The clients run on the same machine as the servers.\n\n")
	p("**Fair configurations.** First each system is measured in every client configuration: one shared\n")
	p("connection or one per client, sent to the leader (paxosd's master) only or spread over all three\n")
	p("endpoints; each gets its best, named in the table. Then the systems alternate, each round on a fresh\n")
	p("cluster and starting with the next system, and the table gives each system's median round (by\n")
	p("throughput, with that round's latencies) and every round's throughput.\n\n")
	p("**Machine.** %d CPUs (%s), %s GiB of memory, Linux %s, %s; etcd %s, ZooKeeper %s on %s.\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.Go, m.Etcd, m.ZooKeeper, m.Java)
	if m.LoadAvg != "" {
		p("Load average when the run started: %s. The CPU column \"other\" says how much other work ran\n", m.LoadAvg)
		p("beside each median round.\n")
	}
	p("\n")
	p("![throughput and latency against clients](%s)\n\n", svgName)
	p("| system | clients | configuration | ops/s (median) | vs etcd | p50 ms | p99 ms | server CPU µs/append | rounds, ops/s | CPU: servers | client | other |\n")
	p("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n")
	var errs, lost, dup int64
	verified := true
	for _, rs := range rep.Rounds {
		for _, r := range rs {
			errs, lost, dup, verified = errs+r.Errors, lost+r.Lost, dup+r.Duplicated, verified && r.Verified
		}
	}
	for _, r := range rep.Compared {
		rounds := rep.Rounds[roundKey(r)]
		var tputs []string
		for _, x := range rounds {
			tputs = append(tputs, thousands(x.Throughput))
		}
		cpuUS := median(rounds, func(x *Result) float64 { return x.ServerCPUPerOpUS }).ServerCPUPerOpUS
		p("| %s | %d | %s | %s | %s | %.2f | %.2f | %s | %s | %s |\n", r.System, r.Clients, SetupName(r.System, rep.Setup[r], r.Clients),
			thousands(r.Throughput), rep.vsEtcd(r), r.P50, r.P99, microseconds(cpuUS), strings.Join(tputs, ", "), cpuCells(rep.CPU[r]))
	}
	p("\nServer CPU per append is the three nodes' user+system time (/proc/PID/stat) from the end of the\n")
	p("warmup until the last client stopped, divided by the appends acknowledged in that time: the median\n")
	p("over the rounds. It does not depend on how many cores the machine has. The CPU columns are in cores\n")
	p("(CPU-seconds per second of the median round, warmup and read-back included) used by the three nodes,\n")
	p("by the bench client, and by everything else on the machine (out of %d). ", m.CPUs)
	if verified {
		p("Over all the rounds: %d errors, %d values lost, %d duplicated.\n", errs, lost, dup)
	} else {
		p("Over all the rounds: %d errors; some rounds were not read back.\n", errs)
	}
	if len(rep.Picks) > 0 {
		p("\n**The configurations tried**, %s each, before the rounds (ops/s; the best is the one used):\n\n", seconds(rep.Picks[0].Result.DurationS))
		p("| system | clients | configuration | ops/s | p50 ms | p99 ms | server CPU µs/append |\n")
		p("| --- | ---: | --- | ---: | ---: | ---: | ---: |\n")
		for _, pk := range rep.Picks {
			r := pk.Result
			p("| %s | %d | %s | %s | %.2f | %.2f | %s |\n", r.System, r.Clients, SetupName(r.System, pk.Setup, r.Clients),
				thousands(r.Throughput), r.P50, r.P99, microseconds(r.ServerCPUPerOpUS))
		}
	}
	if len(rep.Checks) > 0 {
		p("\n**The drivers against outside tools.** Each line runs the comparison tool's driver and an outside\n")
		p("load generator one after the other, for as long, with the same clients and connections, one per\n")
		p("client, straight at the leader (paxosd's master).\n\n")
		p("| system | clients | tool | tool ops/s | tool p50 ms | tool p99 ms | driver ops/s | driver p50 ms | driver p99 ms |\n")
		p("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, c := range rep.Checks {
			if c.Note != "" {
				p("| %s | | %s | %s | | | | | |\n", c.System, c.Tool.Name, c.Note)
				continue
			}
			r := c.Result
			p("| %s | %d | %s | %s | %.2f | %.2f | %s | %.2f | %.2f |\n", r.System, r.Clients, c.Tool.Name,
				thousands(c.Tool.Throughput), c.Tool.P50, c.Tool.P99, thousands(r.Throughput), r.P50, r.P99)
		}
		p("\nThe tools' commands:\n\n")
		for _, c := range rep.Checks {
			if c.Tool.Command != "" && c.Result != nil {
				p("- %s, %d clients: `%s`\n", c.Tool.Name, c.Result.Clients, c.Tool.Command)
			}
		}
	}
	if len(rep.Alone) > 0 {
		p("\n### paxosd: value size, cluster size, batching\n\n")
		p("The batched mode sends appends of `batch` entries and keeps `inflight` of them outstanding per client;\n")
		p("the shared connection runs the clients over `conns` connections instead of one each.")
		rows := rep.aloneWithBaselines()
		if len(rows) > len(rep.Alone) {
			p("\nA baseline is the comparison's paxosd run with as many clients, above the rows it compares with.")
		}
		p(" CPU is in cores as above:\nservers/client/other.")
		p("\n\n| experiment | nodes | clients | conns | size | batch | inflight | ops/s | entries/s | MB/s | p50 ms | p99 ms | p99.9 ms | errors | lost | dup | CPU |\n")
		p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, a := range rows {
			r := a.Result
			p("| %s | %d | %d | %d | %s | %d | %d | %s | %s | %.1f | %.2f | %.2f | %.2f | %d | %s | %s | %s |\n",
				experimentName(a.Experiment), r.Nodes, r.Clients, r.Conns, byteSize(r.Size), r.Batch, r.Inflight,
				thousands(r.Throughput), thousands(r.EntriesPerS), r.MBPerS, r.P50, r.P99, r.P999, r.Errors,
				verifiedCount(r, r.Lost), verifiedCount(r, r.Duplicated), cpuShort(rep.CPU[r]))
		}
	}
	for _, s := range rep.Startup {
		p("\n### paxosd: start-up of a node holding %s entries\n\n", thousands(float64(s.Entries)))
		p("The log was loaded with the batched mode, one node stopped and started again: %.2f s from the\n", s.Seconds)
		p("process's start until its Status answered with every entry applied (applied = the last index).\n")
	}
	if len(rep.RSS) > 0 {
		p("\n### Memory under load\n\n")
		p("Peak resident memory (VmRSS) of each node, sampled every second during the %d-client run:\n\n", rep.RSS[0].Clients)
		p("| system | nodes, MiB |\n| --- | --- |\n")
		for _, r := range rep.RSS {
			var parts []string
			for _, kb := range r.RSSKB {
				parts = append(parts, fmt.Sprintf("%.0f", float64(kb)/1024))
			}
			p("| %s | %s |\n", r.System, strings.Join(parts, ", "))
		}
	}
	return b.String()
}

// aloneWithBaselines groups paxosd's own experiments by client count, each
// group after the comparison's paxosd run with that many clients (when
// there is one).
func (rep *Report) aloneWithBaselines() []Alone {
	var counts []int
	for _, a := range rep.Alone {
		if !slices.Contains(counts, a.Result.Clients) {
			counts = append(counts, a.Result.Clients)
		}
	}
	var rows []Alone
	for _, c := range counts {
		for _, r := range rep.Compared {
			if r.System == "paxosd" && r.Clients == c {
				rows = append(rows, Alone{"baseline", r})
				break
			}
		}
		for _, a := range rep.Alone {
			if a.Result.Clients == c {
				rows = append(rows, a)
			}
		}
	}
	return rows
}

func cpuShort(c *CPU) string {
	if c == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f/%.2f/%.2f", c.Servers, c.Client, c.Other)
}

// vsEtcd is r's throughput over etcd's median with as many clients.
func (rep *Report) vsEtcd(r *Result) string {
	for _, e := range rep.Compared {
		if e.System == "etcd" && e.Clients == r.Clients && e.Throughput > 0 {
			return fmt.Sprintf("%.2fx", r.Throughput/e.Throughput)
		}
	}
	return "-"
}

func microseconds(us float64) string {
	if us <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f", us)
}

func seconds(s float64) string { return strings.TrimSuffix(fmt.Sprintf("%.1f", s), ".0") + " s" }

func cpuCells(c *CPU) string {
	if c == nil {
		return "- | - | -"
	}
	return fmt.Sprintf("%.2f | %.2f | %.2f", c.Servers, c.Client, c.Other)
}

func experimentName(e string) string {
	switch e {
	case ExpSize:
		return "value size"
	case ExpNodes:
		return "cluster size"
	case ExpBatch:
		return "batched"
	}
	return e
}

func verifiedCount(r *Result, n int64) string {
	if !r.Verified {
		return "-"
	}
	return fmt.Sprint(n)
}

// thousands formats a rate with thousands separators: 12,345.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
