// Command paxosd runs a paxosd node or a local development cluster, and is
// the command-line client of a cluster: append, read, tail, trim, status.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
	"github.com/paxosd/paxosd/server"
)

// maxEntryLimit caps --max-entry-bytes: entries travel whole in peer messages.
const maxEntryLimit = api.MaxEntryBytesLimit

const defaultEndpoints = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "paxosd:", err)
		os.Exit(exitCode(err))
	}
}

var clientFlags = []cli.Flag{
	&cli.StringFlag{Name: "endpoints", EnvVars: []string{"PAXOSD_ENDPOINTS"}, Value: defaultEndpoints, Usage: "comma-separated HOST:PORT of any nodes of the cluster"},
	&cli.StringFlag{Name: "write-out", Aliases: []string{"w"}, Value: "simple", Usage: "output format: simple, json or table"},
	&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "give up on a request after this long"},
}

func newApp() *cli.App {
	app := &cli.App{
		Name:  "paxosd",
		Usage: "a replicated, append-only log on Multi-Paxos",
		Description: `Examples:
  paxosd dev                          # a local 3-node cluster; then, in another terminal:
  paxosd append hello world
  paxosd read --from 0
  paxosd tail --from 0 -f
  paxosd status -w table

` + exitHelp,
		Version:              versionLine(),
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			serverCommand(), devCommand(), versionCommand(),
			appendCommand(), readCommand(), tailCommand(), trimCommand(), statusCommand(), masterCommand(), membersCommand(),
			snapshotCommand(),
			benchCommand(), completionCommand(),
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(os.Stderr, "paxosd: unknown command %q; see paxosd --help\n", name)
			os.Exit(exitUsage)
		},
		// Usage errors go to stderr as one line; --help shows the rest.
		OnUsageError: usageError,
	}
	for _, cmd := range app.Commands {
		cmd.OnUsageError = usageError
	}
	return app
}

func usageError(c *cli.Context, err error, _ bool) error {
	return usageErr(fmt.Errorf("%w (see paxosd %s --help)", err, c.Command.Name))
}

// noArgs refuses stray arguments: a flag written after one would be ignored.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr(fmt.Errorf("unexpected argument %q: this command takes flags only, and flags go before any argument", c.Args().First()))
	}
	return nil
}

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run one node of a cluster",
		Description: `Every voting member is started with the same --peers list and its own --id.
Example, on three hosts (or three terminals):
  paxosd server --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /var/lib/paxosd/1
  paxosd server --id 2 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /var/lib/paxosd/2
  paxosd server --id 3 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /var/lib/paxosd/3
The node serves clients and peers on one port. SIGTERM or SIGINT stops it cleanly; a master
first hands its lease to the best caught-up voter (--handover-timeout), so that appends stall for
a few round trips rather than a lease. It also gossips (TCP and UDP) on a port it picks and tells
the others through the API (--gossip-listen fixes it, or turns gossip off); paxosd members list
shows who gossip sees alive, an opinion that safety never depends on.

Monitoring: --metrics-addr 127.0.0.1:9464 serves Prometheus metrics (/metrics), /healthz,
/readyz and a live status page (/; its log tail is off with --auth-tokens-file unless
--status-page-tail, since the port is unauthenticated); the client port answers gRPC health checks (grpc.health.v1.Health, service
paxosd.v1.LogService) and server reflection (grpcurl -plaintext HOST:PORT list).

A new node joins a running cluster as a follower with --join (any members' addresses,
no --peers), and becomes a voter with paxosd members promote:
  paxosd server --id 4 --listen 127.0.0.1:7004 --data-dir /var/lib/paxosd/4 --join 127.0.0.1:7001,127.0.0.1:7002
  paxosd members promote 4
It keeps what it learned in its data directory: restart it with the same command (or
without --join); no member needs to be reachable then.

A static follower mirrors the log without voting or being a member, and serves local reads
and tails:
  paxosd server --id 10 --follow 1 --listen 127.0.0.1:7010 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 --data-dir /var/lib/paxosd/10
Its --cluster and --peers must be its members' own: a follower its members refuse (wrong cluster,
or its member's address reaches another node) exits with status 1 and says why; one whose member
is down waits for it. Until it has heard from its cluster once, it refuses local reads and tails.`,
		Flags: append([]cli.Flag{
			&cli.Uint64Flag{Name: "id", Required: true, Usage: "this node's ID (a positive integer listed in --peers, or a new one with --join)"},
			&cli.StringFlag{Name: "peers", Usage: "every voting member the cluster was created with, as ID=HOST:PORT, comma-separated (not with --join)"},
			&cli.StringFlag{Name: "join", Usage: "join a running cluster as a follower through any of these members (HOST:PORT, comma-separated); needs --listen; later starts need it no more"},
			&cli.StringFlag{Name: "listen", Usage: "address to listen on (default: this node's address in --peers)"},
			&cli.StringFlag{Name: "data-dir", Required: true, Usage: "this node's data directory (created if missing)"},
			&cli.StringFlag{Name: "cluster", Value: "paxosd", Usage: "cluster name; with the member IDs it makes the cluster ID that guards data directories and peer links"},
			&cli.IntFlag{Name: "max-entry-bytes", Value: api.DefaultMaxEntryBytes, Usage: "largest entry accepted"},
			&cli.DurationFlag{Name: "learn-interval", Value: time.Second, Usage: "how often to ask peers how far they are (catch-up also starts at once when a message shows this node is behind)"},
			&cli.Int64Flag{Name: "catchup-rate", Value: server.DefaultCatchupRate, Usage: "bytes per second of log this node serves to peers catching up (-1: no limit)"},
			&cli.Uint64Flag{Name: "retain-entries", Usage: "trim the log automatically to about this many entries (0: never; trims run when 10% more piled up)"},
			&cli.Uint64Flag{Name: "retain-bytes", Usage: "trim the log automatically to about this many bytes of entry data (0: never; trims run when 10% more piled up; measured to about 1 MiB or one lease renewal of appends)"},
			&cli.DurationFlag{Name: "retain-age", Usage: "trim the log automatically to the entries appended within this much log time, e.g. 168h (0: never; trims run when entries 10% older exist; log time is the masters' wall clock, to about 1 s)"},
			&cli.Uint64Flag{Name: "follow", Usage: "run as a non-voting follower of this member (the follower's --id is not in --peers; give --listen)"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go profiles on this HOST:PORT (e.g. 127.0.0.1:6060; then go tool pprof http://127.0.0.1:6060/debug/pprof/profile)"},
			&cli.DurationFlag{Name: "handover-timeout", Value: 2 * time.Second, Usage: "on SIGTERM or SIGINT, how long a master may take to hand its lease to another voter before it stops (0: stop at once)"},
			&cli.StringFlag{Name: "gossip-key-file", EnvVars: []string{"PAXOSD_GOSSIP_KEY_FILE"}, Usage: "encrypt and authenticate gossip with the key in this file: 16, 24 or 32 random bytes in base64, the same on every node (make one with: head -c 32 /dev/urandom | base64 > gossip.key); nodes without it are not admitted"},
			&cli.StringFlag{Name: "gossip-listen", Usage: "IP:PORT to gossip on (TCP and UDP) for discovery and failure detection, shown as alive in members list; nodes find each other's port through the API, so the default (this node's listen host, a port the OS picks) needs no configuration; \"off\" runs no gossip. Safety never depends on gossip"},
			&cli.StringFlag{Name: "dial-peers", Usage: "dial these addresses for peers instead of their --peers addresses (a proxy or NAT in between), as ID=HOST:PORT, comma-separated; identity checks still use --peers"},
			// For fault tests only (e2e, e2e/chaos): a node whose wall clock
			// is hours off. Hidden, since no operator should ever set it.
			&cli.DurationFlag{Name: "unsafe-wall-clock-offset", Hidden: true, Usage: "add this to the wall clock the node writes into lease commands (fault tests only)"},
			&cli.Uint64Flag{Name: "min-free-bytes", Value: server.DefaultMinFreeBytes, Usage: "free space the data directory's file system must keep: below it the master refuses appends (RESOURCE_EXHAUSTED, reason NO_SPACE) and an acceptor declines to vote for them, while reads, tails, trims and lease renewals go on; appends resume once space is back (0: no check)"},
			// For tests only: the node's free bytes come from this file.
			&cli.StringFlag{Name: "unsafe-disk-free-file", Hidden: true, Usage: "read the free bytes from this file instead of the file system (tests only)"},
		}, append(append(append(securityFlags, bugFlags...), metricsFlags...), logFlags...)...),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			var peers map[uint64]string
			var join []string
			for _, a := range strings.Split(c.String("join"), ",") {
				if a = strings.TrimSpace(a); a != "" {
					join = append(join, a)
				}
			}
			if c.String("peers") != "" {
				var err error
				if peers, err = server.ParsePeers(c.String("peers")); err != nil {
					return usageErr(err)
				}
			}
			dialPeers, err := server.ParseAddrs("--dial-peers", c.String("dial-peers"))
			if err != nil {
				return usageErr(err)
			}
			bug, err := plantedBug(c)
			if err != nil {
				return usageErr(err)
			}
			if d := c.Duration("learn-interval"); d < 10*time.Millisecond || d > time.Minute {
				return usageErr(fmt.Errorf("--learn-interval %v: pick 10ms to 1m", d))
			}
			if r := c.Int64("catchup-rate"); r == 0 || r < -1 {
				return usageErr(fmt.Errorf("--catchup-rate %d: bytes per second above 0, or -1 for no limit", r))
			}
			if d := c.Duration("retain-age"); d < 0 {
				return fmt.Errorf("--retain-age %v: a duration of 0 (never) or more", d)
			}
			if n := c.Int("max-entry-bytes"); n <= 0 || n > maxEntryLimit {
				return usageErr(fmt.Errorf("--max-entry-bytes %d: pick 1 to %d", n, maxEntryLimit))
			}
			logger, err := newLogger(c, os.Stderr)
			if err != nil {
				return err
			}
			mon, err := openMonitor(c, logger) // --metrics-addr (metrics.go)
			if err != nil {
				return err
			}
			logger = mon.logger(logger)                       // the status page keeps the recent events
			log := logger.With(event.KeyNode, c.Uint64("id")) // the server adds it to its own lines
			sig, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			tlsHolder, auth, security, err := serverSecurity(c, log)
			if err != nil {
				return err
			}
			gossipKey, err := readGossipKey(c.String("gossip-key-file"))
			if err != nil {
				return usageErr(err)
			}
			log.Info(event.Starting, "listen", c.String("listen"), "peers", c.String("peers"), "join", c.String("join"),
				"follow", c.Uint64("follow"), "data_dir", c.String("data-dir"), "cluster", c.String("cluster"),
				"tls", tlsHolder != nil, "auth", auth != nil, "gossip_encrypted", gossipKey != nil, "metrics_addr", c.String("metrics-addr"), "gossip_listen", c.String("gossip-listen"),
				"max_entry_bytes", c.Int("max-entry-bytes"), "min_free_bytes", c.Uint64("min-free-bytes"),
				"retain_entries", c.Uint64("retain-entries"), "retain_bytes", c.Uint64("retain-bytes"), "retain_age", c.Duration("retain-age"),
				"log_level", c.String("log-level"), "log_format", c.String("log-format"), "slow_fsync_threshold", slowSync(c), "version", versionLine())
			if a := c.String("pprof"); a != "" {
				if err := servePprof(a, log); err != nil {
					return err
				}
			}
			r, err := server.Start(context.Background(), server.Config{ID: c.Uint64("id"), Listen: c.String("listen"), Peers: peers, TLS: tlsHolder, Auth: auth,
				DataDir: c.String("data-dir"), Cluster: c.String("cluster"), MaxEntryBytes: c.Int("max-entry-bytes"), Logger: logger, SlowSyncThreshold: slowSync(c),
				Follow: c.Uint64("follow"), LearnInterval: c.Duration("learn-interval"), CatchupRate: c.Int64("catchup-rate"),
				RetainEntries: c.Uint64("retain-entries"), RetainBytes: c.Uint64("retain-bytes"), RetainAge: c.Duration("retain-age"), DialPeers: dialPeers, Bug: bug, Join: join, GossipListen: c.String("gossip-listen"), GossipKey: gossipKey,
				WallClockOffset: c.Duration("unsafe-wall-clock-offset"), MinFreeBytes: c.Uint64("min-free-bytes"), UnsafeDiskFreeFile: c.String("unsafe-disk-free-file"), Metrics: mon.registry(), StatusPage: mon.statusPage()})
			if err != nil {
				mon.close()
				return err
			}
			mon.serve(r, log)
			log.Info(event.Serving, event.KeyAddr, r.Addr(), "security", security, "data_dir", c.String("data-dir"))
			select {
			case <-r.Done():
			case <-sig.Done():
				log.Info(event.ShuttingDown, event.KeyReason, context.Cause(sig).Error())
				// A planned stop: a master hands its lease over first, so
				// that appends stall a few round trips, not a lease.
				hctx, cancel := context.WithTimeout(context.Background(), c.Duration("handover-timeout"))
				start := time.Now()
				var to uint64
				if c.Duration("handover-timeout") > 0 {
					to, err = r.HandOver(hctx)
				}
				cancel()
				switch {
				case err != nil:
					log.Warn(event.HandoverOnStop, event.KeyErr, err, event.KeyReason, "stopping anyway")
				case to != 0:
					log.Info(event.HandoverOnStop, event.KeyTo, to, event.KeyTook, time.Since(start).Round(time.Millisecond))
				}
				r.Stop()
			}
			return r.Wait()
		},
	}
}

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a whole local cluster in one process (Ctrl-C stops it)",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "nodes", Value: 3, Usage: "number of voting members (3 or 5)"},
			&cli.StringFlag{Name: "data-dir", Usage: "where the nodes keep their data (default: a new temporary directory)"},
			&cli.IntFlag{Name: "base-port", Value: 7001, Usage: "node i listens on 127.0.0.1:(base-port+i-1)"},
			&cli.BoolFlag{Name: "metrics", Usage: "serve node i's metrics, /healthz and /readyz (as paxosd server --metrics-addr) on 127.0.0.1:(metrics-base-port+i-1)"},
			&cli.IntFlag{Name: "metrics-base-port", Value: 9464, Usage: "with --metrics, node i's metrics port is metrics-base-port+i-1"},
		}, logFlags...),
		Description: `Plaintext, every caller served: paxosd server has the TLS and authentication flags.
Examples:
  paxosd dev                              # 3 nodes on 127.0.0.1:7001-7003, data in a new temporary directory
  paxosd dev --data-dir /tmp/px           # keep the log across runs
  paxosd dev --nodes 5 --base-port 8001   # 5 nodes on 127.0.0.1:8001-8005
  paxosd dev --metrics                    # and metrics on http://127.0.0.1:9464-9466/metrics`,
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			logger, err := newLogger(c, os.Stderr)
			if err != nil {
				return err
			}
			nodes, base := c.Int("nodes"), c.Int("base-port")
			if nodes != 3 && nodes != 5 {
				return usageErr(fmt.Errorf("--nodes %d: pick 3 or 5 (a majority of 3 survives one failure, of 5 two)", nodes))
			}
			if base < 1 || base+nodes-1 > 65535 {
				return usageErr(fmt.Errorf("--base-port %d: pick 1 to %d, so that %d ports from it exist", base, 65535-nodes+1, nodes))
			}
			mbase := c.Int("metrics-base-port")
			if c.IsSet("metrics-base-port") && !c.Bool("metrics") {
				return usageErr(errors.New("--metrics-base-port needs --metrics"))
			}
			if c.Bool("metrics") && (mbase < 1 || mbase+nodes-1 > 65535) {
				return usageErr(fmt.Errorf("--metrics-base-port %d: pick 1 to %d, so that %d ports from it exist", mbase, 65535-nodes+1, nodes))
			}
			peers := map[uint64]string{}
			var eps []string
			for i := 1; i <= nodes; i++ {
				addr := fmt.Sprintf("127.0.0.1:%d", base+i-1)
				peers[uint64(i)] = addr
				eps = append(eps, addr)
				// Find a busy port before anything starts or is created.
				l, err := net.Listen("tcp", addr)
				if err != nil {
					return busyPort(i, addr, nodes, err)
				}
				l.Close()
			}
			// The metrics listeners open before anything is created, and
			// stay open for the nodes.
			mons := make([]*monitor, nodes)
			closeMons := func() {
				for _, m := range mons {
					m.close()
				}
			}
			if c.Bool("metrics") {
				for i := range mons {
					addr := fmt.Sprintf("127.0.0.1:%d", mbase+i)
					m, err := listenMonitor(addr, false)
					if err != nil {
						closeMons()
						return fmt.Errorf("node %d: metrics address %s: %w; pick %d free ports with --metrics-base-port", i+1, addr, err, nodes)
					}
					// Each node's status page keeps its own node's events.
					m.page = &server.StatusPage{Events: server.NewEventRing(logger.Handler(), statusEvents), Tail: true}
					mons[i] = m
				}
			}
			dir, created := c.String("data-dir"), false
			if dir == "" {
				var err error
				if dir, err = os.MkdirTemp("", "paxosd-dev-"); err != nil {
					return err
				}
				created = true
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var running []*server.Server
			for i := 1; i <= nodes; i++ {
				ndir := fmt.Sprintf("%s/node%d", dir, i)
				logger.Info(event.Starting, event.KeyNode, i, "listen", peers[uint64(i)], "data_dir", ndir, "cluster", "dev",
					"tls", false, "auth", false, "log_level", c.String("log-level"), "log_format", c.String("log-format"), "slow_fsync_threshold", slowSync(c), "version", versionLine())
				r, err := server.Start(ctx, server.Config{ID: uint64(i), Peers: peers, DataDir: ndir,
					Cluster: "dev", Logger: mons[i-1].logger(logger), SlowSyncThreshold: slowSync(c), Metrics: mons[i-1].registry(), StatusPage: mons[i-1].statusPage()})
				if err != nil {
					closeMons()
					for _, r := range running {
						r.Stop()
						r.Wait()
					}
					if created {
						os.RemoveAll(dir) // a cluster that did not start leaves no directory behind
					}
					if errors.Is(err, syscall.EADDRINUSE) {
						return busyPort(i, peers[uint64(i)], nodes, err)
					}
					return fmt.Errorf("node %d: %w", i, err)
				}
				running = append(running, r)
			}
			metricsLine := ""
			for i, r := range running {
				mons[i].serve(r, logger.With(event.KeyNode, i+1))
				if mons[i] != nil {
					metricsLine += fmt.Sprintf("node %d: status page http://%s/, metrics http://%s/metrics\n", i+1, mons[i].lis.Addr(), mons[i].lis.Addr())
				}
			}
			epList := strings.Join(eps, ",")
			export, note := "", "(--endpoints defaults to these addresses)\n"
			if epList != defaultEndpoints {
				export, note = "  export PAXOSD_ENDPOINTS="+epList+"\n", ""
			}
			fmt.Printf(`paxosd dev: %d nodes on %s
data directory: %s
%s
In another terminal, try:
%s  go run ./cmd/paxosd append hello world
  go run ./cmd/paxosd read --from 0
  go run ./cmd/paxosd tail --from 0 -f
  go run ./cmd/paxosd status -w table
%s
Ctrl-C stops the cluster; start it again with --data-dir %s to keep the log.
`, nodes, epList, dir, metricsLine, export, note, dir)
			var first error
			for _, r := range running {
				if err := r.Wait(); err != nil && first == nil {
					first = err
				}
			}
			return first
		},
	}
}

// memberAddrs returns the addresses of every member, voter or follower, in
// the configuration in effect and in a pending one.
func memberAddrs(r *paxosdpb.ListMembersResponse) []string {
	var out []string
	seen := map[string]bool{}
	for _, m := range append(append([]*paxosdpb.MemberInfo(nil), r.Members...), r.PendingMembers...) {
		if m.Address != "" && !seen[m.Address] {
			seen[m.Address] = true
			out = append(out, m.Address)
		}
	}
	return out
}

// busyPort is dev's error for a port another program holds.
func busyPort(node int, addr string, nodes int, err error) error {
	return fmt.Errorf("node %d: %s is in use (%v); is another paxosd dev running? pick %d free ports with --base-port, e.g. paxosd dev --base-port 8001", node, addr, err, nodes)
}

func newClient(c *cli.Context) (*client.Client, error) {
	switch c.String("write-out") {
	case "simple", "json", "table":
	default:
		return nil, usageErr(fmt.Errorf("--write-out %q: use simple, json or table", c.String("write-out")))
	}
	var eps []string
	for _, ep := range strings.Split(c.String("endpoints"), ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	// One attempt may take a third of the command's time, so that a hung
	// endpoint leaves time to try the others.
	opt, err := clientSecurity(c, client.Options{CallTimeout: max(c.Duration("timeout")/3, 200*time.Millisecond)})
	if err != nil {
		return nil, err
	}
	return client.New(eps, opt)
}

// flagsAfterValues refuses `append x --flag`: the flag parser stops at the
// first value, so the flag would be appended as data. Values that start
// with '-' are accepted after a "--".
func flagsAfterValues(c *cli.Context) error {
	dashdash := false
	for _, a := range os.Args {
		dashdash = dashdash || a == "--"
	}
	for _, a := range c.Args().Slice() {
		if len(a) > 1 && a[0] == '-' && !dashdash {
			return usageErr(fmt.Errorf("%q after a value: put flags before the values (use -- before values that start with '-')", a))
		}
	}
	return nil
}

func indexFlag(name, usage string, required bool) *cli.StringFlag {
	return &cli.StringFlag{Name: name, Usage: usage, Required: required}
}

// parseIndex parses a log index given on the command line.
func parseIndex(c *cli.Context, name string) (uint64, error) {
	s := c.String(name)
	if s == "" {
		return 0, nil
	}
	var v uint64
	if _, err := fmt.Sscanf(s, "%d", &v); err != nil || strings.HasPrefix(s, "-") || fmt.Sprint(v) != strings.TrimLeft(s, "+") {
		return 0, usageErr(fmt.Errorf("--%s %q: an index is a non-negative integer", name, s))
	}
	return v, nil
}

func readCommand() *cli.Command {
	return &cli.Command{
		Name:  "read",
		Usage: "read entries from an index",
		Description: `Examples:
  paxosd read --from 0                       # up to 1000 entries from the start
  paxosd read --from 42 --count 10 -w json   # JSON Lines: {"index":42,"value":"..."}
  paxosd read --from 0 --consistency local   # any node, possibly stale
  paxosd read --from 0 -w json | paxosd append --json   # copies the entries exactly
Entries are bytes. The plain output is INDEX<TAB>VALUE, one line per entry: a backslash is written
\\, tab, newline and carriage return \t, \n and \r, other control characters and bytes that are not
UTF-8 \xHH. -w json gives "value" when the entry is valid UTF-8, else "value_base64" (tail too).`,
		Flags: append(clientFlags[:len(clientFlags):len(clientFlags)],
			indexFlag("from", "first index to read", true),
			&cli.IntFlag{Name: "count", Value: 1000, Usage: "at most this many entries (1..10000)"},
			&cli.StringFlag{Name: "consistency", Value: "linearizable", Usage: "linearizable (the master confirms) or local (any node, may be stale)"},
		),
		Action: func(c *cli.Context) error {
			if n := c.Int("count"); n < 1 || n > 10000 {
				return usageErr(fmt.Errorf("--count %d: pick 1 to 10000", n))
			}
			cons := c.String("consistency")
			if cons != "linearizable" && cons != "local" {
				return usageErr(fmt.Errorf("--consistency %q: use linearizable or local", cons))
			}
			return withIndexClient(c, "from", func(ctx context.Context, cl *client.Client, from uint64) error {
				res, err := cl.Read(ctx, from, c.Int("count"), cons == "local")
				if err != nil {
					return err
				}
				printEntries(os.Stdout, c.String("write-out"), res.Entries)
				return nil
			})
		},
	}
}

func tailCommand() *cli.Command {
	return &cli.Command{
		Name:  "tail",
		Usage: "print the log from an index; -f follows it as it grows",
		Description: `Examples:
  paxosd tail --from 0          # everything up to now
  paxosd tail --from 100 -f     # from index 100, then every new entry (Ctrl-C stops)
-f resumes on another node after a failure, with no gaps and no repeats.
Starting below the first index (after a trim) is an error that names it.`,
		Flags: append(clientFlags[:len(clientFlags):len(clientFlags)],
			indexFlag("from", "first index to print (default 0)", false),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep following new entries"},
		),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			from, err := parseIndex(c, "from")
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Reach the cluster (and learn of a trim below --from) within
			// --timeout; after that, -f follows for as long as it runs.
			pctx, cancel := context.WithTimeout(ctx, c.Duration("timeout"))
			_, err = cl.Read(pctx, from, 1, true)
			cancel()
			if err != nil {
				return err
			}
			out := bufio.NewWriter(os.Stdout)
			defer out.Flush()
			err = cl.Tail(ctx, from, c.Bool("follow"), func(e client.Entry) error {
				printEntries(out, c.String("write-out"), []client.Entry{e})
				if c.Bool("follow") {
					return out.Flush()
				}
				return nil
			})
			if ctx.Err() != nil {
				return nil // Ctrl-C
			}
			return err
		},
	}
}

func trimCommand() *cli.Command {
	return &cli.Command{
		Name:        "trim",
		Usage:       "drop every entry below an index, on every node",
		Description: "Example:\n  paxosd trim --before 1000",
		Flags: append(clientFlags[:len(clientFlags):len(clientFlags)],
			indexFlag("before", "drop entries below this index", true)),
		Action: func(c *cli.Context) error {
			return withIndexClient(c, "before", func(ctx context.Context, cl *client.Client, before uint64) error {
				first, err := cl.Trim(ctx, before)
				var pe *client.TrimPastEndError
				if errors.As(err, &pe) {
					return fmt.Errorf("--before %d is past the end of the log: the log ends at index %d (the index the next append gets), "+
						"so --before may be at most %d; nothing was trimmed", before, pe.End, pe.End)
				}
				if err != nil {
					return err
				}
				if c.String("write-out") == "json" {
					fmt.Printf(`{"first_index":%d}`+"\n", first)
				} else {
					fmt.Printf("log now starts at index %d\n", first)
				}
				return nil
			})
		},
	}
}

// withIndexClient checks a command's arguments, parses its index flag and
// runs f with a client and a context bounded by --timeout.
func withIndexClient(c *cli.Context, flag string, f func(ctx context.Context, cl *client.Client, index uint64) error) error {
	if err := noArgs(c); err != nil {
		return err
	}
	index, err := parseIndex(c, flag)
	if err != nil {
		return err
	}
	return withClient(c, func(ctx context.Context, cl *client.Client) error { return f(ctx, cl, index) })
}

// withClient runs f with a client of the command's flags and a context
// bounded by --timeout.
func withClient(c *cli.Context, f func(ctx context.Context, cl *client.Client) error) error {
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration("timeout"))
	defer cancel()
	return f(ctx, cl)
}

func masterCommand() *cli.Command {
	return &cli.Command{
		Name:  "master",
		Usage: "move the master role",
		Subcommands: []*cli.Command{{
			Name:  "transfer",
			Usage: "hand the master's lease to another voter, without waiting for it to run out",
			Description: `The master stops serving at once and hands its lease to the voter given
by --to, or to the one it picks: the voter that has applied the most among those it
heard from recently. The command returns when the new master serves. Appends sent
meanwhile are refused with "not the master" and retried by clients. Use it before
stopping or upgrading the master's machine (a SIGTERM does the same first).
Examples:
  paxosd master transfer
  paxosd master transfer --to 3 -w json`,
			Flags: append(clientFlags[:len(clientFlags):len(clientFlags)],
				&cli.Uint64Flag{Name: "to", Usage: "the voter to hand over to (default: the master picks)"}),
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				start := time.Now()
				var from, to uint64
				if err := withClient(c, func(ctx context.Context, cl *client.Client) (err error) {
					from, to, err = cl.TransferMaster(ctx, c.Uint64("to"))
					return err
				}); err != nil {
					return err
				}
				took := time.Since(start)
				if c.String("write-out") == "json" {
					fmt.Printf(`{"from":%d,"to":%d,"took_ms":%.1f}`+"\n", from, to, float64(took.Microseconds())/1000)
				} else if from == to {
					fmt.Printf("node %d is the master already\n", to)
				} else {
					fmt.Printf("master moved from node %d to node %d in %v\n", from, to, took.Round(time.Millisecond))
				}
				return nil
			},
		}},
	}
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show every node: role, master, progress",
		Description: `Asks every endpoint (with --cluster: every member, voters and followers, as the first endpoint
that answers lists them); then prints the configuration as one node applied it (paxosd members
list shows more). -w json prints one line per node, with its voters and followers.
Exits 4 (unavailable) when a node asked does not answer or no node that answered knows a master.
Examples:
  paxosd status -w table
  paxosd status --cluster -w json`,
		Flags: append(clientFlags[:len(clientFlags):len(clientFlags)],
			&cli.BoolFlag{Name: "cluster", Usage: "ask every member of the cluster (from paxosd members list), not only --endpoints"}),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			defer cl.Close()
			format := c.String("write-out")
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			if format == "table" {
				fmt.Fprintln(tw, "ENDPOINT\tID\tROLE\tMASTER\tBALLOT\tCHOSEN INSTANCE\tFIRST INDEX\tLAST INDEX\tINCARNATION")
			}
			var members *paxosdpb.ListMembersResponse
			listMembers := func() error {
				ctx, cancel := context.WithTimeout(context.Background(), c.Duration("timeout"))
				defer cancel()
				members, err = cl.ListMembers(ctx)
				return err
			}
			targets := cl.Endpoints()
			if c.Bool("cluster") {
				if err := listMembers(); err != nil {
					return fmt.Errorf("--cluster: no endpoint listed the members: %w", err)
				}
				targets = memberAddrs(members)
			}
			failed, masterKnown := 0, false
			var refused error // a node that answered with a refusal (credentials, role, cluster)
			for _, ep := range targets {
				ctx, cancel := context.WithTimeout(context.Background(), c.Duration("timeout"))
				st, err := cl.Status(ctx, ep)
				cancel()
				if err != nil {
					failed++
					if unavailable(err) {
						fmt.Fprintf(os.Stderr, "%s: unreachable: %v\n", ep, err)
					} else {
						refused = err
						fmt.Fprintf(os.Stderr, "%s: refused: %v\n", ep, err)
					}
					continue
				}
				masterKnown = masterKnown || st.MasterId != 0
				last := int64(st.EndIndex) - 1
				switch format {
				case "json":
					voters, others := []uint64{}, []uint64{}
					for _, m := range st.Members {
						if m.Voter {
							voters = append(voters, m.Id)
						} else {
							others = append(others, m.Id)
						}
					}
					b, _ := json.Marshal(map[string]any{"endpoint": ep, "id": st.NodeId, "role": st.Role, "master": st.MasterId,
						"ballot": st.Ballot, "chosen_instance": st.ChosenInstance, "first_index": st.FirstIndex, "last_index": last,
						"dedup_hits": st.DedupHits, "dedup_clients": st.DedupClients, "incarnation": fmt.Sprintf("%016x", st.Incarnation),
						"voters": voters, "followers": others, "gossip_address": st.GossipAddress,
						"disk_used_bytes": st.DiskUsedBytes, "disk_free_bytes": st.DiskFreeBytes, "min_free_bytes": st.MinFreeBytes})
					fmt.Println(string(b))
				case "table":
					fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%016x\n", ep, st.NodeId, st.Role, st.MasterId, st.Ballot, st.ChosenInstance, st.FirstIndex, last, st.Incarnation)
				default:
					gossipAddr := st.GossipAddress
					if gossipAddr == "" {
						gossipAddr = server.GossipOff
					}
					fmt.Printf("%s id=%d role=%s master=%d ballot=%d chosen_instance=%d first_index=%d last_index=%d dedup_hits=%d dedup_clients=%d incarnation=%016x gossip=%s disk_used=%d disk_free=%d min_free=%d\n",
						ep, st.NodeId, st.Role, st.MasterId, st.Ballot, st.ChosenInstance, st.FirstIndex, last, st.DedupHits, st.DedupClients, st.Incarnation, gossipAddr,
						st.DiskUsedBytes, st.DiskFreeBytes, st.MinFreeBytes)
				}
			}
			tw.Flush()
			switch {
			case failed == len(targets) && refused != nil:
				return refused // exit 1: the nodes answered, and refused
			case failed == len(targets):
				return unavailableErr(errors.New("no endpoint answered"))
			}
			if format != "json" && (members != nil || listMembers() == nil) {
				// The configuration, briefly (paxosd members list for more).
				fmt.Printf("members (as node %d applied them): %s\n", members.NodeId, summary(members.Members))
				if members.Pending != "" {
					fmt.Printf("pending: %s, in effect from instance %d\n", members.Pending, members.PendingFrom)
				}
			}
			switch {
			case failed > 0:
				return unavailableErr(fmt.Errorf("%d of %d nodes asked did not answer", failed, len(targets)))
			case !masterKnown:
				return unavailableErr(errors.New("no master known: no node that answered knows one (a master needs a majority of the voters up and in touch)"))
			}
			return nil
		},
	}
}
