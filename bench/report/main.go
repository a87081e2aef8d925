// Command report is bench/sidebyside.sh's helper: it picks a system's best
// client configuration from the results so far, turns an outside tool's
// output (ghz, etcd's benchmark) into a check record, describes the machine
// as a results record, and, last, turns a results file into
// docs/benchmarks-sidebyside.svg and the marked section of
// docs/benchmarks.md (nothing else in that file changes).
//
//	go run ./bench/report machine -etcd 3.4.23 -zookeeper 3.8.0 -java 17 -date ... -command ... -settings ... -minutes 12 >>results.jsonl
//	go run ./bench/report write -results results.jsonl -doc docs/benchmarks.md -svg docs/benchmarks-sidebyside.svg
//	go run ./bench/report pick -results results.jsonl -system etcd -clients 64
//	go run ./bench/report check -tool ghz -tool-output ghz.json -driver run.json >>results.jsonl
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/paxosd/paxosd/bench"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "machine":
		err = machine(os.Args[2:])
	case "write":
		err = write(os.Args[2:])
	case "pick":
		err = pick(os.Args[2:])
	case "check":
		err = check(os.Args[2:])
	case "cpu":
		err = cpu(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  go run ./bench/report machine [flags]   print this machine's record (append it to the results file)
  go run ./bench/report write [flags]     write the chart and the section of docs/benchmarks.md
  go run ./bench/report pick [flags]      print the best client configuration of a system's pick runs
  go run ./bench/report check [flags]     print a check record: a driver's run beside an outside tool's
  go run ./bench/report cpu [flags] NODE=TRACES...
                                          split nodes' CPU profiles (go tool pprof -traces) per append
Each takes -h for its flags.`)
	os.Exit(2)
}

func machine(args []string) error {
	fs := flag.NewFlagSet("machine", flag.ExitOnError)
	var m bench.Machine
	fs.StringVar(&m.Etcd, "etcd", "", "etcd's version")
	fs.StringVar(&m.ZooKeeper, "zookeeper", "", "ZooKeeper's version")
	fs.StringVar(&m.Java, "java", "", "the Java runtime ZooKeeper ran on")
	fs.StringVar(&m.Date, "date", "", "when the run started")
	fs.StringVar(&m.Command, "command", "", "the command that ran it")
	fs.StringVar(&m.Settings, "settings", "", "its settings")
	fs.Float64Var(&m.Minutes, "minutes", 0, "how long it took")
	fs.StringVar(&m.LoadAvg, "load", "", "the load average when it started")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("machine: unexpected argument %q", fs.Arg(0))
	}
	m.CPUs = runtime.NumCPU()
	m.Go = runtime.Version()
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseFloat(strings.Fields(procField("/proc/meminfo", "MemTotal") + " 0")[0], 64); err == nil {
		m.MemoryGiB = fmt.Sprintf("%.1f", kb/(1<<20))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	out, err := json.Marshal(bench.Record{Kind: bench.KindMachine, Machine: &m})
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", out)
	return nil
}

// procField returns the value of the first "name : value" line of a /proc
// file, or "unknown".
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func write(args []string) error {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	results := fs.String("results", "", "the results file (JSON Lines) bench/sidebyside.sh wrote")
	doc := fs.String("doc", "docs/benchmarks.md", "the Markdown file whose marked section to rewrite")
	svg := fs.String("svg", "docs/benchmarks-sidebyside.svg", "the chart to write")
	fs.Parse(args)
	if *results == "" {
		return errors.New("write: -results is required")
	}
	f, err := os.Open(*results)
	if err != nil {
		return err
	}
	recs, err := bench.ReadRecords(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", *results, err)
	}
	rep, err := bench.NewReport(recs)
	if err != nil {
		return fmt.Errorf("%s: %w", *results, err)
	}
	old, err := os.ReadFile(*doc)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	rel, err := filepath.Rel(filepath.Dir(*doc), *svg)
	if err != nil {
		rel = *svg
	}
	text, err := bench.ReplaceSection(string(old), rep.Markdown(filepath.ToSlash(rel)))
	if err != nil {
		return fmt.Errorf("%s: %w", *doc, err)
	}
	if err := os.WriteFile(*svg, rep.SVG(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(*doc, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "report: wrote %s and the section of %s\n", *svg, *doc)
	return nil
}

func readResults(name string) ([]bench.Record, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	recs, err := bench.ReadRecords(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return recs, nil
}

func pick(args []string) error {
	fs := flag.NewFlagSet("pick", flag.ExitOnError)
	results := fs.String("results", "", "the results file")
	system := fs.String("system", "", "the system")
	clients := fs.Int("clients", 0, "the client count")
	fs.Parse(args)
	recs, err := readResults(*results)
	if err != nil {
		return err
	}
	best, err := bench.BestSetup(recs, *system, *clients)
	if err != nil {
		return err
	}
	fmt.Println(best)
	return nil
}

func check(args []string) error {
	fs := flag.NewFlagSet("check", flag.ExitOnError)
	var rec bench.Record
	rec.Kind, rec.Tool = bench.KindCheck, &bench.Tool{}
	fs.StringVar(&rec.Tool.Name, "tool", "", "ghz or etcd-benchmark")
	fs.StringVar(&rec.Tool.Command, "command", "", "the tool's command line, as run")
	fs.StringVar(&rec.System, "system", "", "the system (with -note)")
	fs.StringVar(&rec.Note, "note", "", "why the tool did not run (instead of -tool-output and -driver)")
	toolOut := fs.String("tool-output", "", "the tool's output: ghz's -O json, or etcd benchmark's summary")
	driver := fs.String("driver", "", "the driver's result (compare -w json)")
	fs.Parse(args)
	if rec.Note == "" {
		b, err := os.ReadFile(*toolOut)
		if err != nil {
			return err
		}
		var t bench.Tool
		switch rec.Tool.Name {
		case "ghz":
			t, err = bench.ParseGhz(b)
		case "etcd-benchmark":
			t, err = bench.ParseEtcdBenchmark(b)
		default:
			return fmt.Errorf("check: -tool %q: use ghz or etcd-benchmark", rec.Tool.Name)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", *toolOut, err)
		}
		rec.Tool.Throughput, rec.Tool.P50, rec.Tool.P99 = t.Throughput, t.P50, t.P99
		if b, err = os.ReadFile(*driver); err != nil {
			return err
		}
		rec.Result = &bench.Result{}
		if err := json.Unmarshal(b, rec.Result); err != nil {
			return fmt.Errorf("%s: %w", *driver, err)
		}
		rec.System, rec.Clients = rec.Result.System, rec.Result.Clients
	}
	out, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", out)
	return nil
}

// cpu prints, for each node's CPU profile (given as NAME=FILE, FILE the
// output of go tool pprof -traces), the CPU per append of every part of
// bench.CPUPartNames, as a Markdown table: one column per node, one for
// all of them, and each part's share of the whole.
func cpu(args []string) error {
	fs := flag.NewFlagSet("cpu", flag.ExitOnError)
	appends := fs.Float64("appends", 0, "appends the cluster made while the profiles were taken")
	procUS := fs.Float64("proc-us", 0, "the servers' CPU per append over the run, from /proc (paxosd bench --server-pids): adds the part the profiles did not see")
	fs.Parse(args)
	if *appends <= 0 || fs.NArg() == 0 {
		return errors.New("cpu: give -appends and at least one NODE=TRACES")
	}
	var names []string
	parts := map[string]map[string]time.Duration{}
	totals := map[string]time.Duration{}
	var all time.Duration
	for _, arg := range fs.Args() {
		name, file, ok := strings.Cut(arg, "=")
		if !ok {
			return fmt.Errorf("cpu: %q is not NODE=TRACES", arg)
		}
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		p, total, err := bench.CPUParts(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		names = append(names, name)
		parts[name], totals[name] = p, total
		all += total
	}
	us := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds()) / *appends) }
	fmt.Printf("| part | %s | all nodes | share |\n|---|%s---:|---:|\n", strings.Join(names, " | "), strings.Repeat("---:|", len(names)))
	for _, part := range bench.CPUPartNames() {
		var sum time.Duration
		row := []string{part}
		for _, n := range names {
			row = append(row, us(parts[n][part]))
			sum += parts[n][part]
		}
		row = append(row, us(sum), fmt.Sprintf("%.0f%%", 100*float64(sum)/float64(all)))
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
	row := []string{"**all the profiles saw (µs per append)**"}
	for _, n := range names {
		row = append(row, "**"+us(totals[n])+"**")
	}
	fmt.Printf("| %s | **%s** | 100%% |\n", strings.Join(row, " | "), us(all))
	if *procUS > 0 {
		fmt.Printf("\nThe servers' CPU per append from /proc over the whole run: %.1f µs; the profiles saw %s (%.0f%%).\n",
			*procUS, us(all), 100*float64(all.Microseconds()) / *appends / *procUS)
	}
	return nil
}
