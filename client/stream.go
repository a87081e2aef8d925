package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// streamInFlight is the most appends a Client keeps in flight on one
// stream: the node's bound (log.proto, AppendStream), so that the node
// never holds back a request of this client for want of room.
const streamInFlight = 256

// logClient is the LogService of one endpoint as call hands it to f: its
// Append goes over the endpoint's AppendStream, which every caller of the
// Client shares, or as a unary call to a node that does not implement the
// stream (an older server).
type logClient struct {
	paxosdpb.LogServiceClient
	c  *Client
	ep string
	cc *grpc.ClientConn
}

// Append sends req over the endpoint's stream, and falls back to the unary
// Append when the node answers that it has no AppendStream (nothing was
// done then).
func (l logClient) Append(ctx context.Context, req *paxosdpb.AppendRequest, opts ...grpc.CallOption) (*paxosdpb.AppendResponse, error) {
	if !l.c.isUnary(l.ep) {
		s, err := l.c.stream(l.ep, l.cc)
		if err != nil {
			return nil, err
		}
		r, err := s.append(ctx, req)
		if status.Code(err) != codes.Unimplemented {
			if hint, _ := ctx.Value(masterHint{}).(*string); err == nil && hint != nil {
				*hint = r.master
			}
			return r.resp, err
		}
		l.c.mu.Lock()
		l.c.unary[l.ep] = true
		l.c.mu.Unlock()
	}
	return l.LogServiceClient.Append(ctx, req, opts...)
}

func (c *Client) isUnary(ep string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.unary[ep]
}

// stream returns the running append stream to ep, opening one if there is
// none (or the last one ended).
func (c *Client) stream(ep string, cc *grpc.ClientConn) (*appendStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if s := c.streams[ep]; s != nil && s.ended() == nil {
		return s, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := paxosdpb.NewLogServiceClient(cc).AppendStream(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: endpoint %s: opening an append stream: %v: %w", ep, err, errNotConnected)
	}
	s := &appendStream{stream: st, cancel: cancel, slots: make(chan struct{}, streamInFlight), pending: map[uint64]chan streamResult{}}
	go s.receive()
	c.streams[ep] = s
	return s, nil
}

// appendStream multiplexes appends over one AppendStream: each carries a
// request ID, and the response with that ID goes to its caller, in
// whatever order the node answers.
type appendStream struct {
	stream grpc.BidiStreamingClient[paxosdpb.AppendStreamRequest, paxosdpb.AppendStreamResponse]
	cancel context.CancelFunc
	slots  chan struct{} // one per append in flight
	sendMu sync.Mutex    // Send is not safe for concurrent use

	mu      sync.Mutex
	next    uint64 // the last request ID used
	pending map[uint64]chan streamResult
	err     error // why the stream ended; nil while it runs
}

type streamResult struct {
	resp   *paxosdpb.AppendResponse
	master string // the master the node forwarded the append to
	err    error
}

func (s *appendStream) ended() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// append sends req and waits for its answer, ctx's end, or the stream's.
func (s *appendStream) append(ctx context.Context, req *paxosdpb.AppendRequest) (streamResult, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return streamResult{}, fmt.Errorf("client: %d appends in flight on the stream, the most it carries: %v: %w", streamInFlight, ctx.Err(), errNotConnected)
	}
	defer func() { <-s.slots }()
	ch := make(chan streamResult, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		if status.Code(err) == codes.Unimplemented {
			return streamResult{}, err
		}
		return streamResult{}, fmt.Errorf("client: the append stream ended before the append was sent (%s): %w", status.Convert(err).Message(), errNotConnected)
	}
	s.next++
	id := s.next
	s.pending[id] = ch
	s.mu.Unlock()
	m := &paxosdpb.AppendStreamRequest{Id: id, Append: req}
	if d, ok := ctx.Deadline(); ok {
		m.TimeoutMs = uint64(max(time.Until(d).Milliseconds(), 1))
	}
	s.sendMu.Lock()
	err := s.stream.Send(m)
	s.sendMu.Unlock()
	if err != nil {
		// The stream ended (Send says io.EOF); receive delivers why, to
		// this append too, whose outcome is unknown: it may have gone out.
		s.cancel()
	}
	select {
	case r := <-ch:
		return r, r.err
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		return streamResult{}, status.FromContextError(ctx.Err()).Err()
	}
}

// receive hands every response to its caller until the stream ends, and
// then fails every append in flight.
func (s *appendStream) receive() {
	for {
		r, err := s.stream.Recv()
		if err != nil {
			s.end(err)
			return
		}
		s.mu.Lock()
		ch := s.pending[r.Id]
		delete(s.pending, r.Id)
		s.mu.Unlock()
		if ch == nil {
			continue // its caller gave up
		}
		res := streamResult{resp: r.Append, master: r.MasterAddress}
		if e := r.Error; e != nil {
			res.err = status.FromProto(&spb.Status{Code: e.Code, Message: e.Message, Details: e.Details}).Err()
		} else if r.Append == nil {
			res.err = api.OutcomeUnknownError("the node answered the append with neither a result nor an error")
		}
		ch <- res
	}
}

// end fails the appends in flight with why the stream ended: a refusal of
// the stream itself (no such method on an older node, auth, the cluster
// pin) came before the node read any of them, and is passed on as it is;
// any other end leaves their outcome unknown (they may have applied), so
// that call retries them with the same client ID and seq.
func (s *appendStream) end(err error) {
	switch status.Code(err) {
	case codes.Unimplemented, codes.Unauthenticated, codes.PermissionDenied, codes.FailedPrecondition:
	default:
		err = api.OutcomeUnknownError(fmt.Sprintf("the append stream broke with the append in flight: %s", status.Convert(err).Message()))
	}
	s.mu.Lock()
	s.err = err
	for id, ch := range s.pending {
		ch <- streamResult{err: err}
		delete(s.pending, id)
	}
	s.mu.Unlock()
	s.cancel()
}
