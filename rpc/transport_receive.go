// Receiving: the peer service a node serves, the checks a batch passes
// before its messages are delivered, and what a batch tells of its sender.
package rpc

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// Register registers the transport's Peer service on s, which should have
// been built with ServerOptions. The transport does not own s: the caller
// starts and stops it.
func (t *Transport) Register(s *grpc.Server) {
	paxosdpb.RegisterPeerServer(s, peerServer{t: t})
}

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
// Recv and delivers each batch itself, so that a batch wakes one goroutine
// and not two; the handler only waits, so that Close can end it at once.
// The receiver ends when the handler has returned and gRPC has torn the
// stream down.
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
	var sum paxosdpb.PeerSummary // the receiver's until it has sent on ended
	ended := make(chan error, 1)
	go func() {
		defer t.wg.Done()
		for {
			b, err := stream.Recv()
			if err == nil && t.ctx.Err() != nil {
				err = errClosed
			}
			if err == nil && t.cfg.CheckSender != nil {
				if cerr := t.cfg.CheckSender(ctx, b.GetFrom()); cerr != nil {
					t.rejected.Add(1)
					t.log.Warn(event.BatchRejected, event.KeyPeer, b.GetFrom(), event.KeyErr, cerr)
					err = status.Errorf(codes.PermissionDenied, "node %d rejected a batch from node %d: %v", t.cfg.SelfID, b.GetFrom(), cerr)
				}
			}
			if err == nil {
				err = t.receive(b, &sum)
			}
			if err != nil {
				ended <- err
				return
			}
		}
	}()

	select {
	case <-t.ctx.Done():
		return errClosed
	case err := <-ended:
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&sum)
		}
		return err
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
