package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/bench"
	"github.com/paxosd/paxosd/client"
)

func benchCommand() *cli.Command {
	def := bench.DefaultConfig()
	return &cli.Command{
		Name:  "bench",
		Usage: "measure append throughput and latency (also of etcd and ZooKeeper, for comparison)",
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
run the command reads back what it wrote (linearizably, for paxosd) and reports lost (acknowledged
but missing) and duplicated (found twice) values; either non-zero, or no request succeeding,
makes it exit non-zero. A request that timed out has an unknown outcome: an error, never "lost".

Examples:
  paxosd bench                                        # 16 clients, 100 B, 10 s, against "paxosd dev"
  paxosd bench --clients 64 --duration 30s --warmup 3s -w json
  paxosd bench --rate 5000 --duration 20s             # open loop at 5000 appends/s
  paxosd bench --batch 100 --inflight 4               # 100 entries per append, 4 appends in flight per client
  paxosd bench --total 10000 --batch 100              # exactly 10000 appends of 100 entries after the warmup
  paxosd bench --target etcd --endpoints 127.0.0.1:2379
  paxosd bench --target zookeeper --endpoints 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183

--target etcd puts key bench/RUN/CLIENT/N; --target zookeeper creates persistent sequential znodes
/paxosd-bench/RUN/cCLIENT/N-; a batch is one etcd transaction or one ZooKeeper multi.
bench/sidebyside.sh runs the same workloads against all three and writes docs/benchmarks.md.`,
		Flags: append(clientFlags[:len(clientFlags):len(clientFlags)],
			&cli.StringFlag{Name: "target", Value: "paxosd", Usage: "system to measure: " + strings.Join(bench.Systems, ", ")},
			&cli.IntFlag{Name: "clients", Value: def.Clients, Usage: "concurrent clients"},
			&cli.IntFlag{Name: "conns", DefaultText: "one per client", Usage: "connections the clients share, client i on connection i mod conns"},
			&cli.IntFlag{Name: "size", Value: def.Size, Usage: fmt.Sprintf("bytes per value (at least %d: a value starts with its identity)", bench.MinSize)},
			&cli.DurationFlag{Name: "duration", DefaultText: def.Duration.String() + ", unless --total", Usage: "how long to measure, after the warmup"},
			&cli.Int64Flag{Name: "total", DefaultText: "none", Usage: "measure this many requests (appends) after the warmup, instead of a --duration"},
			&cli.DurationFlag{Name: "warmup", Value: def.Warmup, Usage: "run this long first, left out of the numbers (its writes are still read back)"},
			&cli.Float64Flag{Name: "rate", DefaultText: "closed loop", Usage: "open loop: requests per second over all clients"},
			&cli.IntFlag{Name: "batch", Value: def.Batch, Usage: "values per request (one append of that many entries)"},
			&cli.IntFlag{Name: "inflight", Value: def.Inflight, Usage: "requests each client keeps outstanding (pipelining; paxosd allows up to 32)"},
			&cli.DurationFlag{Name: "interval", Value: def.Interval, Usage: "print a progress line to stderr this often (0: none)"},
			&cli.BoolFlag{Name: "verify", Value: true, Usage: "read back what was written and count lost and duplicated values (--verify=false skips it)"},
		),
		Action: benchAction,
	}
}

func benchAction(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	target := c.String("target")
	if !slices.Contains(bench.Systems, target) {
		return fmt.Errorf("--target %q: use %s", target, strings.Join(bench.Systems, ", "))
	}
	if target != "paxosd" && !c.IsSet("endpoints") {
		return fmt.Errorf("--target %s needs --endpoints (the default is the paxosd dev cluster)", target)
	}
	// newClient checks --write-out and splits --endpoints the way every
	// command does; the bench dials its own connections.
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	endpoints := cl.Endpoints()
	cl.Close()
	cfg := bench.Config{
		Clients: c.Int("clients"), Conns: c.Int("conns"), Size: c.Int("size"), Duration: c.Duration("duration"), Total: c.Int64("total"),
		Warmup: c.Duration("warmup"), Rate: c.Float64("rate"), Batch: c.Int("batch"), Inflight: c.Int("inflight"),
		Timeout: c.Duration("timeout"), Interval: c.Duration("interval"), Progress: os.Stderr, NoVerify: !c.Bool("verify"),
	}
	if c.IsSet("duration") && cfg.Duration <= 0 {
		return fmt.Errorf("--duration %v: must be positive", cfg.Duration)
	}
	if c.IsSet("total") && cfg.Total <= 0 {
		return fmt.Errorf("--total %d: must be positive", cfg.Total)
	}
	if cfg.Duration == 0 && cfg.Total == 0 {
		cfg.Duration = bench.DefaultConfig().Duration
	}
	if err := cfg.Validate(target); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
	var sys bench.System
	if target == "paxosd" {
		// The client flags' TLS, token and cluster pin (clientSecurity
		// checked them in newClient above).
		opt, _ := clientSecurity(c, client.Options{})
		sys, err = bench.NewPaxosd(endpoints, opt)
	} else {
		sys, err = bench.NewSystem(sctx, target, endpoints)
	}
	cancel()
	if err != nil {
		return err
	}
	defer sys.Close()
	mode := "closed loop"
	if cfg.Rate > 0 {
		mode = fmt.Sprintf("open loop at %g requests/s", cfg.Rate)
	}
	fmt.Fprintf(os.Stderr, "bench: %s at %s: %d clients, %s, %d B values, batch %d, inflight %d\n",
		target, strings.Join(endpoints, ","), cfg.Clients, mode, cfg.Size, cfg.Batch, cfg.Inflight)
	res, runErr := bench.Run(ctx, sys, cfg)
	if res == nil {
		return runErr
	}
	res.Endpoints = endpoints
	writeBenchResult(os.Stdout, c.String("write-out"), res)
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

// writeBenchResult prints res as -w asks: json (one object), table (one
// row) or simple (a few lines).
func writeBenchResult(w io.Writer, format string, res *bench.Result) {
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
		if res.Verified {
			fmt.Fprintf(w, "read-back of %s: %d acknowledged, %d found, lost=%d duplicated=%d\n",
				res.Checked, res.Acked, res.Found, res.Lost, res.Duplicated)
		} else {
			fmt.Fprintf(w, "no read-back: lost and duplicated not checked\n")
		}
	}
}

// checked shows a read-back count, or "-" when there was no read-back.
func checked(res *bench.Result, n int64) string {
	if !res.Verified {
		return "-"
	}
	return fmt.Sprint(n)
}
