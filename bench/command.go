package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// CommandOptions shape the bench command for one program.
type CommandOptions struct {
	// Program is how a user runs the command, for the examples in --help:
	// "paxosd bench", or "compare" for bench/compare.
	Program string
	// Drivers are the systems the command measures; the first is the
	// default. With more than one, --target picks.
	Drivers []Driver
	// EndpointsEnv: environment variables --endpoints is read from.
	EndpointsEnv []string
	// Examples replace the paxosd examples of --help ("" keeps them).
	Examples string
}

// Command is the bench command: its flags, its --help, and an action that
// validates them, runs Run against the driver's system, prints progress to
// stderr and the result to stdout (-w simple, json or table), and fails
// when the read-back found a lost or duplicated value or no request
// succeeded. `paxosd bench` is Command with the paxosd driver; the
// comparison tool (bench/compare) gives it etcd's and ZooKeeper's too.
func Command(opt CommandOptions) *cli.Command {
	if len(opt.Drivers) == 0 {
		panic("bench.Command: no drivers")
	}
	def := DefaultConfig()
	names := make([]string, len(opt.Drivers))
	helps := make([]string, len(opt.Drivers))
	for i, d := range opt.Drivers {
		names[i], helps[i] = d.Name, d.Name+": "+d.Help
	}
	first := opt.Drivers[0]
	examples := opt.Examples
	if examples == "" {
		examples = strings.ReplaceAll(`  PROG                                        # 16 clients, 100 B, 10 s, against "paxosd dev"
  PROG --clients 64 --duration 30s --warmup 3s -w json
  PROG --rate 5000 --duration 20s             # open loop at 5000 appends/s
  PROG --batch 100 --inflight 4               # 100 entries per append, 4 appends in flight per client
  PROG --total 10000 --batch 100              # exactly 10000 appends of 100 entries after the warmup`, "PROG", opt.Program)
	}
	endpointsDefault := "none: give --endpoints"
	if first.DefaultEndpoints != "" {
		endpointsDefault = first.DefaultEndpoints
	}
	flags := []cli.Flag{
		&cli.StringFlag{Name: "endpoints", EnvVars: opt.EndpointsEnv, DefaultText: endpointsDefault, Usage: "comma-separated HOST:PORT of the nodes to send to (the clients spread over them)"},
		&cli.StringFlag{Name: "write-out", Aliases: []string{"w"}, Value: "simple", Usage: "output format: simple, json or table"},
		&cli.DurationFlag{Name: "timeout", Value: def.Timeout, Usage: "give up on connecting, and on each request, after this long"},
	}
	if len(opt.Drivers) > 1 {
		flags = append(flags, &cli.StringFlag{Name: "target", Value: first.Name, Usage: "system to measure: " + strings.Join(names, ", ")})
	}
	flags = append(flags,
		&cli.IntFlag{Name: "clients", Value: def.Clients, Usage: "concurrent clients"},
		&cli.IntFlag{Name: "conns", DefaultText: "one per client", Usage: "connections the clients share, client i on connection i mod conns"},
		&cli.IntFlag{Name: "size", Value: def.Size, Usage: fmt.Sprintf("bytes per value (at least %d: a value starts with its identity)", MinSize)},
		&cli.DurationFlag{Name: "duration", DefaultText: def.Duration.String() + ", unless --total", Usage: "how long to measure, after the warmup"},
		&cli.Int64Flag{Name: "total", DefaultText: "none", Usage: "measure this many requests (appends) after the warmup, instead of a --duration"},
		&cli.DurationFlag{Name: "warmup", Value: def.Warmup, Usage: "run this long first, left out of the numbers (its writes are still read back)"},
		&cli.Float64Flag{Name: "rate", DefaultText: "closed loop", Usage: "open loop: requests per second over all clients"},
		&cli.IntFlag{Name: "batch", Value: def.Batch, Usage: "values per request (one append of that many entries)"},
		&cli.IntFlag{Name: "inflight", Value: def.Inflight, Usage: fmt.Sprintf("requests each client keeps outstanding (pipelining; paxosd allows up to %d)", paxosdLimits.MaxInflight)},
		&cli.DurationFlag{Name: "interval", Value: def.Interval, Usage: "print a progress line to stderr this often (0: none)"},
		&cli.BoolFlag{Name: "verify", Value: true, Usage: "read back what was written and count lost and duplicated values (--verify=false skips it)"},
		&cli.IntSliceFlag{Name: "server-pids", Usage: "comma-separated PIDs of the servers' processes on this machine: report their user+system CPU time (/proc/PID/stat) over the measured part, and per request"},
	)
	trailer := `To compare with etcd and ZooKeeper: bench/sidebyside.sh builds the comparison tool (the separate
Go module bench/compare, which measures all three with this same driver), runs the same workloads
against each and writes docs/benchmarks.md.`
	if len(opt.Drivers) > 1 {
		trailer = "bench/sidebyside.sh runs the same workloads against each and writes docs/benchmarks.md."
	}
	return &cli.Command{
		Name:  "bench",
		Usage: "measure append throughput and latency of " + strings.Join(names, ", "),
		Description: `Clients append values of --size bytes and the command reports requests/s, entries/s, MB/s and
latency percentiles. Each client has its own connection (unless --conns) and keeps --inflight
requests outstanding.

Closed loop (the default): a client sends its next request when one completes.
Open loop (--rate R): R requests per second over all clients, each due at a fixed time; latency
counts from when a request was due, so a stall is charged to every request queued behind it.
With --inflight M a client has up to M of its due requests outstanding; the next one waits for a
free slot (and is charged for the wait).

A line of the last interval's numbers goes to stderr every --interval, the summary to stdout.
Every value is unique and names itself (run ID/client/entry number/, padded with '.'). After the
run the command reads back what it wrote and reports lost (acknowledged but missing) and
duplicated (found twice) values; either non-zero, or no request succeeding, makes it exit
non-zero. A request that timed out has an unknown outcome: an error, never "lost".

Examples:
` + examples + `

` + strings.Join(helps, "\n") + "\n\n" + trailer,
		Flags: flags,
		Action: func(c *cli.Context) error {
			return action(c, opt.Drivers)
		},
	}
}

func action(c *cli.Context, drivers []Driver) error {
	if c.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: this command takes flags only, and flags go before any argument", c.Args().First())
	}
	d := drivers[0]
	if len(drivers) > 1 {
		target := c.String("target")
		found := false
		for _, dd := range drivers {
			if dd.Name == target {
				d, found = dd, true
			}
		}
		if !found {
			names := make([]string, len(drivers))
			for i, dd := range drivers {
				names[i] = dd.Name
			}
			return fmt.Errorf("--target %q: use %s", target, strings.Join(names, ", "))
		}
	}
	format := c.String("write-out")
	switch format {
	case "simple", "json", "table":
	default:
		return fmt.Errorf("--write-out %q: use simple, json or table", format)
	}
	epFlag := c.String("endpoints")
	if !c.IsSet("endpoints") {
		if d.DefaultEndpoints == "" {
			return fmt.Errorf("--target %s needs --endpoints", d.Name)
		}
		epFlag = d.DefaultEndpoints
	}
	var endpoints []string
	for _, ep := range strings.Split(epFlag, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			endpoints = append(endpoints, ep)
		}
	}
	if len(endpoints) == 0 {
		return fmt.Errorf("--endpoints %q: give HOST:PORT of at least one node", epFlag)
	}
	cfg := Config{
		Clients: c.Int("clients"), Conns: c.Int("conns"), Size: c.Int("size"), Duration: c.Duration("duration"), Total: c.Int64("total"),
		Warmup: c.Duration("warmup"), Rate: c.Float64("rate"), Batch: c.Int("batch"), Inflight: c.Int("inflight"),
		Timeout: c.Duration("timeout"), Interval: c.Duration("interval"), Progress: os.Stderr, NoVerify: !c.Bool("verify"),
		ServerPIDs: c.IntSlice("server-pids"),
	}
	if c.IsSet("duration") && cfg.Duration <= 0 {
		return fmt.Errorf("--duration %v: must be positive", cfg.Duration)
	}
	if c.IsSet("total") && cfg.Total <= 0 {
		return fmt.Errorf("--total %d: must be positive", cfg.Total)
	}
	if cfg.Duration == 0 && cfg.Total == 0 {
		cfg.Duration = DefaultConfig().Duration
	}
	if err := cfg.Validate(d.Name, d.Limits); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sys, err := d.Open(ctx, endpoints, cfg.Timeout)
	if err != nil {
		return err
	}
	defer sys.Close()
	mode := "closed loop"
	if cfg.Rate > 0 {
		mode = fmt.Sprintf("open loop at %g requests/s", cfg.Rate)
	}
	fmt.Fprintf(os.Stderr, "bench: %s at %s: %d clients, %s, %d B values, batch %d, inflight %d\n",
		d.Name, strings.Join(endpoints, ","), cfg.Clients, mode, cfg.Size, cfg.Batch, cfg.Inflight)
	res, runErr := Run(ctx, sys, cfg)
	if res == nil {
		return runErr
	}
	res.Endpoints = endpoints
	WriteResult(os.Stdout, format, res)
	for _, k := range res.ErrorKinds {
		fmt.Fprintf(os.Stderr, "bench: %d errors: %s\n", k.Count, k.Message)
	}
	if res.Unsent > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d requests due were never sent: the system fell behind --rate %g by more than --timeout\n", res.Unsent, cfg.Rate)
	}
	switch {
	case runErr != nil:
		return runErr
	case res.Interrupted:
		return errors.New("interrupted: the numbers above cover the run until then; nothing was read back")
	case res.Lost > 0 || res.Duplicated > 0:
		return fmt.Errorf("read-back of %s found lost=%d duplicated=%d", res.Checked, res.Lost, res.Duplicated)
	case res.Ops == 0:
		return fmt.Errorf("no request succeeded (%d errors)", res.Errors)
	}
	return nil
}

// WriteResult prints res as -w asks: json (one object), table (one row)
// or simple (a few lines).
func WriteResult(w io.Writer, format string, res *Result) {
	switch format {
	case "json":
		b, _ := json.Marshal(res)
		fmt.Fprintf(w, "%s\n", b)
	case "table":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SYSTEM\tNODES\tCLIENTS\tSIZE\tBATCH\tINFLIGHT\tOPS/S\tENTRIES/S\tMB/S\tP50 MS\tP99 MS\tP99.9 MS\tERRORS\tLOST\tDUPLICATED")
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%d\t%s\t%s\n",
			res.System, res.Nodes, res.Clients, res.Size, res.Batch, res.Inflight, res.Throughput, res.EntriesPerS, res.MBPerS,
			res.P50, res.P99, res.P999, res.Errors, checked(res, res.Lost), checked(res, res.Duplicated))
		tw.Flush()
	default:
		fsync := "fsync on"
		if !res.Fsync {
			fsync = "fsync off"
		}
		fmt.Fprintf(w, "%s, %d nodes, %s: %d clients, %s loop, %d B values, batch %d, inflight %d\n",
			res.System, res.Nodes, fsync, res.Clients, res.Mode, res.Size, res.Batch, res.Inflight)
		fmt.Fprintf(w, "%.2f s measured after a %g s warmup: %d requests (%.0f/s), %d entries (%.0f/s, %.2f MB/s), %d errors (%d timeouts)\n",
			res.DurationS, res.WarmupS, res.Ops, res.Throughput, res.Entries, res.EntriesPerS, res.MBPerS, res.Errors, res.Timeouts)
		fmt.Fprintf(w, "latency ms: p50 %.2f  p95 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  mean %.2f\n",
			res.P50, res.P95, res.P99, res.P999, res.Max, res.Mean)
		if res.ServerCPUS > 0 {
			fmt.Fprintf(w, "server CPU (user+system, measured part): %.2f s, %.0f µs per request\n", res.ServerCPUS, res.ServerCPUPerOpUS)
		}
		if res.Verified {
			fmt.Fprintf(w, "read-back of %s: %d acknowledged, %d found, lost=%d duplicated=%d\n",
				res.Checked, res.Acked, res.Found, res.Lost, res.Duplicated)
		} else {
			fmt.Fprintf(w, "no read-back: lost and duplicated not checked\n")
		}
	}
}

// checked shows a read-back count, or "-" when there was no read-back.
func checked(res *Result, n int64) string {
	if !res.Verified {
		return "-"
	}
	return fmt.Sprint(n)
}
