// Sending: a peer's queue, its stream and its batches, the backoff between
// connection attempts, and the rejections a peer answers with.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

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
