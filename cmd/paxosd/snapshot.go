package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/backup"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/rpc"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
	"github.com/paxosd/paxosd/server"
	"github.com/paxosd/paxosd/storage"
)

func snapshotCommand() *cli.Command {
	return &cli.Command{
		Name:  "snapshot",
		Usage: "back up a cluster's log to a file, and seed a new cluster from one",
		Description: `A snapshot file is a consistent copy of one node's log: its applied state, the entries from the
first index and the exactly-once dedup table, with a SHA-256 (docs/operations.md, "Backup and restore").
  paxosd snapshot save --endpoints 127.0.0.1:7001 backup.snap
  paxosd snapshot status backup.snap -w table
  paxosd snapshot restore backup.snap --id 1 --peers 1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001 --data-dir /var/lib/paxosd/1
  (restore once per member of the new cluster, each with its own --id and --data-dir and the same --peers;
  then start each with paxosd server and the same --id, --peers, --data-dir and --cluster)`,
		Subcommands: []*cli.Command{snapshotSaveCommand(), snapshotRestoreCommand(), snapshotStatusCommand()},
	}
}

// fileArgs is a snapshot command's FILE and its flags, which may come
// before FILE or after it (paxosd snapshot restore FILE --id N ...).
type fileArgs struct {
	file  string
	c     *cli.Context
	after *flag.FlagSet // the flags after FILE, if any
}

// oneFile parses a snapshot command's arguments: one FILE, with flags
// before or after it.
func oneFile(c *cli.Context) (*fileArgs, error) {
	if c.NArg() == 0 {
		return nil, errors.New("give a FILE")
	}
	a := &fileArgs{file: c.Args().First(), c: c}
	if rest := c.Args().Tail(); len(rest) > 0 {
		a.after = flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
		a.after.SetOutput(io.Discard)
		for _, f := range c.Command.Flags {
			if err := f.Apply(a.after); err != nil {
				return nil, err
			}
		}
		if err := a.after.Parse(rest); err != nil {
			return nil, fmt.Errorf("after %s: %w", a.file, err)
		}
		if a.after.NArg() > 0 {
			return nil, fmt.Errorf("give one FILE; %q is one more", a.after.Arg(0))
		}
	}
	return a, nil
}

// isSet reports whether flag name was given, before or after FILE.
func (a *fileArgs) isSet(name string) bool {
	_, after := a.afterValue(name)
	return after || a.c.IsSet(name)
}

// afterValue returns flag name's value as given after FILE (under any of
// its names), if it was.
func (a *fileArgs) afterValue(name string) (string, bool) {
	names := []string{name}
	for _, f := range a.c.Command.Flags {
		if slices.Contains(f.Names(), name) {
			names = f.Names()
		}
	}
	var v string
	seen := false
	if a.after != nil {
		a.after.Visit(func(f *flag.Flag) {
			if slices.Contains(names, f.Name) {
				v, seen = f.Value.String(), true
			}
		})
	}
	return v, seen
}

// str, u64 and dur return a flag's value, as given after FILE, else before
// it (or its default).
func (a *fileArgs) str(name string) string {
	if v, ok := a.afterValue(name); ok {
		return v
	}
	return a.c.String(name)
}

func (a *fileArgs) u64(name string) uint64 {
	if v, ok := a.afterValue(name); ok {
		x, _ := strconv.ParseUint(v, 10, 64) // the flag set parsed it
		return x
	}
	return a.c.Uint64(name)
}

func (a *fileArgs) dur(name string) time.Duration {
	if v, ok := a.afterValue(name); ok {
		d, _ := time.ParseDuration(v)
		return d
	}
	return a.c.Duration(name)
}

func snapshotSaveCommand() *cli.Command {
	return &cli.Command{
		Name:      "save",
		Usage:     "save a consistent copy of one node's log to FILE",
		ArgsUsage: "FILE",
		Description: `Streams the log from the first endpoint that answers (a copy of what that node has applied:
ask the master for the newest) and writes it to FILE.tmp, then renames it to FILE. Appends and trims
go on meanwhile; the copy is of one point. Progress goes to stderr.
  paxosd snapshot save --endpoints 127.0.0.1:7001 backup.snap`,
		Flags: append([]cli.Flag{
			clientFlags[0],
			&cli.DurationFlag{Name: "timeout", Value: time.Hour, Usage: "give up when the whole save takes longer"},
		}, tlsClientFlags...),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			a, err := oneFile(c)
			if err != nil {
				return err
			}
			file := a.file
			ctx, cancel := context.WithTimeout(context.Background(), a.dur("timeout"))
			defer cancel()
			opt, err := clientSecurity(c, client.Options{})
			if err != nil {
				return err
			}
			var errs []string
			for _, ep := range strings.Split(a.str("endpoints"), ",") {
				if ep = strings.TrimSpace(ep); ep == "" {
					continue
				}
				h, sum, n, d, err := saveSnapshot(ctx, ep, file, os.Stderr, client.DialOptions(opt)...)
				if errors.Is(err, errNoStream) {
					errs = append(errs, err.Error())
					continue
				}
				if err != nil {
					return err
				}
				fmt.Printf("saved %s from node %d (%s): entries [%d,%d), applied instance %d, %d dedup rows, %d bytes in %v, sha256 %x\n",
					file, h.NodeID, ep, h.FirstIndex, h.NextIndex, h.Applied, h.DedupRows, n, d.Round(time.Millisecond), sum)
				return nil
			}
			return fmt.Errorf("no endpoint served a snapshot: %s", strings.Join(errs, "; "))
		},
	}
}

// errNoStream: the endpoint did not start a snapshot (try another).
var errNoStream = errors.New("no snapshot")

// saveSnapshot saves the log of the node at addr to file (through
// file.tmp), reporting progress to progress.
func saveSnapshot(ctx context.Context, addr, file string, progress io.Writer, dial ...grpc.DialOption) (backup.Header, []byte, int64, time.Duration, error) {
	start := time.Now()
	conn, err := grpc.NewClient(addr, append(dial, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(api.MaxMessageBytes)))...)
	if err != nil {
		return backup.Header{}, nil, 0, 0, fmt.Errorf("%w: %s: %v", errNoStream, addr, err)
	}
	defer conn.Close()
	stream, err := paxosdpb.NewLogServiceClient(conn).Snapshot(ctx, &paxosdpb.SnapshotRequest{})
	var first *paxosdpb.SnapshotResponse
	if err == nil {
		first, err = stream.Recv()
	}
	if err != nil {
		return backup.Header{}, nil, 0, 0, fmt.Errorf("%w: %s: %v", errNoStream, addr, err)
	}
	ph := first.GetHeader()
	if ph == nil {
		return backup.Header{}, nil, 0, 0, fmt.Errorf("%s: the snapshot stream did not start with a header", addr)
	}
	h := backup.Header{Cluster: ph.Cluster, ClusterID: ph.ClusterId, NodeID: ph.NodeId, Created: time.Now().UnixMilli(),
		Applied: ph.Applied, FirstIndex: ph.FirstIndex, NextIndex: ph.NextIndex,
		LeaseHolder: ph.LeaseHolder, LeaseVersion: ph.LeaseVersion, LogTime: ph.LogTime, DedupRows: ph.DedupRows}
	if h.FirstIndex > h.NextIndex {
		return h, nil, 0, 0, fmt.Errorf("%s: header with first index %d above next index %d", addr, h.FirstIndex, h.NextIndex)
	}
	tmp := file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return h, nil, 0, 0, err
	}
	fail := func(err error) (backup.Header, []byte, int64, time.Duration, error) {
		f.Close()
		os.Remove(tmp)
		return h, nil, 0, 0, err
	}
	fmt.Fprintf(progress, "snapshot save: node %d (%s): entries [%d,%d), applied instance %d, %d dedup rows\n",
		h.NodeID, addr, h.FirstIndex, h.NextIndex, h.Applied, h.DedupRows)
	w, err := backup.NewWriter(f, h)
	if err != nil {
		return fail(err)
	}
	var entries, rows uint64
	last := time.Now()
	report := func() {
		fmt.Fprintf(progress, "snapshot save: %d/%d entries, %d/%d dedup rows, %.1f MiB\n",
			entries, h.Entries(), rows, h.DedupRows, float64(w.Bytes)/(1<<20))
	}
	for resp := first; ; {
		if entries+uint64(len(resp.Entries)) > h.Entries() || len(resp.Dedup) > 0 && entries != h.Entries() ||
			rows+uint64(len(resp.Dedup)) > h.DedupRows {
			return fail(fmt.Errorf("%s: the stream sent more than its header announced", addr))
		}
		for _, e := range resp.Entries {
			if err := w.Entry(e); err != nil {
				return fail(err)
			}
		}
		for _, d := range resp.Dedup {
			if err := w.Row(rpc.DedupFromPB(d)); err != nil {
				return fail(err)
			}
		}
		entries += uint64(len(resp.Entries))
		rows += uint64(len(resp.Dedup))
		if time.Since(last) >= time.Second {
			report()
			last = time.Now()
		}
		if resp, err = stream.Recv(); err == io.EOF {
			break
		} else if err != nil {
			return fail(fmt.Errorf("%s: the snapshot stream broke after %d entries: %w", addr, entries, err))
		}
	}
	report()
	if entries != h.Entries() || rows != h.DedupRows {
		return fail(fmt.Errorf("%s: the stream ended after %d of %d entries and %d of %d dedup rows", addr, entries, h.Entries(), rows, h.DedupRows))
	}
	if err := w.Close(); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return h, nil, 0, 0, err
	}
	// The sum, as a reader computes it: check the file before it takes
	// FILE's name.
	_, sum, err := describeSnapshot(tmp)
	if err != nil {
		os.Remove(tmp)
		return h, nil, 0, 0, fmt.Errorf("the file written does not read back: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return h, nil, 0, 0, err
	}
	if d, err := os.Open(filepath.Dir(file)); err == nil {
		d.Sync()
		d.Close()
	}
	return h, sum, w.Bytes, time.Since(start), nil
}

// describeSnapshot reads a whole snapshot file and checks it: its header
// and SHA-256.
func describeSnapshot(file string) (backup.Header, []byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return backup.Header{}, nil, err
	}
	defer f.Close()
	r, err := backup.NewReader(f)
	if err != nil {
		return backup.Header{}, nil, fmt.Errorf("%s: %w", file, err)
	}
	for {
		if _, err := r.Entry(); err == io.EOF {
			break
		} else if err != nil {
			return r.Header, nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	for {
		if _, err := r.Row(); err == io.EOF {
			break
		} else if err != nil {
			return r.Header, nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	sum, err := r.Finish()
	if err != nil {
		return r.Header, nil, fmt.Errorf("%s: %w", file, err)
	}
	return r.Header, sum, nil
}

func snapshotStatusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "describe a snapshot file and verify its checksum",
		ArgsUsage: "FILE",
		Description: `Reads the whole file: a damaged or truncated one is an error (exit status 1).
  paxosd snapshot status backup.snap -w table`,
		Flags:        []cli.Flag{clientFlags[1]},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			a, err := oneFile(c)
			if err != nil {
				return err
			}
			file, format := a.file, a.str("write-out")
			if format != "simple" && format != "json" && format != "table" {
				return fmt.Errorf("--write-out %q: use simple, json or table", format)
			}
			h, sum, err := describeSnapshot(file)
			if err != nil {
				return err
			}
			fi, err := os.Stat(file)
			if err != nil {
				return err
			}
			created := time.UnixMilli(h.Created).UTC().Format(time.RFC3339)
			switch format {
			case "json":
				b, _ := json.Marshal(map[string]any{"file": file, "cluster": h.Cluster, "cluster_id": h.ClusterID, "node_id": h.NodeID,
					"created": created, "applied": h.Applied, "first_index": h.FirstIndex, "next_index": h.NextIndex,
					"entries": h.Entries(), "dedup_rows": h.DedupRows, "log_time": h.LogTime, "bytes": fi.Size(),
					"sha256": fmt.Sprintf("%x", sum), "version": backup.Version})
				fmt.Println(string(b))
			case "table":
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CLUSTER\tNODE\tCREATED\tAPPLIED\tFIRST INDEX\tNEXT INDEX\tENTRIES\tDEDUP ROWS\tBYTES\tSHA256")
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%x\n", h.Cluster, h.NodeID, created, h.Applied, h.FirstIndex,
					h.NextIndex, h.Entries(), h.DedupRows, fi.Size(), sum)
				tw.Flush()
			default:
				fmt.Printf("%s cluster=%s cluster_id=%d node=%d created=%s applied=%d first_index=%d next_index=%d entries=%d dedup_rows=%d log_time=%d bytes=%d sha256=%x (checksum ok)\n",
					file, h.Cluster, h.ClusterID, h.NodeID, created, h.Applied, h.FirstIndex, h.NextIndex, h.Entries(), h.DedupRows, h.LogTime, fi.Size(), sum)
			}
			return nil
		},
	}
}

func snapshotRestoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "seed one member's data directory of a new cluster from a snapshot file",
		ArgsUsage: "FILE",
		Description: `Run it once per voting member of the new cluster, each with its own --id and --data-dir and the
same --peers and --cluster; then start each member with paxosd server and the same --id, --peers,
--data-dir and --cluster. Every member then holds the snapshot's log, dedup table and applied
instance, and the new cluster goes on from there. --data-dir must be missing or empty; the
directory appears only once the whole file was read and its checksum matched.
  paxosd snapshot restore backup.snap --id 1 --peers 1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001 --data-dir /var/lib/paxosd/1
  paxosd server --id 1 --peers 1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001 --data-dir /var/lib/paxosd/1`,
		Flags: []cli.Flag{
			&cli.Uint64Flag{Name: "id", Usage: "the member's ID, listed in --peers"},
			&cli.StringFlag{Name: "peers", Usage: "every voting member of the new cluster, as ID=HOST:PORT, comma-separated (what paxosd server gets)"},
			&cli.StringFlag{Name: "data-dir", Usage: "the member's data directory: missing or empty"},
			&cli.StringFlag{Name: "cluster", Value: "paxosd", Usage: "the new cluster's name (what paxosd server gets)"},
		},
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			a, err := oneFile(c)
			if err != nil {
				return err
			}
			for _, f := range []string{"id", "peers", "data-dir"} {
				if !a.isSet(f) {
					return fmt.Errorf("--%s is required", f)
				}
			}
			file, cluster, dataDir := a.file, a.str("cluster"), a.str("data-dir")
			peers, err := server.ParsePeers(a.str("peers"))
			if err != nil {
				return err
			}
			id := a.u64("id")
			if _, ok := peers[id]; !ok {
				return fmt.Errorf("--id %d is not in --peers: restore seeds a voting member of the new cluster", id)
			}
			start := time.Now()
			h, rows, inc, err := restoreSnapshot(file, id, peers, cluster, dataDir)
			if err != nil {
				return err
			}
			cid := server.ClusterID(cluster, peers)
			if cid == h.ClusterID {
				fmt.Fprintf(os.Stderr, "paxosd: note: the new cluster has the cluster ID of the one the snapshot came from (the same --cluster and member IDs): never run the two side by side; another --cluster keeps them apart\n")
			}
			fmt.Printf("restored %s into %s as node %d of cluster %q (ID %d), incarnation %016x: entries [%d,%d), applied instance %d, %d dedup rows, in %v\n",
				file, dataDir, id, cluster, cid, inc, h.FirstIndex, h.NextIndex, h.Applied, rows,
				time.Since(start).Round(time.Millisecond))
			fmt.Printf("start it with: paxosd server --id %d --peers %s --data-dir %s --cluster %s\n", id, a.str("peers"), dataDir, cluster)
			return nil
		},
	}
}

// restoreSnapshot seeds dir from file as node id of the cluster (name,
// peers). It returns the file's header, the dedup rows restored and the
// new directory's incarnation.
func restoreSnapshot(file string, id uint64, peers map[uint64]string, name, dir string) (backup.Header, int, uint64, error) {
	f, err := os.Open(file)
	if err != nil {
		return backup.Header{}, 0, 0, err
	}
	defer f.Close()
	r, err := backup.NewReader(f)
	if err != nil {
		return backup.Header{}, 0, 0, fmt.Errorf("%s: %w", file, err)
	}
	h := r.Header
	meta := storage.Meta{ClusterID: server.ClusterID(name, peers), NodeID: id, K: idgen.DefaultK}
	// The state without the source's membership: the new cluster's comes
	// from --peers (the genesis configuration of every member).
	st := h.State()
	rs, err := storage.Restore(dir, meta, st)
	if err != nil {
		return h, 0, 0, err
	}
	fail := func(err error) (backup.Header, int, uint64, error) {
		rs.Abort()
		return h, 0, 0, err
	}
	for {
		e, err := r.Entry()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w; nothing was restored", file, err))
		}
		if err := rs.Entry(e); err != nil {
			return fail(err)
		}
	}
	var rows []core.DedupEntry
	for {
		d, err := r.Row()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("%s: %w; nothing was restored", file, err))
		}
		rows = append(rows, d)
	}
	if _, err := r.Finish(); err != nil {
		return fail(fmt.Errorf("%s: %w; nothing was restored", file, err))
	}
	slices.SortFunc(rows, func(a, b core.DedupEntry) int { return cmp.Compare(a.ClientID, b.ClientID) })
	inc := rs.Incarnation()
	if err := rs.Finish(rows); err != nil {
		return fail(err)
	}
	return h, len(rows), inc, nil
}
