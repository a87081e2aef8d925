// Package server wires one complete paxosd node: storage, the peer transport,
// the node runtime and the client API, on one listener. The paxosd command
// runs it (server, and every node of dev), and tests run whole clusters of
// it in one process.
//
// It must never start a node whose identity is in doubt: its address must be
// the one its peers dial, its data directory its own (storage checks that).
// It must never run a node whose data directory a peer knew with another
// incarnation: that directory was created anew and lost what the node voted
// with. Peers refuse its messages; it stops with the refusal as its error.
//
// It also runs the node's gossip (gossip.go: discovery and failure
// detection for members list), which it feeds and never reads for a
// decision: the node, the transport and the core never see it.
package server

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/gossip"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
	"github.com/paxosd/paxosd/node"
	"github.com/paxosd/paxosd/rpc"
	"github.com/paxosd/paxosd/storage"
)

// Config is what `paxosd server` (and each node of `paxosd dev`) runs.
type Config struct {
	ID            uint64
	Listen        string            // default: this node's address in Peers
	Peers         map[uint64]string // every voting member
	DataDir       string
	Cluster       string // cluster name; with the member IDs, the cluster ID
	MaxEntryBytes int    // default 1 MiB
	// Logger receives the node's events (package event; docs/operations.md,
	// "Logs and events"): the server, its node, transport and gossip add
	// the node's ID to every line. Nil discards. The paxosd command builds
	// it from --log-level and --log-format.
	Logger *slog.Logger
	// SlowSyncThreshold: a synced write slower than this is logged
	// (node.Config; default node.DefaultSlowSyncThreshold).
	SlowSyncThreshold time.Duration
	// LearnInterval is how often the node asks its peers how far they are
	// (default 1 s); CatchupRate bounds the bytes per second of chosen
	// values it serves to peers catching up (default 64 MB/s; negative: no
	// bound).
	LearnInterval time.Duration
	CatchupRate   int64
	// RetainEntries, when non-zero, trims the log automatically to about
	// that many entries (the master proposes the trims).
	RetainEntries uint64
	// RetainBytes and RetainAge, when non-zero, trim the log automatically
	// to about that many bytes of entries, or to the entries applied within
	// that much log time (node.Config).
	RetainBytes uint64
	RetainAge   time.Duration
	// Follow, when non-zero, makes this node a non-voting follower of that
	// member: it is not in Peers, and Listen is its address.
	Follow uint64
	// GRPCOptions are added to the server's (tests inject faults with
	// interceptors).
	GRPCOptions []grpc.ServerOption
	// DialPeers, ID -> HOST:PORT, are dialed to reach those peers instead
	// of their Peers addresses (a proxy or NAT in between; the fault tests
	// put a fault-injecting proxy there). Identity checks still use Peers.
	DialPeers map[uint64]string
	// Bug plants a known protocol bug (instance.Bug), for the fault tests
	// that must catch it. Only a binary built with the paxosd_bugs tag
	// sets it.
	Bug instance.Bug
	// WallClockOffset shifts the node's wall clock (node.Config), for
	// fault tests only (the hidden --unsafe-wall-clock-offset flag).
	WallClockOffset time.Duration
	// Join, for a node started without Peers, lists the client addresses of
	// any members of a running cluster. On an empty data directory the node
	// asks one of them to add it as a follower (at Listen, with its new
	// directory's incarnation), and keeps what it learns (the cluster's name
	// and the voters it was created with) in the directory, so that later
	// starts need no member. A directory that joined before needs no Join.
	Join []string
	// JoinTimeout bounds the first join (default 1 minute).
	JoinTimeout time.Duration
	// GossipListen is IP:PORT to gossip on (TCP and UDP), for discovery and
	// failure detection: members list's alive column. Default (""): the
	// host of Listen with port 0, a port the OS picks, which the others
	// learn through the API (Status). GossipOff runs no gossip. A host name
	// is resolved to its first address. Safety never depends on gossip.
	GossipListen string
	// GossipKey encrypts and authenticates gossip (gossip.Config.Key): 16,
	// 24 or 32 bytes, the same on every node. Nil: gossip in the clear.
	GossipKey []byte
	// MinFreeBytes is the free space the data directory's file system must
	// keep (0: no check; paxosd server defaults to DefaultMinFreeBytes).
	// Below it the master refuses appends with NO_SPACE and an acceptor
	// declines to vote for them (node.Config.MinFreeBytes).
	MinFreeBytes uint64
	// UnsafeDiskFreeFile, for tests only (the hidden
	// --unsafe-disk-free-file flag): the node reads its free bytes, a
	// decimal number, from this file instead of asking the file system, so
	// that a test can fill and empty the disk at will.
	UnsafeDiskFreeFile string
	// GossipProbeInterval is how often gossip probes a peer (default 1 s;
	// a dead node is reported after a few intervals). Tests use less.
	GossipProbeInterval time.Duration
	// TLS, when set, serves TLS on the listener and dials peers and the
	// master with it (tls.go). Auth, when set, is who may call what
	// (rpc.Auth); nil serves everyone.
	TLS  *TLSHolder
	Auth *rpc.Auth
	// Metrics, when set, receives the node's Prometheus metrics (metrics.go;
	// NewRegistry makes one per node).
	Metrics prometheus.Registerer
	// StatusPage, when set, keeps what the live status page shows (a
	// sample of appends each second, the last entries while someone
	// watches) and StatusHandler serves it (statuspage.go). Its latency
	// chart needs Metrics.
	StatusPage *StatusPage
}

// ParsePeers parses "1=127.0.0.1:7001,2=127.0.0.1:7002".
func ParsePeers(s string) (map[uint64]string, error) {
	out, err := ParseAddrs("--peers", s)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("--peers is empty: list every voting member as ID=HOST:PORT")
	}
	if len(out) > idgen.DefaultK {
		return nil, fmt.Errorf("--peers: at most %d members", idgen.DefaultK)
	}
	return out, nil
}

// ParseAddrs parses a list of ID=HOST:PORT (the value of flag, which errors
// name): IDs positive and distinct, addresses distinct.
func ParseAddrs(flag, s string) (map[uint64]string, error) {
	out := map[uint64]string{}
	addrs := map[string]uint64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		idStr, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not ID=HOST:PORT", flag, part)
		}
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%s: node ID %q must be a positive integer", flag, idStr)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%s: address of node %d: %v", flag, id, err)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("%s: node ID %d appears twice", flag, id)
		}
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("%s: nodes %d and %d have the same address %s", flag, other, id, addr)
		}
		out[id], addrs[addr] = addr, id
	}
	return out, nil
}

// ClusterID derives the cluster's ID from its name and member IDs, so that a
// data directory or a peer of another cluster is recognised.
func ClusterID(name string, peers map[uint64]string) uint64 {
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%v", name, ids)
	return h.Sum64() | 1
}

// DefaultCatchupRate is the bytes per second a node serves to peers catching
// up unless told otherwise: well above what one disk of a small machine
// writes, well below what starves the master's own fsyncs.
const DefaultCatchupRate = 64 << 20

// DefaultMinFreeBytes is paxosd server's --min-free-bytes: room for what a
// node may still write once it refuses appends: the values the master
// proposed before the check stopped it (a window of 32 instances of up to
// 4 MiB, 128 MiB at worst), the flush of a full memtable (the write buffer
// is 64 MiB) and the compaction a trim starts to give space back, which
// writes new tables before it deletes the old ones.
const DefaultMinFreeBytes = 256 << 20

// errStopRequested is the cause Stop cancels the node's context with.
var errStopRequested = errors.New("stop requested")

// maxFollowersPerMember bounds the followers one member pushes to.
const maxFollowersPerMember = 16

// checkListen requires a node to listen where --peers says it is (or on all
// interfaces at that port). Two processes started with the same --id then
// collide on the port instead of both voting with the same ballot slot,
// which could choose two values in one instance.
func checkListen(listen, self string, id uint64) error {
	lh, lp, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--listen %q: %v", listen, err)
	}
	_, sp, _ := net.SplitHostPort(self)
	if listen == self || (lp == sp && (lh == "" || lh == "0.0.0.0" || lh == "::")) {
		return nil
	}
	return fmt.Errorf("--listen %s does not match node %d's address %s in --peers: a node must listen where its peers reach it", listen, id, self)
}

// Server is one started node with everything it owns.
type Server struct {
	cfg    Config
	node   *node.Node
	store  *storage.Store
	tr     *rpc.Transport
	gossip *gossip.Gossip // nil when off
	incs   *rpc.Incarnations
	api    *rpc.LogServer
	grpc   *grpc.Server
	lis    net.Listener
	done   chan struct{} // closed when stopped; err is then set
	cancel context.CancelFunc
	err    error
	log    *slog.Logger // cfg.Logger with the node's ID
	heard  atomic.Bool  // a peer's message has arrived (or did before this start)
	// metrics are the node's (nil without Config.Metrics); page is the
	// status page's state (nil without Config.StatusPage).
	metrics *node.Metrics
	page    *statusPage
}

// FollowerRejectedError stops a follower whose cluster refuses it for
// good: its --cluster or --peers make another cluster ID than its members',
// or the address it has for its member reaches another node, or its ID is
// taken. Server.Wait returns it.
type FollowerRejectedError struct {
	ID        uint64 // the follower
	Rejection rpc.PeerRejection
}

func (e *FollowerRejectedError) Error() string {
	rj := e.Rejection
	var why string
	switch rj.Kind {
	case rpc.RejectWrongCluster:
		why = fmt.Sprintf("wrong cluster: member %d (%s) is in another cluster; a follower's --cluster and --peers must be exactly "+
			"the ones its members were started with (with the member IDs, the name makes the cluster ID)", rj.Peer, rj.Addr)
	case rpc.RejectWrongNode:
		why = fmt.Sprintf("unknown member: the address of member %d in --peers (%s) reaches another node; check --peers and --follow", rj.Peer, rj.Addr)
	default:
		why = fmt.Sprintf("node ID %d is taken: member %d (%s) knows a node %d at another address; give this follower an ID of its own", e.ID, rj.Peer, rj.Addr, e.ID)
	}
	return fmt.Sprintf("follower %d stops: %s (member %d said: %s); it does not serve a log that is not its cluster's", e.ID, why, rj.Peer, rj.Message)
}

// Addr returns the address the server listens on.
func (r *Server) Addr() string { return r.lis.Addr().String() }

// Node returns the node runtime.
func (r *Server) Node() *node.Node { return r.node }

// Transport returns the peer transport (tests cut links through it).
func (r *Server) Transport() *rpc.Transport { return r.tr }

// Done is closed when the server has stopped; Wait then returns why.
func (r *Server) Done() <-chan struct{} { return r.done }

// Stop stops the server and waits for it; it returns what stopped it (nil
// for a clean stop).
func (r *Server) Stop() error {
	r.cancel()
	return r.Wait()
}

// HandOver, when this node is the master, hands its lease to the best
// caught-up voter and waits, until ctx ends, for the successor's own lease
// to be chosen (this node applies an instance after the handover), so that
// a planned stop stalls appends for a few round trips instead of a lease.
// It returns the successor (0 if this node was not master).
func (r *Server) HandOver(ctx context.Context) (uint64, error) {
	to, err := r.node.TransferMaster(ctx, 0)
	var nm *core.NotMasterError
	if errors.As(err, &nm) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var handedAt uint64 // the applied frontier once the handover applied here
	for {
		st, err := r.node.Status(ctx)
		if err != nil {
			return to, err
		}
		switch {
		case handedAt == 0 && st.Master == to:
			handedAt = st.Applied
		case handedAt != 0 && st.Applied > handedAt:
			return to, nil // the successor's first instance: its phase 1 is done
		}
		select {
		case <-ctx.Done():
			return to, fmt.Errorf("handing over to node %d: %w", to, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// follow makes the transport, the incarnation check and the API server
// follow the membership the node applied (node.Config.OnMembers: called
// from the node's loop; none of them blocks).
func (r *Server) follow(h members.History) {
	if h.IsZero() {
		return // a static follower that has not learned the membership yet
	}
	addrs, voters, incs := map[uint64]string{}, map[uint64]bool{}, map[uint64]uint64{}
	for _, c := range []members.Config{h.Cur, h.Latest()} {
		for _, m := range c.Members {
			addrs[m.ID], incs[m.ID] = m.Addr, m.Incarnation
			voters[m.ID] = voters[m.ID] || m.Role == members.Voter
		}
	}
	r.incs.SetConfigured(incs)
	r.tr.SetMembers(addrs, voters)
	r.api.SetMembers(h)
}

// Wait waits for the server to stop and returns why (nil: a clean stop).
func (r *Server) Wait() error {
	<-r.done
	return r.err
}

// Start opens storage, listens, and runs the node until ctx ends or Stop.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Peers) == 0 {
		return startJoined(ctx, cfg)
	}
	if len(cfg.Join) > 0 {
		return nil, errors.New("--join and --peers exclude each other: a member the cluster was created with runs with --peers, a node that joins a running cluster with --join")
	}
	self, ok := cfg.Peers[cfg.ID]
	switch {
	case cfg.Follow != 0 && ok:
		return nil, fmt.Errorf("node %d is a voting member in --peers; a follower has an ID of its own, not in --peers", cfg.ID)
	case cfg.Follow != 0 && cfg.Peers[cfg.Follow] == "":
		return nil, fmt.Errorf("--follow %d: not a member in --peers", cfg.Follow)
	case cfg.Follow != 0 && cfg.Listen == "":
		return nil, errors.New("a follower needs --listen: the address its member pushes to and clients read from")
	case cfg.Follow != 0:
		self = cfg.Listen
	case !ok:
		return nil, fmt.Errorf("--peers does not contain this node's ID %d: list every voting member, this one included (a node that joins a running cluster runs with --join instead)", cfg.ID)
	}
	for id := range cfg.DialPeers {
		if _, ok := cfg.Peers[id]; !ok || id == cfg.ID {
			return nil, fmt.Errorf("--dial-peers: node %d is not a peer of node %d in --peers", id, cfg.ID)
		}
	}
	if cfg.Listen == "" {
		cfg.Listen = self
	}
	if err := checkListen(cfg.Listen, self, cfg.ID); err != nil {
		return nil, err
	}
	cid := ClusterID(cfg.Cluster, cfg.Peers)
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(cfg.DataDir)), 0o755); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	// Listen first: a node that cannot serve must not initialize a directory.
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another paxosd or program using that port? pick another with --listen)", cfg.Listen, err)
	}
	store, err := storage.Open(cfg.DataDir, storage.Meta{ClusterID: cid, NodeID: cfg.ID, K: idgen.DefaultK}, storage.Options{Logf: storageLogf(cfg)})
	if err != nil {
		lis.Close()
		return nil, err
	}
	return run(ctx, cfg, self, cid, lis, store, nil)
}

// startJoined starts a node that joined a running cluster: from its data
// directory, or, on an empty one, by asking a member (cfg.Join) to add it.
func startJoined(ctx context.Context, cfg Config) (*Server, error) {
	switch {
	case cfg.Follow != 0:
		return nil, errors.New("--follow needs --peers: a static follower names the members it follows (a node that joins with --join follows by itself)")
	case len(cfg.DialPeers) > 0:
		return nil, errors.New("--dial-peers needs --peers")
	case cfg.Listen == "" && len(cfg.Join) == 0:
		return nil, errors.New("--peers is empty or missing: list every voting member the cluster was created with, as ID=HOST:PORT (a node that joins a running cluster runs with --join and --listen instead)")
	case cfg.Listen == "":
		return nil, errors.New("--join needs --listen HOST:PORT: the address every member and client reaches this node at")
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %v", cfg.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return nil, fmt.Errorf("--listen %s: a joining node's address goes into the membership, so members must be able to dial it: give a host, not %q", cfg.Listen, host)
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(cfg.DataDir)), 0o755); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another paxosd or program using that port? pick another with --listen)", cfg.Listen, err)
	}
	store, err := storage.OpenJoined(cfg.DataDir, cfg.ID, idgen.DefaultK, storage.Options{Logf: storageLogf(cfg)})
	var seeds []string // gossip addresses the join answer listed
	switch {
	case errors.Is(err, storage.ErrNoStore) && len(cfg.Join) == 0:
		lis.Close()
		return nil, fmt.Errorf("--peers or --join is required: %s holds no data directory of a node that joined a running cluster; "+
			"start a member the cluster was created with using --peers, or a new node with --join HOST:PORT of a member", cfg.DataDir)
	case errors.Is(err, storage.ErrNoStore):
		store, seeds, err = join(ctx, cfg)
	}
	if err != nil {
		lis.Close()
		return nil, err
	}
	rec, _ := store.Joined()
	cfg.Peers, cfg.Cluster = rec.Genesis, rec.Cluster
	cid := ClusterID(rec.Cluster, rec.Genesis)
	if cid != store.Meta().ClusterID {
		lis.Close()
		store.Close()
		return nil, fmt.Errorf("%s: the cluster ID %d does not follow from the join record (cluster %q, voters %v): the directory is damaged", cfg.DataDir, store.Meta().ClusterID, rec.Cluster, rec.Genesis)
	}
	return run(ctx, cfg, cfg.Listen, cid, lis, store, seeds)
}

// join asks a member (cfg.Join) to add this node as a follower, then
// creates its data directory with what the answer says and the incarnation
// it was added with. It also returns the gossip addresses the answer
// listed, to join the gossip through at once.
func join(ctx context.Context, cfg Config) (*storage.Store, []string, error) {
	var b [8]byte
	var inc uint64
	for inc == 0 {
		if _, err := crand.Read(b[:]); err != nil {
			return nil, nil, fmt.Errorf("drawing an incarnation: %w", err)
		}
		inc = binary.BigEndian.Uint64(b[:])
	}
	d := cfg.JoinTimeout
	if d == 0 {
		d = time.Minute
	}
	// Not this node itself: it listens, but serves nothing until it joined.
	via := slices.DeleteFunc(slices.Clone(cfg.Join), func(a string) bool { return a == cfg.Listen })
	if len(via) == 0 {
		return nil, nil, fmt.Errorf("--join lists only this node's own address %s: give the address of a member", cfg.Listen)
	}
	copt := client.Options{CallTimeout: 5 * time.Second, Retries: 1 << 20}
	if cfg.TLS != nil {
		copt.TLS = cfg.TLS.DialConfig()
	}
	cl, err := client.New(via, copt)
	if err != nil {
		return nil, nil, fmt.Errorf("--join: %w", err)
	}
	defer cl.Close()
	jctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	log := cfg.Logger.With(event.KeyNode, cfg.ID)
	log.Info(event.Joining, "via", cfg.Join, "listen", cfg.Listen, "incarnation", fmt.Sprintf("%016x", inc))
	resp, err := cl.Join(jctx, cfg.ID, cfg.Listen, inc)
	if err != nil {
		return nil, nil, fmt.Errorf("joining through %v: %w", cfg.Join, err)
	}
	rec := storage.JoinRecord{Cluster: resp.Cluster, Genesis: map[uint64]string{}}
	for _, m := range resp.Genesis {
		rec.Genesis[m.Id] = m.Address
	}
	cid := ClusterID(rec.Cluster, rec.Genesis)
	if cid != resp.ClusterId {
		return nil, nil, fmt.Errorf("joining through %v: the answer's cluster ID %d does not follow from its name %q and voters %v (a member of another build?)", cfg.Join, resp.ClusterId, rec.Cluster, rec.Genesis)
	}
	store, err := storage.Open(cfg.DataDir, storage.Meta{ClusterID: cid, NodeID: cfg.ID, K: idgen.DefaultK}, storage.Options{Incarnation: inc, Join: &rec, Logf: storageLogf(cfg)})
	if err != nil {
		return nil, nil, err
	}
	var seeds []string
	if resp.GossipAddress != "" {
		seeds = append(seeds, resp.GossipAddress)
	}
	for _, m := range resp.Members {
		if m.GossipAddress != "" && m.Id != cfg.ID {
			seeds = append(seeds, m.GossipAddress)
		}
	}
	log.Info(event.Joined, "cluster", rec.Cluster, "cluster_id", cid, event.KeyReason, fmt.Sprintf("a follower; promote it with: paxosd members promote %d", cfg.ID))
	return store, seeds, nil
}

// run starts a node on its listener and open store; it joins the gossip
// through seeds, if any, and through the members it knows.
func run(ctx context.Context, cfg Config, self string, cid uint64, lis net.Listener, store *storage.Store, seeds []string) (*Server, error) {
	if cfg.MaxEntryBytes == 0 {
		cfg.MaxEntryBytes = api.DefaultMaxEntryBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Server{cfg: cfg, store: store, lis: lis, done: make(chan struct{}), log: cfg.Logger.With(event.KeyNode, cfg.ID)}
	links := newLinkLog(r.log, time.Now)
	var n *node.Node
	maxFollowers := maxFollowersPerMember
	var followers []instance.Follower
	if cfg.Follow != 0 {
		maxFollowers = 0
		followers = []instance.Follower{{ID: cfg.ID, Target: cfg.Follow}}
	}
	cc := instance.DefaultConfig()
	cc.Bug = cfg.Bug
	tick := time.Duration(instance.DefaultTickMillis) * time.Millisecond
	if cfg.LearnInterval > 0 {
		cc.LearnInterval = max(1, uint64(cfg.LearnInterval/tick))
	}
	switch {
	case cfg.CatchupRate == 0:
		cc.CatchupBytesPerTick = DefaultCatchupRate / int(time.Second/tick)
	case cfg.CatchupRate > 0:
		cc.CatchupBytesPerTick = max(1, int(cfg.CatchupRate)/int(time.Second/tick))
	}
	// The largest peer message follows from the window and entry limits
	// (instance.Config.MaxMessageBytes); the transport must carry it, or a
	// phase 1 or catch-up could stall for good on a dropped message.
	ncfg := node.Config{ID: cfg.ID, ClusterID: cid, Members: cfg.Peers, Followers: followers, DataDir: cfg.DataDir, Core: cc,
		MaxEntryBytes: cfg.MaxEntryBytes, RetainEntries: cfg.RetainEntries, RetainBytes: cfg.RetainBytes, RetainAge: cfg.RetainAge, Logger: cfg.Logger, SlowSyncThreshold: cfg.SlowSyncThreshold,
		WallClockOffset: cfg.WallClockOffset, OnMembers: func(h members.History) { r.follow(h) },
		MinFreeBytes: cfg.MinFreeBytes}
	nodeMetrics, grpcMetricOpts := r.instrument()
	ncfg.Metrics, r.metrics = nodeMetrics, nodeMetrics
	if f := cfg.UnsafeDiskFreeFile; f != "" {
		ncfg.DiskFree = func() (uint64, error) {
			b, err := os.ReadFile(f)
			if err != nil {
				return 0, err
			}
			return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		}
	}
	maxMsg := node.MaxMessageBytes(ncfg)
	// Peers' incarnations: remembered on first sight, durably, before
	// anything they sent is delivered.
	known, err := store.PeerIncarnations()
	if err != nil {
		lis.Close()
		store.Close()
		return nil, err
	}
	// A peer that refuses this node's incarnation stops it with that error.
	ctx, cancel := context.WithCancelCause(ctx)
	r.cancel = func() { cancel(errStopRequested) } // the node logs it as why it stopped
	r.incs = rpc.NewIncarnations(known, func(id, inc uint64) error {
		if err := store.SetPeerIncarnation(id, inc); err != nil {
			return err
		}
		r.log.Info(event.PeerIncarnationRecorded, event.KeyPeer, id, "incarnation", fmt.Sprintf("%016x", inc))
		return nil
	})
	// isFollower: a static follower, or a directory that joined and is not
	// (yet) a voter by its own membership. The transport's goroutines may
	// call it before node.Open has returned: they read the node through
	// opened.
	var opened atomic.Pointer[node.Node]
	isFollower := func() bool {
		if cfg.Follow != 0 {
			return true
		}
		if _, joined := store.Joined(); !joined {
			return false
		}
		on := opened.Load()
		if on == nil {
			return true
		}
		m, ok := on.Members().Latest().Get(cfg.ID)
		return !ok || m.Role != members.Voter
	}
	// A node remembers its peers' incarnations when it first hears from
	// them: a directory that knows one has heard from its cluster before,
	// and so has one that joined (the join was an exchange with it).
	_, joined := store.Joined()
	r.heard.Store(len(known) > 0 || joined)
	ntls := tlsOptions(cfg.TLS)
	r.tr = rpc.NewTransport(rpc.TransportConfig{ClusterID: cid, SelfID: cfg.ID, Peers: cfg.Peers, DialPeers: cfg.DialPeers, Logger: cfg.Logger, OnLink: links.note, DialCreds: ntls.peer, CheckSender: ntls.checkSender,
		SelfAddress: self, MaxFollowers: maxFollowers, MaxMessageBytes: maxMsg,
		Incarnation: store.Incarnation(), CheckPeer: r.incs.Check,
		Refused: func(e *rpc.IncarnationError) {
			// A peer that has not applied the membership naming this
			// directory (it was down, or behind) refuses it as it knew the
			// node before; this node's own membership says who is right. A
			// directory that joined never votes but where the membership
			// names its incarnation (the core's rule), so a refusal is only
			// a peer behind: it stops when a removal says so.
			if _, joined := store.Joined(); joined {
				r.log.Warn(event.IncarnationKept, event.KeyPeer, e.Peer, "incarnation", fmt.Sprintf("%016x", store.Incarnation()),
					event.KeyReason, "this directory joined the cluster: the peer is behind")
				return
			}
			if n != nil {
				if m, ok := n.Members().Latest().Get(cfg.ID); ok && m.Incarnation != 0 && m.Incarnation == store.Incarnation() {
					r.log.Warn(event.IncarnationKept, event.KeyPeer, e.Peer, "incarnation", fmt.Sprintf("%016x", store.Incarnation()),
						event.KeyReason, "the peer has not applied the membership that names it yet")
					return
				}
			}
			cancel(e)
		},
		Rejected: func(rj rpc.PeerRejection) {
			// A follower its cluster refuses for good stops, rather than
			// serve a log that is not the cluster's: another cluster ID
			// from any member (they all share it), or any refusal from the
			// member a static follower follows. A member that is down is
			// not a refusal: the follower keeps retrying it.
			if !isFollower() || !(rj.Kind == rpc.RejectWrongCluster || (cfg.Follow != 0 && rj.Peer == cfg.Follow)) {
				return
			}
			cancel(&FollowerRejectedError{ID: cfg.ID, Rejection: rj})
		}},
		func(m core.Message) {
			if !r.heard.Load() {
				r.heard.Store(true)
			}
			n.Deliver(m)
		})
	n, err = node.Open(ncfg, store, r.tr)
	if err != nil {
		cancel(nil)
		r.tr.Close()
		lis.Close()
		store.Close()
		return nil, err
	}
	r.node = n
	opened.Store(n)
	// Gossip feeds members list's alive, and its reports of a dead peer
	// reach the node as a hint for catch-up and for who is live
	// (node.PeerDown); leases and quorums never read it.
	r.gossip, err = startGossip(ctx, cfg, self, cid, n.PeerDown)
	if err != nil {
		cancel(nil)
		r.tr.Close()
		lis.Close()
		store.Close()
		return nil, err
	}
	voters := map[uint64]bool{}
	for id := range cfg.Peers {
		voters[id] = true
	}
	if _, joined := store.Joined(); joined {
		voters[cfg.ID] = false // until the membership says otherwise (follow)
	}
	addrs := maps.Clone(cfg.Peers)
	addrs[cfg.ID] = self
	r.api = rpc.NewLogServer(n, cfg.ID, cid, addrs, voters)
	r.api.Incarnation = store.Incarnation()
	r.api.Cluster, r.api.Genesis = cfg.Cluster, maps.Clone(cfg.Peers)
	r.api.Gossip = r.gossip
	r.api.Connected = func() bool { return r.heard.Load() || !isFollower() }
	r.api.DialCreds = ntls.forward
	// The transport's options carry the message limits and keepalive policy
	// for every service on this port; TLS, the cluster check, auth and the
	// gRPC metrics come after them.
	opts := append(append(r.tr.ServerOptions(), ntls.serverOpts...), rpc.ServerOptions(cfg.Auth, cfg.Cluster)...)
	r.grpc = grpc.NewServer(append(append(opts, grpcMetricOpts...), cfg.GRPCOptions...)...)
	r.tr.Register(r.grpc)
	r.api.Register(r.grpc)
	r.registerDiscovery(ctx, r.grpc) // gRPC health and reflection (health.go)
	go r.grpc.Serve(lis)
	pctx, stopPage := context.WithCancel(ctx)
	var pageLoops sync.WaitGroup
	if cfg.StatusPage != nil {
		r.page = newStatusPage(r, *cfg.StatusPage)
		pageLoops.Go(func() { r.page.run(pctx) })
		if cfg.StatusPage.Tail {
			pageLoops.Go(func() { r.page.runTail(pctx) })
		}
	}
	gctx, stopGossip := context.WithCancel(ctx)
	linksDone := make(chan struct{})
	go func() {
		defer close(linksDone)
		links.run(gctx)
	}()
	gossipDone := make(chan struct{})
	if r.gossip != nil {
		go func() {
			defer close(gossipDone)
			r.runGossip(gctx, seeds)
		}()
	} else {
		close(gossipDone)
	}
	go func() {
		err := n.Run(ctx)
		var refused *rpc.IncarnationError
		var rejected *FollowerRejectedError
		if errors.As(context.Cause(ctx), &refused) {
			err = refused
		} else if errors.As(context.Cause(ctx), &rejected) {
			err = rejected
		}
		// The page's loops and gossip first: they call the node and
		// the API. Gossip's Close tells the others this node left.
		stopPage()
		pageLoops.Wait()
		stopGossip()
		<-gossipDone
		<-linksDone
		if r.gossip != nil {
			if gerr := r.gossip.Close(); gerr != nil {
				r.log.Warn(event.GossipCloseFailed, event.KeyErr, gerr)
			}
		}
		r.grpc.Stop()
		r.api.Close()
		r.tr.Close()
		if cerr := store.Close(); err == nil {
			err = cerr
		}
		r.err = err
		close(r.done)
	}()
	return r, nil
}

// storageLogf turns storage's notices (storage.Options.Logf) into
// event.StorageNotice lines.
func storageLogf(cfg Config) func(string, ...any) {
	log := cfg.Logger.With(event.KeyNode, cfg.ID)
	return func(format string, args ...any) {
		log.Warn(event.StorageNotice, "detail", fmt.Sprintf(format, args...))
	}
}

// Gossip returns the node's gossip, nil when it runs none.
func (r *Server) Gossip() *gossip.Gossip { return r.gossip }
