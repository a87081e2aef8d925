package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/node"
	"github.com/paxosd/paxosd/rpc"
	"github.com/paxosd/paxosd/storage"
)

// serverConfig is what `paxosd server` (and each node of `paxosd dev`) runs.
type serverConfig struct {
	id            uint64
	listen        string
	peers         map[uint64]string
	dataDir       string
	cluster       string
	maxEntryBytes int
	logf          func(format string, args ...any)
}

// parsePeers parses "1=127.0.0.1:7001,2=127.0.0.1:7002".
func parsePeers(s string) (map[uint64]string, error) {
	out := map[uint64]string{}
	addrs := map[string]uint64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		idStr, addr, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("--peers: %q is not ID=HOST:PORT", part)
		}
		id, err := strconv.ParseUint(idStr, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("--peers: node ID %q must be a positive integer", idStr)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--peers: address of node %d: %v", id, err)
		}
		if _, dup := out[id]; dup {
			return nil, fmt.Errorf("--peers: node ID %d appears twice", id)
		}
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("--peers: nodes %d and %d have the same address %s", other, id, addr)
		}
		out[id], addrs[addr] = addr, id
	}
	if len(out) == 0 {
		return nil, errors.New("--peers is empty: list every voting member as ID=HOST:PORT")
	}
	if len(out) > idgen.DefaultK {
		return nil, fmt.Errorf("--peers: at most %d members", idgen.DefaultK)
	}
	return out, nil
}

// clusterID derives the cluster's ID from its name and member IDs, so that a
// data directory or a peer of another cluster is recognised.
func clusterID(name string, peers map[uint64]string) uint64 {
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%v", name, ids)
	return h.Sum64() | 1
}

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

// runningNode is one started node with everything it owns.
type runningNode struct {
	cfg   serverConfig
	node  *node.Node
	store *storage.Store
	tr    *rpc.Transport
	api   *rpc.LogServer
	grpc  *grpc.Server
	lis   net.Listener
	done  chan error
}

// startNode opens storage, listens, and runs the node until ctx ends.
func startNode(ctx context.Context, cfg serverConfig) (*runningNode, error) {
	self, ok := cfg.peers[cfg.id]
	if !ok {
		return nil, fmt.Errorf("--peers does not contain this node's ID %d: list every voting member, this one included", cfg.id)
	}
	if cfg.listen == "" {
		cfg.listen = self
	}
	if err := checkListen(cfg.listen, self, cfg.id); err != nil {
		return nil, err
	}
	cid := clusterID(cfg.cluster, cfg.peers)
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(cfg.dataDir)), 0o755); err != nil {
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	store, err := storage.Open(cfg.dataDir, storage.Meta{ClusterID: cid, NodeID: cfg.id, K: idgen.DefaultK}, storage.Options{})
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("listen on %s: %w (is another paxosd or program using that port? pick another with --listen)", cfg.listen, err)
	}
	r := &runningNode{cfg: cfg, store: store, lis: lis, done: make(chan error, 1)}
	var n *node.Node
	r.tr = rpc.NewTransport(rpc.TransportConfig{ClusterID: cid, SelfID: cfg.id, Peers: cfg.peers, Logf: cfg.logf,
		// A peer message holds at most a batch (4 MiB) or a catch-up
		// response (4 MiB) plus one append that may exceed them.
		MaxMessageBytes: 8<<20 + 2*cfg.maxEntryBytes},
		func(m core.Message) { n.Deliver(m) })
	n, err = node.Open(node.Config{ID: cfg.id, ClusterID: cid, Members: cfg.peers, DataDir: cfg.dataDir,
		MaxEntryBytes: cfg.maxEntryBytes, Logf: cfg.logf}, store, r.tr)
	if err != nil {
		r.tr.Close()
		lis.Close()
		store.Close()
		return nil, err
	}
	r.node = n
	voters := map[uint64]bool{}
	for id := range cfg.peers {
		voters[id] = true
	}
	r.api = rpc.NewLogServer(n, cfg.id, cid, cfg.peers, voters)
	// The transport's options carry the message limits and keepalive policy
	// for every service on this port.
	r.grpc = grpc.NewServer(r.tr.ServerOptions()...)
	r.tr.Register(r.grpc)
	r.api.Register(r.grpc)
	go r.grpc.Serve(lis)
	go func() {
		err := n.Run(ctx)
		r.grpc.Stop()
		r.api.Close()
		r.tr.Close()
		if cerr := store.Close(); err == nil {
			err = cerr
		}
		r.done <- err
	}()
	return r, nil
}
