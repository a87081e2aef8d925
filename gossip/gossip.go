// Package gossip tells paxosd nodes about each other: who is there, at which
// addresses, in which role, how far each has applied the log, and who seems
// alive. It wraps hashicorp/memberlist (SWIM failure detection and gossip)
// and knows nothing about Paxos.
//
// What it is for: views. The operators' member list, catch-up's choice of a
// peer to pull from, and the master's picture of who is up are fed from
// Peers and Alive.
//
// What it must never do: decide anything that safety rests on. A failure
// report is an opinion (a slow or partitioned node looks dead; a dead one
// looks alive until probes time out), so it never shortens a lease, never
// counts toward a quorum and never makes a node act as master. Gossip is
// also unauthenticated: anyone who reaches the port with the cluster's label
// can claim to be a member, which is harmless only because of the rule above.
//
// The invariant it keeps: every peer it reports has a positive decimal member
// ID as its memberlist name and was admitted as a node of this cluster; a peer
// is never forgotten during the run (a dead one stays, Alive false), and what
// a peer sent that does not decode is ignored and logged, never trusted and
// never a panic.
//
// Usage:
//
//	g, err := gossip.Start(gossip.Config{NodeID: 1, BindAddr: "10.0.0.1:7946",
//		APIAddr: "10.0.0.1:7000", Cluster: clusterID, Logger: logger})
//	if err != nil { ... }
//	defer g.Close()
//	if _, err := g.Join([]string{"10.0.0.2:7946"}); err != nil { ... } // retry later
//	g.SetLocal(gossip.RoleVoter, applied) // whenever it changes; cheap
//	for _, p := range g.Peers() { ... }
//
// Clusters are kept apart by memberlist's label: every packet and stream is
// prefixed with "paxosd/<cluster ID>", and a node drops (and logs) whatever
// carries another label, so a Join through a node of another cluster fails.
// The alive delegate checks again: it refuses a node whose name is not a
// member ID, or whose metadata names another cluster.
//
// How state travels: a node's role, applied instance and API address are its
// memberlist metadata (meta.go; compact, versioned, under the 512-byte
// limit). SetLocal only records them and wakes one goroutine, which
// re-advertises the node (memberlist.UpdateNode) at most every
// publishInterval. The new metadata then rides the alive-message gossip
// (every 100 ms, to 3 nodes, and piggybacked on probes), so it reaches the
// others within a few hundred milliseconds (40-250 ms on loopback: go test
// -v -run TestThreeNodesSeeEachOther ./gossip logs it); the full state
// exchange every pushPullInterval repairs a loss.
// That is chosen over broadcasting user messages because memberlist then
// does all the bookkeeping: a node that joins later gets everyone's current
// state in its join push-pull, and a newer state replaces an older queued
// one. Each update bumps the node's incarnation (uint32): at the rate cap
// that lasts over thirty years of uptime.
package gossip

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/paxosd/paxosd/event"
)

// Roles a node gossips. Any other string passed to SetLocal is gossiped as
// unknown ("").
const (
	RoleVoter    = "voter"
	RoleFollower = "follower"
)

// publishInterval is the least time between two re-advertisements of this
// node's state: SetLocal is called on every apply, and one alive broadcast
// per interval keeps the others within about a second of it at a bounded
// cost (a few small UDP packets per node per interval).
const publishInterval = 250 * time.Millisecond

// pushPullInterval is how often each node exchanges its full view with one
// other node: the repair for a state update that gossip lost.
const pushPullInterval = 5 * time.Second

// leaveTimeout bounds how long Close waits for its leave message to be
// gossiped. The leave goes out on the next gossip round (100 ms); if it is
// lost, the others find the node dead by probing instead.
const leaveTimeout = time.Second

// deadNodeReclaimTime is how long after a node was declared dead another
// node may take its name at another address. Almost at once: the name is a
// member ID, so a node by that name at a new address is that member
// restarted (paxosd's default gossip port is picked anew at every start),
// and memberlist's default, never, refused it until the dead node was
// forgotten (GossipToTheDeadTime, 15 s). A node that was only thought dead
// refutes, and the newer alive message wins as usual.
const deadNodeReclaimTime = time.Millisecond

// ErrClosed is returned by Join after Close.
var ErrClosed = errors.New("gossip: closed")

// Config configures one node's gossip.
type Config struct {
	// NodeID is the paxosd member ID; the memberlist node name is its
	// decimal form. Required.
	NodeID uint64
	// BindAddr is IP:PORT to listen on for gossip, TCP and UDP on the same
	// port. Port 0 picks a free one (tests); Addr tells which.
	BindAddr string
	// AdvertiseAddr is IP:PORT that the others should reach this node at,
	// when that is not BindAddr (NAT, a wildcard bind). Optional; port 0
	// means the bound port, and so does any port when BindAddr's is 0
	// (memberlist's rule). With a wildcard BindAddr and no AdvertiseAddr,
	// memberlist advertises one of the host's private addresses.
	AdvertiseAddr string
	// APIAddr is the node's gRPC address, gossiped to the others. Required,
	// HOST:PORT, at most 255 bytes.
	APIAddr string
	// Cluster is the cluster ID (server.ClusterID); a node of another
	// cluster is refused. Required: 0 is taken for a forgotten field.
	Cluster uint64
	// Logger receives memberlist's informational, warning and error lines
	// and this package's own; memberlist's debug lines are dropped. Nil
	// discards everything.
	Logger *slog.Logger
	// ProbeInterval is how often memberlist probes one random peer, which
	// sets how fast a failure is found (a dead node is reported after
	// about 4 intervals in a small cluster). Zero means memberlist's
	// default, 1 s. Tests use less.
	ProbeInterval time.Duration
	// Key, when set, encrypts and authenticates every gossip message and
	// stream (AES-GCM with memberlist's keyring): 16, 24 or 32 bytes,
	// the same on every node. A node without it, or with another key,
	// can neither read the cluster's gossip nor be admitted. Nil: gossip
	// in the clear (a cluster label still keeps other clusters out).
	Key []byte
	// OnDown, if set, is called (outside any lock, from memberlist's
	// goroutine) with the ID of a peer that memberlist declared dead or
	// that left. A hint: the node must not shorten a lease or count a
	// quorum with it.
	OnDown func(id uint64)
}

// validate says which field is wrong.
func (c *Config) validate() error {
	if c.NodeID == 0 {
		return errors.New("gossip: NodeID is 0: give the node's member ID")
	}
	if c.Cluster == 0 {
		return errors.New("gossip: Cluster is 0: give the cluster ID")
	}
	if _, _, err := splitIPPort(c.BindAddr); err != nil {
		return fmt.Errorf("gossip: BindAddr %q: %w", c.BindAddr, err)
	}
	switch len(c.Key) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("gossip: Key of %d bytes: give 16, 24 or 32 (AES-128, -192 or -256)", len(c.Key))
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitIPPort(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("gossip: AdvertiseAddr %q: %w", c.AdvertiseAddr, err)
		}
	}
	if _, _, err := net.SplitHostPort(c.APIAddr); err != nil {
		return fmt.Errorf("gossip: APIAddr %q: %w", c.APIAddr, err)
	}
	if len(c.APIAddr) > maxAPIAddrLen {
		return fmt.Errorf("gossip: APIAddr is %d bytes, at most %d", len(c.APIAddr), maxAPIAddrLen)
	}
	if c.ProbeInterval < 0 {
		return fmt.Errorf("gossip: ProbeInterval %v is negative", c.ProbeInterval)
	}
	return nil
}

// splitIPPort splits IP:PORT; memberlist binds and advertises IP addresses
// only, not names.
func splitIPPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	if net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("host %q is not an IP address", host)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	return host, int(port), nil
}

// Peer is one node as this node sees it.
type Peer struct {
	ID         uint64 // member ID
	APIAddr    string // gRPC address; "" until its metadata decoded
	GossipAddr string // IP:PORT it gossips on
	Role       string // RoleVoter, RoleFollower or "" unknown
	Applied    uint64 // its applied (chosen) instance, as it last gossiped it
	// Alive is memberlist's view: true while the peer is alive or only
	// suspected, false once it was declared dead or left. An opinion, not
	// a fact (see the package comment).
	Alive bool
	// Updated is when this node last learned a new state of the peer (a
	// join, or changed metadata); for this node itself, the last SetLocal.
	Updated time.Time
}

// peerState is a Peer plus what the package keeps about it.
type peerState struct {
	Peer
	badMeta bool // its last metadata did not decode (logged once until it does)
}

// Gossip is one node's membership in the gossip cluster. Its methods are
// safe for concurrent use.
type Gossip struct {
	cfg  Config
	log  *slog.Logger // cfg.Logger with the node's ID
	ml   *memberlist.Memberlist
	addr string // the advertised gossip address, fixed at Start

	mu      sync.Mutex
	role    string // this node's, as last set
	applied uint64
	updated time.Time
	peers   map[uint64]*peerState // every other node seen in this run
	closed  bool

	changed chan struct{} // SetLocal -> publisher; capacity 1
	stop    chan struct{} // closed by shutdown to end the publisher
	done    chan struct{} // closed by the publisher when it returns

	closeOnce sync.Once
}

// Start listens on cfg.BindAddr and starts gossiping as a cluster of one;
// Join makes it part of a bigger one. Close stops it.
func Start(cfg Config) (*Gossip, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &Gossip{
		cfg:     cfg,
		log:     cfg.Logger,
		updated: time.Now(),
		peers:   make(map[uint64]*peerState),
		changed: make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	g.log = g.log.With(event.KeyNode, cfg.NodeID)
	if n := len(g.localMeta()); n > memberlist.MetaMaxSize || n > maxMetaLen {
		// validate bounds the address, so this is a bug in encodeMeta.
		return nil, fmt.Errorf("gossip: metadata of %d bytes exceeds the limit of %d", n, min(memberlist.MetaMaxSize, maxMetaLen))
	}

	// DefaultLocalConfig is DefaultLANConfig with shorter timeouts (probe
	// timeout 200 ms, stream timeout 1 s, suspicion 3 probe intervals,
	// gossip every 100 ms, push-pull every 15 s). paxosd's nodes share a
	// LAN whose round trip is well under a millisecond, so these are still
	// generous, and they find failures and spread state faster.
	mc := memberlist.DefaultLocalConfig()
	// Two changes. Each broadcast is sent RetransmitMult times in a small
	// cluster, counting the copies piggybacked on pings and acks, so with
	// DefaultLocalConfig's 2 every copy of an update often went to one
	// peer and another never heard it (seen under load in the tests);
	// DefaultLANConfig's 4 makes that rare. And a full state exchange
	// every 5 s instead of 15 s bounds how long a lost update stays lost.
	// Both are small: an update is about 100 bytes, a full exchange about
	// 100 bytes per node.
	mc.RetransmitMult = 4
	mc.PushPullInterval = pushPullInterval
	mc.DeadNodeReclaimTime = deadNodeReclaimTime
	mc.Name = strconv.FormatUint(cfg.NodeID, 10)
	mc.BindAddr, mc.BindPort, _ = splitIPPort(cfg.BindAddr)
	mc.AdvertisePort = mc.BindPort
	if cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitIPPort(cfg.AdvertiseAddr)
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = mc.BindPort
		}
	}
	if cfg.ProbeInterval > 0 {
		mc.ProbeInterval = cfg.ProbeInterval
		// A probe must time out before the next one starts.
		mc.ProbeTimeout = min(mc.ProbeTimeout, cfg.ProbeInterval/2)
	}
	mc.Label = clusterLabel(cfg.Cluster)
	mc.SecretKey = cfg.Key // memberlist then verifies every message and stream, both ways
	mc.Logger = log.New(logWriter{g}, "", 0)
	d := &delegate{g: g}
	mc.Delegate = d
	mc.Events = d
	mc.Alive = d

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("gossip: start node %d on %s: %w", cfg.NodeID, cfg.BindAddr, err)
	}
	g.ml = ml
	// Read once, before the publisher runs: memberlist rewrites the local
	// node's fields in UpdateNode without a lock its readers could share.
	g.addr = ml.LocalNode().Address()
	go g.publish()
	return g, nil
}

// clusterLabel is the memberlist label of a cluster: packets and streams
// without it are dropped.
func clusterLabel(cluster uint64) string {
	return "paxosd/" + strconv.FormatUint(cluster, 10)
}

// Join contacts the seeds (gossip addresses, IP:PORT) and merges their view
// of the cluster into this node's. It returns how many seeds answered; the
// error is non-nil only when none did. No seeds is nothing to do (0, nil).
func (g *Gossip) Join(seeds []string) (int, error) {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	if len(seeds) == 0 {
		return 0, nil
	}
	n, err := g.ml.Join(seeds)
	if err != nil {
		return n, fmt.Errorf("gossip: node %d joining through %v: %w", g.cfg.NodeID, seeds, err)
	}
	return n, nil
}

// SetLocal records this node's role and applied instance; the others see
// them within about a second. It is cheap (a lock and a non-blocking send)
// and may be called on every apply.
func (g *Gossip) SetLocal(role string, applied uint64) {
	if role != RoleVoter && role != RoleFollower {
		role = ""
	}
	g.mu.Lock()
	if g.role == role && g.applied == applied {
		g.mu.Unlock()
		return
	}
	g.role, g.applied, g.updated = role, applied, time.Now()
	g.mu.Unlock()
	g.wake()
}

// publish re-advertises this node when its state changed, at most every
// publishInterval. It is owned by the Gossip and ends when stop is closed.
func (g *Gossip) publish() {
	defer close(g.done)
	timer := time.NewTimer(publishInterval)
	timer.Stop()
	defer timer.Stop()
	var last time.Time
	for {
		select {
		case <-g.stop:
			return
		case <-g.changed:
		}
		if wait := time.Until(last.Add(publishInterval)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-g.stop:
				return
			case <-timer.C:
			}
		}
		last = time.Now()
		// UpdateNode reads the newest state through NodeMeta, queues an
		// alive message, and waits for it to be sent. Its only error is
		// that wait timing out, which is not a failure: the message stays
		// queued. The timeout bounds how long Close waits for this loop.
		_ = g.ml.UpdateNode(publishInterval)
		// memberlist drops the update when a refutation (this node
		// answering a suspicion) took a higher incarnation between
		// UpdateNode picking its incarnation and applying it, and the
		// refutation carries the old metadata. Check, and go again.
		if !bytes.Equal(g.publishedMeta(), g.localMeta()) {
			g.wake()
		}
	}
}

// publishedMeta is the metadata memberlist holds for this node. Only the
// publisher may call it: memberlist writes that field in UpdateNode (and
// at Create), so reading it from the goroutine that calls UpdateNode does
// not race.
func (g *Gossip) publishedMeta() []byte {
	return bytes.Clone(g.ml.LocalNode().Meta)
}

// wake tells the publisher the state changed.
func (g *Gossip) wake() {
	select {
	case g.changed <- struct{}{}:
	default: // a publication is already pending; it will read the newest state
	}
}

// Peers returns every node seen in this run, this one included, dead ones
// with Alive false, sorted by ID.
func (g *Gossip) Peers() []Peer {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Peer, 0, len(g.peers)+1)
	out = append(out, g.selfLocked())
	for _, p := range g.peers {
		out = append(out, p.Peer)
	}
	slices.SortFunc(out, func(a, b Peer) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// selfLocked is this node as a Peer. g.mu is held.
func (g *Gossip) selfLocked() Peer {
	return Peer{
		ID:         g.cfg.NodeID,
		APIAddr:    g.cfg.APIAddr,
		GossipAddr: g.addr,
		Role:       g.role,
		Applied:    g.applied,
		Alive:      !g.closed,
		Updated:    g.updated,
	}
}

// Alive reports whether node id is alive (or only suspected) in
// memberlist's view, and whether it was seen at all in this run. This node
// is alive until closed.
func (g *Gossip) Alive(id uint64) (alive, known bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if id == g.cfg.NodeID {
		return !g.closed, true
	}
	p, ok := g.peers[id]
	if !ok {
		return false, false
	}
	return p.Alive, true
}

// Addr returns the gossip address others reach this node at: the bound one
// (with the port picked, for port 0) unless AdvertiseAddr says otherwise.
func (g *Gossip) Addr() string { return g.addr }

// Close leaves the cluster (waiting at most leaveTimeout for the leave to
// be gossiped, so the others see this node as left at once; a leave that
// does not go out is logged) and shuts memberlist down; every goroutine of
// this Gossip has ended when it returns. Later calls do nothing and return
// nil.
func (g *Gossip) Close() error { return g.shutdown(true) }

// kill shuts down without leaving, as a crash would look to the others
// (for tests).
func (g *Gossip) kill() { _ = g.shutdown(false) }

func (g *Gossip) shutdown(leave bool) error {
	var err error
	g.closeOnce.Do(func() {
		g.mu.Lock()
		g.closed = true
		g.mu.Unlock()
		close(g.stop)
		<-g.done // the publisher has ended: no UpdateNode races the leave or follows the shutdown
		if leave {
			// A leave that does not go out is no failure of Close: the
			// others find the node dead by probing instead. It happens
			// when the last peers leave at the same time (memberlist
			// gossips to no node that has left, so the leave waits for
			// the timeout).
			if e := g.ml.Leave(leaveTimeout); e != nil {
				g.log.Warn(event.GossipLeaveFailed, event.KeyErr, e, event.KeyReason, "the others will find it dead by probing")
			}
		}
		if e := g.ml.Shutdown(); e != nil {
			err = fmt.Errorf("gossip: node %d shutting down: %w", g.cfg.NodeID, e)
		}
	})
	return err
}

// localMeta encodes this node's state as gossip metadata.
func (g *Gossip) localMeta() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return encodeMeta(meta{cluster: g.cfg.Cluster, role: g.role, applied: g.applied, apiAddr: g.cfg.APIAddr})
}

// parseID returns the member ID a memberlist node name stands for: a
// positive decimal number in canonical form (no sign, no leading zeros, so
// two names never stand for one ID).
func parseID(name string) (uint64, bool) {
	id, err := strconv.ParseUint(name, 10, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 10) != name {
		return 0, false
	}
	return id, true
}

// delegate is the Gossip's face to memberlist, kept off Gossip's method
// set. memberlist calls it from its own goroutines, some while holding its
// node lock: it only takes g.mu, never calls back into memberlist.
type delegate struct{ g *Gossip }

// NodeMeta is this node's state, sent in every alive message.
func (d *delegate) NodeMeta(limit int) []byte {
	buf := d.g.localMeta()
	if len(buf) > limit {
		// Start checked the size against MetaMaxSize, the only limit
		// memberlist passes; an empty meta beats memberlist's panic.
		d.g.log.Error(event.GossipMetaLarge, "bytes", len(buf), "limit", limit, event.KeyReason, "sending none")
		return nil
	}
	return buf
}

// NotifyMsg, GetBroadcasts, LocalState and MergeRemoteState are unused: the
// state travels as metadata.
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// NotifyAlive admits a node only if its name is a member ID and its
// metadata, when it decodes, names this cluster. Metadata that does not
// decode does not keep a node out (its liveness is still worth knowing);
// it is ignored when the node's state is taken in.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	if _, ok := parseID(n.Name); !ok {
		return fmt.Errorf("node name %q is not a paxosd member ID", n.Name)
	}
	if m, err := decodeMeta(n.Meta); err == nil && m.cluster != d.g.cfg.Cluster {
		return fmt.Errorf("node %s is of cluster %d, not %d", n.Name, m.cluster, d.g.cfg.Cluster)
	}
	return nil
}

// NotifyJoin: a node is alive, new or back.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.g.observe(n, true) }

// NotifyUpdate: an alive node's metadata changed.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.g.observe(n, true) }

// NotifyLeave: a node was declared dead or left.
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.g.observe(n, false) }

// observe takes in memberlist's news about a node. For an alive node it
// decodes the metadata; what does not decode is logged (once, until the
// node sends metadata that does) and the node's last good state is kept.
func (g *Gossip) observe(n *memberlist.Node, alive bool) {
	id, ok := parseID(n.Name)
	if !ok || id == g.cfg.NodeID {
		return // NotifyAlive refused the first; this node reports itself
	}
	var m meta
	var err error
	if alive {
		m, err = decodeMeta(n.Meta)
		if err == nil && m.cluster != g.cfg.Cluster {
			err = fmt.Errorf("cluster %d, not %d", m.cluster, g.cfg.Cluster)
		}
	}
	g.mu.Lock()
	p, ok := g.peers[id]
	if !ok {
		p = &peerState{Peer: Peer{ID: id}}
		g.peers[id] = p
	}
	p.GossipAddr = n.Address()
	p.Alive = alive
	logBad := false
	if alive {
		if err != nil {
			logBad = !p.badMeta
			p.badMeta = true
		} else {
			p.badMeta = false
			p.APIAddr, p.Role, p.Applied, p.Updated = m.apiAddr, m.role, m.applied, time.Now()
		}
	}
	g.mu.Unlock()
	if logBad {
		g.log.Warn(event.GossipBadState, event.KeyPeer, id, event.KeyAddr, n.Address(), event.KeyErr, err)
	}
	if !alive && g.cfg.OnDown != nil && !g.isClosed() {
		g.cfg.OnDown(id)
	}
}

// logWriter turns memberlist's log lines into event.GossipLine records at
// the line's level ([INFO], [WARN], [ERR]; the line whole in attribute
// "line"). It drops
// memberlist's debug lines (one per stream, join attempt and port pick) and,
// once the node is closing, the errors of its goroutines racing the closed
// sockets.
type logWriter struct {
	g *Gossip
}

var _ io.Writer = logWriter{}

func (w logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	if strings.HasPrefix(line, "[DEBUG]") {
		return len(p), nil
	}
	if strings.Contains(line, "use of closed network connection") && w.g.isClosed() {
		return len(p), nil
	}
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[ERR]"):
		level = slog.LevelError
	}
	w.g.log.Log(context.Background(), level, event.GossipLine, "line", line)
	return len(p), nil
}

func (g *Gossip) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}
