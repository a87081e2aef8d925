package rpc

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
)

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
