// Package bench measures a replicated log with one workload driver: paxosd
// here, and etcd and ZooKeeper side by side in the comparison tool. Command
// is the command line of both: `paxosd bench` is Command with the Paxosd
// driver alone; bench/compare, a Go module of its own (so that the paxosd
// binary links neither etcd's client nor go-zookeeper), is Command with
// drivers for etcd and ZooKeeper as well. bench/sidebyside.sh runs the
// whole comparison with it, and bench/report turns the results into
// docs/benchmarks.md and an SVG chart. CPUParts splits a node's CPU profile
// into the parts of what an append costs (fsync, storage, gRPC, the
// protocol, the runtime...): bench/cpuprofile.sh, with `report cpu`.
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
//	sys, _ := bench.Paxosd.Open(ctx, []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}, 10*time.Second)
//	defer sys.Close()
//	cfg := bench.DefaultConfig()
//	cfg.Clients, cfg.Duration = 64, 30*time.Second
//	res, err := bench.Run(ctx, sys, cfg) // res.Throughput, res.P99, res.Lost, ...
package bench
