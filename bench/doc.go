// Package bench measures a replicated log (paxosd) and, side by side, etcd
// and ZooKeeper, with one workload driver for all three. `paxosd bench` is
// its command line; bench/sidebyside.sh runs the whole comparison and
// bench/report turns its results into docs/benchmarks.md and an SVG chart.
//
// A run has N clients, each with its own connection (a Target) to the
// system, each keeping --inflight requests outstanding. In the closed loop a
// client sends its next request when one completes; in the open loop
// (Config.Rate) requests are due on a fixed schedule and a request's latency
// is measured from when it was due, not from when it was sent, so a system
// that stalls is charged for the requests that queued behind the stall (no
// coordinated omission).
//
// Every value is unique and names itself (run ID, client, entry number; see
// Identity), so after the run the driver reads back what the system holds
// and counts acknowledged values that are missing (lost) and values found
// twice (duplicated). The one invariant: a value counts as written only when
// the system acknowledged it; a request that timed out has an unknown outcome
// and is never counted as lost.
//
// Usage:
//
//	sys, _ := bench.NewSystem(ctx, "paxosd", []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"})
//	defer sys.Close()
//	cfg := bench.DefaultConfig()
//	cfg.Clients, cfg.Duration = 64, 30*time.Second
//	res, err := bench.Run(ctx, sys, cfg) // res.Throughput, res.P99, res.Lost, ...
package bench
