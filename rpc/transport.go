package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// Transport defaults, used for the zero values of TransportConfig.
const (
	DefaultMaxMessageBytes  = 4 << 20 // largest encoded core.Message, and largest batch payload
	DefaultQueueLen         = 4096    // messages queued per peer
	DefaultDialTimeout      = 5 * time.Second
	DefaultKeepaliveTime    = 10 * time.Second // gRPC raises client values below 10 s to 10 s
	DefaultKeepaliveTimeout = 5 * time.Second
)

const (
	// grpcHeadroom is added to MaxMessageBytes for the gRPC message limits,
	// so that a batch holding one message of MaxMessageBytes (plus protobuf
	// framing and the batch header) always fits.
	grpcHeadroom = 64 << 10
	// batchHeaderBytes bounds the encoded size of PeerBatch's four uint64
	// fields (tag + 10-byte varint each).
	batchHeaderBytes = 4 * 11
	// redialGap is the least time between two connection attempts to a
	// peer that is sending to this node while the link to it is down: its
	// batches prove it is back, so the backoff is cut short, but a link
	// that works one way only must not be redialled at every batch.
	redialGap = 100 * time.Millisecond
	// keepaliveMinTime is the shortest client ping interval the server
	// tolerates: below gRPC's 10 s client floor, so no peer is ever cut off
	// for pinging.
	keepaliveMinTime = 5 * time.Second
)

// TransportConfig configures a Transport. Zero values take the defaults.
type TransportConfig struct {
	// ClusterID is stamped on every outgoing batch; incoming batches of
	// another cluster are rejected. SelfID is this node's ID.
	ClusterID, SelfID uint64
	// Peers maps node IDs to "host:port" addresses. An entry for SelfID is
	// ignored. Send reaches only these peers; messages are received from any
	// node of the cluster that dials this one.
	Peers map[uint64]string
	// DialPeers, when it has an entry for a peer, is the address dialed to
	// reach it instead of its Peers address (a proxy or NAT in between).
	// Identity checks still use Peers: batches carry and are checked
	// against the Peers addresses.
	DialPeers map[uint64]string
	// SelfAddress is this node's address when it is not in Peers (a
	// follower); batches carry it so that members can answer.
	SelfAddress string
	// MaxFollowers, when positive, lets up to that many nodes not in Peers
	// (followers) connect: the first valid batch from one, carrying its
	// address, adds it as a peer. Zero: only Peers are answered.
	MaxFollowers int
	// MaxMessageBytes bounds one encoded message and the payload of one
	// batch (default DefaultMaxMessageBytes). The gRPC send and receive
	// limits are this plus a small headroom for framing, on both sides.
	MaxMessageBytes int
	// QueueLen is the capacity of each peer's outgoing queue, in messages
	// (default DefaultQueueLen). When it is full, Send drops and counts.
	QueueLen int
	// DialTimeout bounds one attempt to connect to a peer and open its
	// stream (default DefaultDialTimeout).
	DialTimeout time.Duration
	// KeepaliveTime and KeepaliveTimeout: ping an idle connection after
	// KeepaliveTime and drop it when the ping is not answered within
	// KeepaliveTimeout, on both the client and the server side.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// Logger receives connection events and rejections (package event);
	// the transport adds SelfID to every line. Nil discards.
	Logger *slog.Logger
	// OnLink, when set, is called by a peer's sender goroutine when its
	// link comes up or goes down (err says why), once per change: the
	// first failure of a link never up counts as down. It must not block.
	OnLink func(peer uint64, addr string, up bool, err error)

	// Incarnation is the incarnation of this node's data directory, sent
	// in every batch (0: none, as from an older build).
	Incarnation uint64
	// CheckPeer, when set, is called with the sender and incarnation of
	// every incoming batch from a node in Peers (a voting member), of the
	// right cluster and node, before anything in it is delivered; an error
	// rejects the batch and ends the stream. Followers are not checked.
	// An *IncarnationError (see NewIncarnationCheck) ends it with
	// FAILED_PRECONDITION and an IncarnationRefused detail, which tells the
	// sender. It is called on every batch: keep it cheap.
	CheckPeer func(id, incarnation uint64) error
	// Refused, when set, is called when a peer refused this node's
	// incarnation: this node's data directory is not the one its peers
	// knew, and it must not vote with it. The caller should stop the node.
	// It may be called more than once, from several peers' goroutines.
	Refused func(*IncarnationError)
	// Rejected, when set, is called when a peer rejected this node's
	// batches for a reason that retrying cannot cure: another cluster ID
	// (RejectWrongCluster), addressed to another node ID
	// (RejectWrongNode), or the same node ID connected from another
	// address (RejectDuplicateNode). A peer that is down or unreachable is
	// never a rejection. It may be called more than once, from several
	// peers' goroutines.
	Rejected func(PeerRejection)
	// DialCreds, when set, secure the connection to peer id (nil:
	// plaintext). The server side's credentials are the grpc.Server's
	// (ServerOptions gives plaintext; a node with TLS adds its own
	// grpc.Creds after them).
	DialCreds func(id uint64) credentials.TransportCredentials
	// CheckSender, when set, is called with each incoming stream's context
	// and the sender each batch claims, before anything in it is
	// delivered; an error rejects the batch and ends the stream with
	// PermissionDenied (peer mTLS: the sender's certificate must name it).
	CheckSender func(ctx context.Context, from uint64) error
}

// The kinds of PeerRejection; each is the ErrorInfo reason (domain
// "paxosd") of the FAILED_PRECONDITION status the rejecting peer ends the
// stream with.
const (
	RejectWrongCluster  = "PEER_WRONG_CLUSTER"
	RejectWrongNode     = "PEER_WRONG_NODE"
	RejectDuplicateNode = "PEER_DUPLICATE_NODE"
)

// PeerRejection is a peer's definite refusal of this node's batches.
type PeerRejection struct {
	Peer    uint64 // the peer that rejected them
	Addr    string // the address it was reached at
	Kind    string // RejectWrongCluster, RejectWrongNode or RejectDuplicateNode
	Message string // the peer's reason, naming both sides
}

// peerRejection returns the kind and message of a rejection that err (a
// stream's end) carries, or ok false.
func peerRejection(err error) (kind, msg string, ok bool) {
	st, d, found := api.Detail[*errdetails.ErrorInfo](err)
	if !found || st.Code() != codes.FailedPrecondition || d.GetDomain() != "paxosd" {
		return "", "", false
	}
	switch d.GetReason() {
	case RejectWrongCluster, RejectWrongNode, RejectDuplicateNode:
		msg = st.Message()
		// The peer's own words, without what wrapped them.
		var se interface{ GRPCStatus() *status.Status }
		if errors.As(err, &se) {
			msg = se.GRPCStatus().Message()
		}
		return d.GetReason(), msg, true
	}
	return "", "", false
}

func (c *TransportConfig) setDefaults() {
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.QueueLen <= 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.KeepaliveTime <= 0 {
		c.KeepaliveTime = DefaultKeepaliveTime
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// PeerStats counts the traffic with one peer since NewTransport.
type PeerStats struct {
	// Address is the peer's configured address ("" for a node that sent to
	// us but is not in Peers).
	Address string
	// Connected: a stream to the peer is open and has not failed.
	Connected bool
	// Sent counts messages handed to gRPC on an open stream, in Batches
	// batches. gRPC buffers: a sent message may still be lost if the stream
	// breaks.
	Sent, Batches uint64
	// Dropped counts messages to this peer that were not sent: queue full,
	// oversized, queued when a connection attempt failed, or in a batch whose
	// send failed. Oversized is the part of Dropped that exceeded
	// MaxMessageBytes.
	Dropped, Oversized uint64
	// Received counts messages from this peer handed to deliver.
	Received uint64
	// LastError is the most recent connection or stream error with this
	// peer, as the receiver reported it when it did (a rejection names both
	// cluster IDs); "" if there was none. It is kept after a reconnect.
	LastError string
}

// TransportStats is a snapshot of a Transport's counters.
type TransportStats struct {
	// Peers has one entry per configured peer and per other node that sent
	// messages to this one.
	Peers map[uint64]PeerStats
	// Received counts messages handed to deliver, from all nodes.
	Received uint64
	// Unroutable counts messages given to Send for no configured peer (or
	// for this node itself) or with a From other than SelfID; they were
	// dropped.
	Unroutable uint64
	// Corrupt counts received messages dropped because they did not decode,
	// exceeded MaxMessageBytes, or did not match their batch (To not this
	// node, From not the batch's sender).
	Corrupt uint64
	// Rejected counts incoming batches rejected whole (and their streams
	// closed) because of a wrong cluster ID or destination node;
	// LastRejection says why the last one was.
	Rejected      uint64
	LastRejection string
}

// Transport carries core.Message between the nodes of one cluster over gRPC.
// Outgoing, it keeps one persistent client-streaming RPC (Peer.Send) per
// peer, opened when there is something to send and reopened with backoff
// after a failure; a sender goroutine per peer drains that peer's queue and
// packs everything queued at that moment into one PeerBatch. Incoming, it
// serves Peer.Send on the grpc.Server given to Register and hands every valid
// message to deliver.
type Transport struct {
	cfg     TransportConfig
	log     *slog.Logger // cfg.Logger with SelfID
	deliver func(core.Message)
	peersMu sync.RWMutex
	peers   map[uint64]*peer // Peers, members of the configuration, and followers added as they connect
	dynamic int              // followers added as they connected (not members)
	// voters are the voting members whose batches CheckPeer checks: Peers
	// until SetMembers, then the configuration's voters.
	voters map[uint64]bool
	// members are the peers that Peers or the configuration named (the
	// others were admitted as followers).
	members map[uint64]bool

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // sender goroutines, server handlers and their receivers

	// mu orders Close against the server side: handlers register in wg and
	// call deliver under mu.RLock only while closed is false.
	mu         sync.RWMutex
	closed     bool
	isClosed   atomic.Bool // closed, for Send's fast path
	closeErrMu sync.Mutex
	closeErr   []error

	unroutable, corrupt, rejected atomic.Uint64
	received                      atomic.Uint64

	statMu        sync.Mutex
	recvFrom      map[uint64]*atomic.Uint64 // messages delivered, by sender
	lastRejection string
}

// peer is the outgoing side of one link.
type peer struct {
	id   uint64
	addr string
	q    chan []byte // encoded messages
	// ctx ends the peer's sender: the transport closes, or the peer left
	// the membership (SetMembers).
	ctx    context.Context
	cancel context.CancelFunc

	// redial is set, and wake signalled, when the peer sent this node a
	// batch while the link to it was down: it is back, so the sender stops
	// waiting out its backoff.
	redial atomic.Bool
	wake   chan struct{}

	sent, batches, dropped, oversized atomic.Uint64
	connected, full                   atomic.Bool
	cut                               atomic.Bool // fault injection: the link is down both ways

	mu      sync.Mutex
	lastErr string
}

// NewTransport returns a transport for cfg that hands each valid incoming
// message to deliver. deliver is called from the transport's goroutines,
// possibly from several at once, and must not block for long (push into a
// channel, or drop): Close waits for the deliver calls in progress. The
// transport dials nobody until Send is called; serve incoming messages by
// calling Register on a grpc.Server built with ServerOptions.
func NewTransport(cfg TransportConfig, deliver func(core.Message)) *Transport {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:      cfg,
		log:      cfg.Logger.With(event.KeyNode, cfg.SelfID),
		deliver:  deliver,
		peers:    make(map[uint64]*peer, len(cfg.Peers)),
		voters:   map[uint64]bool{},
		members:  map[uint64]bool{},
		ctx:      ctx,
		cancel:   cancel,
		recvFrom: make(map[uint64]*atomic.Uint64),
	}
	for id, addr := range cfg.Peers {
		t.voters[id] = true
		if id == cfg.SelfID {
			continue
		}
		t.members[id] = true
		t.addPeer(id, addr)
	}
	return t
}

// addPeer starts the sender of a new peer. Call with peersMu held (or before
// the transport is shared).
func (t *Transport) addPeer(id uint64, addr string) *peer {
	ctx, cancel := context.WithCancel(t.ctx)
	p := &peer{id: id, addr: addr, q: make(chan []byte, t.cfg.QueueLen), wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
	t.peers[id] = p
	t.wg.Add(1)
	go t.runPeer(p)
	return p
}

// SetMembers makes the transport follow a membership: addrs are every
// member (voters and followers) by ID, voters the voting ones. A new member
// gets a link (the transport dials it from now on), a member at a new
// address gets a new link, and a peer that Peers or an earlier membership
// named and this one does not is dropped: its queue and link go. Followers
// that connected by themselves (MaxFollowers) are kept. CheckPeer checks the
// voters' batches from now on. This node's own entry is ignored.
func (t *Transport) SetMembers(addrs map[uint64]string, voters map[uint64]bool) {
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	if t.isClosed.Load() {
		return
	}
	t.voters = maps.Clone(voters)
	for id, p := range t.peers {
		addr, member := addrs[id]
		switch {
		case member && addr == p.addr:
			if !t.members[id] {
				t.members[id] = true
				t.dynamic-- // a follower that connected is now a member
			}
		case member || t.members[id]:
			// Gone from the membership, or moved: its link goes.
			p.cancel()
			delete(t.peers, id)
			if !t.members[id] {
				t.dynamic--
			}
			delete(t.members, id)
			t.log.Info(event.PeerLinkRemoved, event.KeyPeer, id, event.KeyAddr, p.addr)
		}
	}
	for id, addr := range addrs {
		if id == t.cfg.SelfID || t.peers[id] != nil {
			continue
		}
		t.members[id] = true
		t.addPeer(id, addr)
		t.log.Info(event.PeerLinkAdded, event.KeyPeer, id, event.KeyAddr, addr)
	}
}

// isVoter reports whether batches from id are checked (CheckPeer).
func (t *Transport) isVoter(id uint64) bool {
	t.peersMu.RLock()
	defer t.peersMu.RUnlock()
	return t.voters[id]
}

// peer returns the peer with id, nil if unknown.
func (t *Transport) peer(id uint64) *peer {
	t.peersMu.RLock()
	defer t.peersMu.RUnlock()
	return t.peers[id]
}

// selfAddress is the address this node's batches carry.
func (t *Transport) selfAddress() string {
	if t.cfg.SelfAddress != "" {
		return t.cfg.SelfAddress
	}
	return t.cfg.Peers[t.cfg.SelfID]
}

// transportCredentials is the one place that decides how peer connections
// are secured when TLS is off, for both the dialing and the serving side
// (with TLS, the server package gives TransportConfig.DialCreds and the
// grpc.Server's own credentials).
func transportCredentials() credentials.TransportCredentials {
	return insecure.NewCredentials()
}

// dialCredentials secure the connection this transport dials to peer id.
func (t *Transport) dialCredentials(id uint64) credentials.TransportCredentials {
	if t.cfg.DialCreds != nil {
		return t.cfg.DialCreds(id)
	}
	return transportCredentials()
}

// grpcMessageLimit is the gRPC send and receive limit for peer messages.
func (t *Transport) grpcMessageLimit() int { return t.cfg.MaxMessageBytes + grpcHeadroom }

// dialOptions are every option the transport dials peer id with.
func (t *Transport) dialOptions(id uint64) []grpc.DialOption {
	limit := t.grpcMessageLimit()
	return []grpc.DialOption{
		grpc.WithTransportCredentials(t.dialCredentials(id)),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(limit), grpc.MaxCallRecvMsgSize(limit)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                t.cfg.KeepaliveTime,
			Timeout:             t.cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		// The channel's own reconnect backoff matches the stream backoff, so
		// a peer that comes back is reached within maxBackoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: minBackoff, Multiplier: 1.6, Jitter: 0.2, MaxDelay: maxBackoff},
			MinConnectTimeout: t.cfg.DialTimeout,
		}),
		// A long-lived stream must not be buffered for transparent retries:
		// loss is the protocol's business, not gRPC's.
		grpc.WithDisableRetry(),
	}
}

// ServerOptions are the options the grpc.Server that serves this transport
// (see Register) must be built with: the receive limit, keepalive on the
// server side and the policy that lets peers' keepalive pings through, and
// the credentials. They apply to every service of that server.
func (t *Transport) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(transportCredentials()),
		grpc.MaxRecvMsgSize(t.grpcMessageLimit()),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    t.cfg.KeepaliveTime,
			Timeout: t.cfg.KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             min(keepaliveMinTime, t.cfg.KeepaliveTime),
			PermitWithoutStream: true,
		}),
	}
}

// Register registers the transport's Peer service on s, which should have
// been built with ServerOptions. The transport does not own s: the caller
// starts and stops it.
func (t *Transport) Register(s *grpc.Server) {
	paxosdpb.RegisterPeerServer(s, peerServer{t: t})
}

// Send queues m for the peer m.To and returns at once: it never blocks and
// never does I/O. A message for an unknown peer, with a From other than
// SelfID, over MaxMessageBytes, or that finds the peer's queue full is
// dropped and counted. After Close, Send does nothing. m is encoded before
// Send returns, so the caller may reuse it.
func (t *Transport) Send(m core.Message) {
	if t.isClosed.Load() {
		return
	}
	p := t.peer(m.To)
	if p == nil || m.From != t.cfg.SelfID {
		t.unroutable.Add(1)
		return
	}
	if p.cut.Load() {
		p.dropped.Add(1)
		return
	}
	b := core.AppendMessage(nil, m)
	if len(b) > t.cfg.MaxMessageBytes {
		p.oversized.Add(1)
		p.dropped.Add(1)
		t.log.Error(event.MessageTooLarge, event.KeyPeer, m.To, "type", m.Type.String(), "bytes", len(b), "limit", t.cfg.MaxMessageBytes,
			event.KeyReason, "a core bound does not match the transport's: check that every node runs with the same --max-entry-bytes")
		return
	}
	select {
	case p.q <- b:
	default:
		p.dropped.Add(1)
		if p.full.CompareAndSwap(false, true) {
			t.log.Warn(event.PeerQueueFull, event.KeyPeer, p.id, event.KeyAddr, p.addr, "messages", t.cfg.QueueLen)
		}
	}
}

// CutLink cuts (or restores) the link to peer, both ways: messages to it
// and from it are dropped, as a network partition would. It is for fault
// tests; a partition between two nodes is cut on both of them.
func (t *Transport) CutLink(peer uint64, cut bool) {
	if p := t.peer(peer); p != nil {
		p.cut.Store(cut)
	}
}

// Close stops the transport: it closes every outgoing stream and connection,
// ends the server handlers of incoming streams (their peers see Unavailable),
// and waits for every goroutine it started and every deliver call in
// progress. Later calls to Send do nothing, and deliver is not called again.
// It returns the errors of closing the connections, if any.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.peersMu.Lock() // no follower is added after this: wg.Add never races Wait
	t.isClosed.Store(true)
	t.peersMu.Unlock()
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	t.closeErrMu.Lock()
	defer t.closeErrMu.Unlock()
	return errors.Join(t.closeErr...)
}

// Stats returns a snapshot of the transport's counters.
func (t *Transport) Stats() TransportStats {
	st := TransportStats{
		Peers:      map[uint64]PeerStats{},
		Received:   t.received.Load(),
		Unroutable: t.unroutable.Load(),
		Corrupt:    t.corrupt.Load(),
		Rejected:   t.rejected.Load(),
	}
	t.peersMu.RLock()
	peers := maps.Clone(t.peers)
	t.peersMu.RUnlock()
	for id, p := range peers {
		p.mu.Lock()
		lastErr := p.lastErr
		p.mu.Unlock()
		st.Peers[id] = PeerStats{
			Address:   p.addr,
			Connected: p.connected.Load(),
			Sent:      p.sent.Load(),
			Batches:   p.batches.Load(),
			Dropped:   p.dropped.Load(),
			Oversized: p.oversized.Load(),
			LastError: lastErr,
		}
	}
	t.statMu.Lock()
	defer t.statMu.Unlock()
	st.LastRejection = t.lastRejection
	for id, n := range t.recvFrom {
		ps := st.Peers[id]
		ps.Received = n.Load()
		st.Peers[id] = ps
	}
	return st
}

// ---- outgoing ----

// peerStream is one open Peer.Send stream and the goroutine that watches it
// for the receiver's verdict.
type peerStream struct {
	stream grpc.ClientStreamingClient[paxosdpb.PeerBatch, paxosdpb.PeerSummary]
	cancel context.CancelFunc
	opened time.Time
	done   chan struct{} // closed when the stream has ended; err is then set
	err    error
}

// watch waits for the end of the stream: the receiver's status when it ends
// the stream, or the cancellation. It owns no state but ps.err.
func (ps *peerStream) watch() {
	defer close(ps.done)
	var sum paxosdpb.PeerSummary
	ps.err = ps.stream.RecvMsg(&sum)
	if ps.err == nil {
		ps.err = errors.New("peer ended the stream")
	}
}

// end cancels the stream, waits for its watcher and returns why it ended.
func (ps *peerStream) end() error {
	ps.cancel()
	<-ps.done
	return ps.err
}

// endAfter gives the stream up to d to end by itself (so that the watcher
// reads the receiver's status rather than the cancellation), then ends it.
func (ps *peerStream) endAfter(d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ps.done:
	case <-timer.C:
	}
	return ps.end()
}

// runPeer is the sender goroutine of one peer: it owns the peer's connection
// and stream and is the only reader of its queue.
func (t *Transport) runPeer(p *peer) {
	defer t.wg.Done()
	var (
		conn        *grpc.ClientConn
		ps          *peerStream
		carry       []byte // a message that did not fit in the last batch
		attempts    int    // failures since the last long-lived stream
		nextAttempt time.Time
		failedAt    time.Time
		linkState   int // 0 not known yet, 1 up, 2 down (OnLink)
	)
	link := func(up bool, err error) {
		state := 2
		if up {
			state = 1
		}
		if state != linkState {
			linkState = state
			if t.cfg.OnLink != nil {
				t.cfg.OnLink(p.id, p.addr, up, err)
			}
		}
	}
	defer func() {
		if ps != nil {
			ps.end()
		}
		p.connected.Store(false)
		if conn != nil {
			if err := conn.Close(); err != nil {
				t.closeErrMu.Lock()
				t.closeErr = append(t.closeErr, fmt.Errorf("closing connection to node %d (%s): %w", p.id, p.addr, err))
				t.closeErrMu.Unlock()
			}
		}
	}()
	// failed records a failed attempt or stream and schedules the next one.
	failed := func(err error) {
		p.connected.Store(false)
		if ps != nil {
			if time.Since(ps.opened) > maxBackoff {
				attempts = 0
			}
			ps = nil
		}
		if p.ctx.Err() != nil {
			return // closing: not a failure worth reporting
		}
		msg := err.Error()
		p.mu.Lock()
		changed := msg != p.lastErr
		p.lastErr = msg
		p.mu.Unlock()
		if changed {
			t.log.Debug(event.PeerLinkError, event.KeyPeer, p.id, event.KeyAddr, p.addr, event.KeyErr, err)
		}
		link(false, err)
		if ie := incarnationRefused(err); ie != nil && ie.Node == t.cfg.SelfID && ie.Peer == p.id {
			if changed {
				t.log.Error(event.IncarnationRefused, event.KeyPeer, p.id, event.KeyErr, ie)
			}
			if t.cfg.Refused != nil {
				t.cfg.Refused(ie)
			}
		}
		if kind, msg, ok := peerRejection(err); ok {
			if changed {
				t.log.Error(event.RejectedByPeer, event.KeyPeer, p.id, event.KeyAddr, p.addr, "kind", kind, event.KeyErr, msg)
			}
			if t.cfg.Rejected != nil {
				t.cfg.Rejected(PeerRejection{Peer: p.id, Addr: p.addr, Kind: kind, Message: msg})
			}
		}
		failedAt = time.Now()
		nextAttempt = failedAt.Add(backoffDelay(attempts))
		attempts++
	}
	for {
		if p.ctx.Err() != nil {
			return
		}
		var first []byte
		if carry != nil {
			first, carry = carry, nil
		} else {
			var streamDone chan struct{} // nil: no stream to watch
			if ps != nil {
				streamDone = ps.done
			}
			select {
			case <-p.ctx.Done():
				return
			case <-streamDone:
				failed(fmt.Errorf("stream ended: %w", ps.end()))
				continue
			case first = <-p.q:
			}
		}
		if ps == nil {
			for {
				if p.redial.Swap(false) {
					// The peer is back: try again soon, and make the
					// connection (which has its own backoff) dial at once.
					attempts = 0
					if soon := failedAt.Add(redialGap); soon.Before(nextAttempt) {
						nextAttempt = soon
					}
					if conn != nil {
						conn.ResetConnectBackoff()
					}
				}
				wait := time.Until(nextAttempt)
				if wait <= 0 {
					break
				}
				timer := time.NewTimer(wait)
				select {
				case <-p.ctx.Done():
					timer.Stop()
					return
				case <-timer.C:
				case <-p.wake:
					timer.Stop()
				}
			}
			var err error
			if conn == nil {
				conn, err = grpc.NewClient(t.dialAddress(p), t.dialOptions(p.id)...)
				if err != nil {
					conn = nil
				}
			}
			if err == nil {
				ps, err = t.openStream(p.ctx, conn)
			}
			if err != nil {
				// The peer is unreachable: what is queued for it is stale
				// by the next attempt. Drop it rather than let it crowd out
				// fresher messages.
				p.dropped.Add(1 + drain(p.q))
				failed(fmt.Errorf("connecting: %w", err))
				continue
			}
			p.connected.Store(true)
			link(true, nil)
		}
		batch, n := t.fill(p.id, first, p.q, &carry)
		if err := ps.stream.Send(batch); err != nil {
			p.dropped.Add(uint64(n))
			if errors.Is(err, io.EOF) {
				// The receiver ended the stream; its status, which the
				// watcher is reading, says why.
				err = ps.endAfter(t.cfg.DialTimeout)
			} else {
				ps.end()
			}
			failed(fmt.Errorf("sending: %w", err))
			continue
		}
		p.sent.Add(uint64(n))
		p.batches.Add(1)
		if len(p.q) == 0 {
			p.full.Store(false)
		}
	}
}

// dialAddress is where to connect to reach p: its DialPeers entry if it has
// one, else its address.
func (t *Transport) dialAddress(p *peer) string {
	if a, ok := t.cfg.DialPeers[p.id]; ok {
		return a
	}
	return p.addr
}

// openStream opens a Peer.Send stream on conn, giving up after DialTimeout.
func (t *Transport) openStream(pctx context.Context, conn *grpc.ClientConn) (*peerStream, error) {
	ctx, cancel := context.WithCancel(pctx)
	timer := time.AfterFunc(t.cfg.DialTimeout, cancel)
	stream, err := paxosdpb.NewPeerClient(conn).Send(ctx)
	if !timer.Stop() && err == nil {
		err = fmt.Errorf("no stream within %v", t.cfg.DialTimeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	ps := &peerStream{stream: stream, cancel: cancel, opened: time.Now(), done: make(chan struct{})}
	go ps.watch() // owned by runPeer, which always calls ps.end
	return ps, nil
}

// fill builds a batch from first and whatever else is queued now, up to
// MaxMessageBytes of payload; a message that does not fit is left in carry.
// It returns the batch and its number of messages.
func (t *Transport) fill(to uint64, first []byte, q chan []byte, carry *[]byte) (*paxosdpb.PeerBatch, int) {
	msgs := [][]byte{first}
	size := batchHeaderBytes + fieldSize(first)
	for {
		select {
		case b := <-q:
			if size+fieldSize(b) > t.cfg.MaxMessageBytes {
				*carry = b
				return t.batch(to, msgs), len(msgs)
			}
			msgs = append(msgs, b)
			size += fieldSize(b)
		default:
			return t.batch(to, msgs), len(msgs)
		}
	}
}

func (t *Transport) batch(to uint64, msgs [][]byte) *paxosdpb.PeerBatch {
	return &paxosdpb.PeerBatch{ClusterId: t.cfg.ClusterID, From: t.cfg.SelfID, To: to, FromAddress: t.selfAddress(),
		Incarnation: t.cfg.Incarnation, Messages: msgs}
}

// The reconnect backoff of one peer: exponential from minBackoff to
// maxBackoff, with jitter. A stream that lived longer than maxBackoff resets
// it, and so does a batch from the peer (see redialGap). Variables so that
// tests can stretch them.
var (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// fieldSize is the encoded size of one element of PeerBatch.messages.
func fieldSize(b []byte) int { return 1 + protowire.SizeBytes(len(b)) }

// drain empties q without blocking and returns how many messages it held.
func drain(q chan []byte) uint64 {
	var n uint64
	for {
		select {
		case <-q:
			n++
		default:
			return n
		}
	}
}

// backoffDelay is the wait before the next connection attempt after the
// given number of consecutive failures: exponential from minBackoff, capped
// at maxBackoff, with jitter in [d/2, d) so that peers do not reconnect in
// lockstep.
func backoffDelay(failures int) time.Duration {
	d := minBackoff
	for i := 0; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2)
}

// ---- incoming ----

// peerServer adapts the Transport to the generated Peer service.
type peerServer struct {
	paxosdpb.UnimplementedPeerServer
	t *Transport
}

// Send serves one incoming stream.
func (s peerServer) Send(stream grpc.ClientStreamingServer[paxosdpb.PeerBatch, paxosdpb.PeerSummary]) error {
	return s.t.serve(stream)
}

var errClosed = status.Error(codes.Unavailable, "paxosd peer transport closed")

// serve receives batches until the sender ends the stream, the transport
// closes, or a batch is rejected. A receiver goroutine does the blocking
// Recv so that Close can end the handler at once; it ends when the handler
// has returned and gRPC has torn the stream down.
func (t *Transport) serve(stream grpc.ClientStreamingServer[paxosdpb.PeerBatch, paxosdpb.PeerSummary]) error {
	t.mu.RLock()
	if t.closed {
		t.mu.RUnlock()
		return errClosed
	}
	t.wg.Add(2)
	t.mu.RUnlock()
	defer t.wg.Done()

	ctx := stream.Context()
	batches := make(chan *paxosdpb.PeerBatch)
	recvErr := make(chan error, 1)
	go func() {
		defer t.wg.Done()
		for {
			b, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
		}
	}()

	var sum paxosdpb.PeerSummary
	for {
		select {
		case <-t.ctx.Done():
			return errClosed
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return stream.SendAndClose(&sum)
			}
			return err
		case b := <-batches:
			if t.cfg.CheckSender != nil {
				if err := t.cfg.CheckSender(ctx, b.GetFrom()); err != nil {
					t.rejected.Add(1)
					t.log.Warn(event.BatchRejected, event.KeyPeer, b.GetFrom(), event.KeyErr, err)
					return status.Errorf(codes.PermissionDenied, "node %d rejected a batch from node %d: %v", t.cfg.SelfID, b.GetFrom(), err)
				}
			}
			if err := t.receive(b, &sum); err != nil {
				return err
			}
		}
	}
}

// admitFollower adds a node that is not in Peers as a peer, if followers are
// allowed and there is room, so that it can be answered at addr.
func (t *Transport) admitFollower(id uint64, addr string) bool {
	if t.cfg.MaxFollowers <= 0 || addr == "" || id == 0 || id == t.cfg.SelfID {
		return false
	}
	t.peersMu.Lock()
	defer t.peersMu.Unlock()
	if t.peers[id] != nil {
		return true
	}
	if t.dynamic >= t.cfg.MaxFollowers || t.isClosed.Load() {
		return false
	}
	t.dynamic++
	t.addPeer(id, addr)
	t.log.Info(event.FollowerConnected, event.KeyPeer, id, event.KeyAddr, addr)
	return true
}

// receive checks one batch and delivers its valid messages. A batch of
// another cluster or for another node, or that CheckPeer refuses, is
// rejected whole, with an error that ends the stream.
func (t *Transport) receive(b *paxosdpb.PeerBatch, sum *paxosdpb.PeerSummary) error {
	var reason, kind string
	var refused *IncarnationError
	switch {
	case b.GetClusterId() != t.cfg.ClusterID:
		kind = RejectWrongCluster
		reason = fmt.Sprintf("rejected a batch from node %d of cluster %d: this node (%d) is in cluster %d",
			b.GetFrom(), b.GetClusterId(), t.cfg.SelfID, t.cfg.ClusterID)
	case b.GetTo() != t.cfg.SelfID:
		kind = RejectWrongNode
		reason = fmt.Sprintf("rejected a batch from node %d addressed to node %d: this is node %d (cluster %d); check the peer addresses",
			b.GetFrom(), b.GetTo(), t.cfg.SelfID, t.cfg.ClusterID)
	case t.peer(b.GetFrom()) != nil && b.GetFromAddress() != t.peer(b.GetFrom()).addr:
		kind = RejectDuplicateNode
		reason = fmt.Sprintf("rejected a batch from a node %d at %q: node %d is at %q here; two processes with the same node ID?",
			b.GetFrom(), b.GetFromAddress(), b.GetFrom(), t.peer(b.GetFrom()).addr)
	case t.cfg.CheckPeer != nil && t.isVoter(b.GetFrom()):
		// A member's batch: a follower does not vote, so a follower on a
		// new directory is harmless.
		if err := t.cfg.CheckPeer(b.GetFrom(), b.GetIncarnation()); err != nil {
			reason = fmt.Sprintf("rejected a batch from node %d: %v", b.GetFrom(), err)
			if errors.As(err, &refused) {
				refused.Peer = t.cfg.SelfID
				reason = refused.refusal()
			}
		}
	}
	if reason == "" && t.peer(b.GetFrom()) == nil {
		// Not a member: a follower. Answer it if followers are allowed.
		t.admitFollower(b.GetFrom(), b.GetFromAddress())
	}
	if reason != "" {
		t.rejected.Add(1)
		t.statMu.Lock()
		changed := reason != t.lastRejection
		t.lastRejection = reason
		t.statMu.Unlock()
		if changed {
			t.log.Warn(event.BatchRejected, event.KeyPeer, b.GetFrom(), event.KeyReason, reason)
		}
		if refused != nil {
			return api.WithDetails(codes.FailedPrecondition, reason, &paxosdpb.IncarnationRefused{
				Node: refused.Node, Peer: refused.Peer, Known: refused.Known, Got: refused.Got, Configured: refused.Configured})
		}
		if kind != "" {
			return api.WithDetails(codes.FailedPrecondition, reason, &errdetails.ErrorInfo{Reason: kind, Domain: "paxosd"})
		}
		return status.Error(codes.FailedPrecondition, reason)
	}

	msgs := make([]core.Message, 0, len(b.GetMessages()))
	for _, raw := range b.GetMessages() {
		if len(raw) > t.cfg.MaxMessageBytes {
			t.corrupt.Add(1)
			t.log.Error(event.MessageTooLarge, event.KeyPeer, b.GetFrom(), "bytes", len(raw), "limit", t.cfg.MaxMessageBytes,
				event.KeyReason, "does every node run with the same --max-entry-bytes?")
			continue
		}
		m, err := core.DecodeMessage(raw)
		if err != nil || m.To != t.cfg.SelfID || m.From != b.GetFrom() {
			t.corrupt.Add(1)
			continue
		}
		msgs = append(msgs, m)
	}
	sum.Dropped += uint64(len(b.GetMessages()) - len(msgs))
	if len(msgs) == 0 {
		return nil
	}

	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return errClosed
	}
	p := t.peer(b.GetFrom())
	if p != nil && p.cut.Load() {
		return nil // fault injection: the link is cut
	}
	if p != nil && !p.connected.Load() {
		p.wakeUp()
	}
	for _, m := range msgs {
		t.deliver(m)
	}
	n := uint64(len(msgs))
	sum.Received += n
	t.received.Add(n)
	t.receivedFrom(b.GetFrom()).Add(n)
	return nil
}

// wakeUp tells p's sender that p is reachable again: it just sent this node
// a batch. Without it, a node that was down for a while is not answered
// until its peers' backoff (up to maxBackoff) runs out.
func (p *peer) wakeUp() {
	p.redial.Store(true)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// receivedFrom returns the counter of messages delivered from node id.
func (t *Transport) receivedFrom(id uint64) *atomic.Uint64 {
	t.statMu.Lock()
	defer t.statMu.Unlock()
	c := t.recvFrom[id]
	if c == nil {
		c = new(atomic.Uint64)
		t.recvFrom[id] = c
	}
	return c
}
