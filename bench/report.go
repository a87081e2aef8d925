package bench

import (
	"bufio"
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
)

// Experiments of bench records.
const (
	ExpClients = "clients" // every system, 100 B, 1/16/64 clients: the comparison
	ExpSize    = "size"    // paxosd, larger values
	ExpNodes   = "nodes"   // paxosd, 5 nodes
	ExpBatch   = "batch"   // paxosd, batched and pipelined
	ExpConns   = "conns"   // paxosd, clients sharing one connection
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
	Machine  Machine
	Compared []*Result // ExpClients, by system then clients
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
	rep := &Report{CPU: map[*Result]*CPU{}}
	haveMachine := false
	for _, rec := range recs {
		switch rec.Kind {
		case KindMachine:
			rep.Machine, haveMachine = *rec.Machine, true
		case KindBench:
			rep.CPU[rec.Result] = rec.CPU
			switch rec.Experiment {
			case ExpClients:
				rep.Compared = append(rep.Compared, rec.Result)
			case ExpLoad:
			default:
				rep.Alone = append(rep.Alone, Alone{rec.Experiment, rec.Result})
			}
		case KindRSS:
			rep.RSS = append(rep.RSS, rec)
		case KindStartup:
			rep.Startup = append(rep.Startup, rec)
		}
	}
	if !haveMachine {
		return nil, errors.New("results: no machine record")
	}
	if len(rep.Compared) == 0 {
		return nil, errors.New("results: no comparison (experiment \"clients\") results")
	}
	slices.SortStableFunc(rep.Compared, func(a, b *Result) int {
		if a.System != b.System {
			return systemOrder(a.System) - systemOrder(b.System)
		}
		return a.Clients - b.Clients
	})
	return rep, nil
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
	p("It needs root only to install etcd-server and zookeeper from Debian when they are missing. The\n")
	p("environment sets shorter or longer runs: `BENCH_DURATION` (20s), `BENCH_WARMUP` (3s), `BENCH_CLIENTS`\n")
	p("(\"1 16 64\"), `BENCH_LOAD` (1000000 entries for the start-up test, 0 skips it), `BENCH_OUT` (where the\n")
	p("results and logs go), `BENCH_REPORT=0` (leave docs/ alone). This run: %s.\n\n", m.Settings)
	p("**Setup.** Each system runs as a 3-node cluster on 127.0.0.1, one system at a time, with its\n")
	p("defaults: every acknowledged write is fsynced on a majority (paxosd always, etcd's WAL, ZooKeeper's\n")
	p("forceSync). The comparison tool (bench/compare: the driver of `paxosd bench` with --target) drives\n")
	p("all three through their own Go clients (paxosd's client, etcd's clientv3, go-zookeeper), each\n")
	p("client with its own connection and one request outstanding (closed loop). A request writes one\n")
	p("100 B value: a paxosd append, an etcd Put of bench/RUN/CLIENT/N, a\n")
	p("ZooKeeper create of a persistent sequential znode. After each run the driver reads back what it\n")
	p("wrote (lost and dup below). The clients run on the same machine as the servers.\n\n")
	p("**Machine.** %d CPUs (%s), %s GiB of memory, Linux %s, %s; etcd %s, ZooKeeper %s on %s.\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.Go, m.Etcd, m.ZooKeeper, m.Java)
	if m.LoadAvg != "" {
		p("Load average when the run started: %s. The CPU columns below say how much other work ran\n", m.LoadAvg)
		p("beside each measurement.\n")
	}
	p("\n")
	p("![throughput and latency against clients](%s)\n\n", svgName)
	p("| system | clients | ops/s | p50 ms | p99 ms | p99.9 ms | errors | lost | dup | CPU: servers | client | other |\n")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rep.Compared {
		p("| %s | %d | %s | %.2f | %.2f | %.2f | %d | %s | %s | %s |\n", r.System, r.Clients, thousands(r.Throughput),
			r.P50, r.P99, r.P999, r.Errors, verifiedCount(r, r.Lost), verifiedCount(r, r.Duplicated), cpuCells(rep.CPU[r]))
	}
	p("\nCPU is in cores (CPU-seconds per second of the run, warmup and read-back included) used by the three\n")
	p("nodes together, by the bench client, and by everything else on the machine (out of %d).\n", m.CPUs)
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
	case ExpConns:
		return "shared connection"
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
