package rpc

import (
	"context"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// StreamInFlight is the most appends of one AppendStream a node works on
// at a time (log.proto says so). It reads the stream's next request only
// when one of them has settled, so a client that sends more is held back
// by gRPC's flow control, and the node buffers nothing beyond it.
const StreamInFlight = 256

// AppendStream implements LogService.AppendStream: every request is served
// as Append serves it (forwarded to the master from any other node), on
// its own goroutine, and answered when it settles.
func (s *LogServer) AppendStream(stream grpc.BidiStreamingServer[paxosdpb.AppendStreamRequest, paxosdpb.AppendStreamResponse]) error {
	return serveAppendStream(stream, StreamInFlight, s.Append)
}

// serveAppendStream serves stream with at most bound appends in flight,
// each settled by appendFn. It ends when the client closes its side and
// every append was answered, or at the first failure to receive or send
// (the appends in flight then have an unknown outcome for the client).
func serveAppendStream(stream grpc.BidiStreamingServer[paxosdpb.AppendStreamRequest, paxosdpb.AppendStreamResponse], bound int,
	appendFn func(context.Context, *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error)) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	var (
		slots    = make(chan struct{}, bound)
		inFlight sync.WaitGroup
		sendMu   sync.Mutex // Send is not safe for concurrent use; also orders the end (below)
		sendErr  = make(chan error, 1)
		recvErr  = make(chan error, 1)
	)
	go func() {
		for {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			inFlight.Add(1)
			go func() {
				defer func() { <-slots; inFlight.Done() }()
				resp := settle(ctx, req, appendFn)
				sendMu.Lock()
				defer sendMu.Unlock()
				if ctx.Err() != nil {
					return // the stream ended
				}
				if err := stream.Send(resp); err != nil {
					select {
					case sendErr <- err:
					default:
					}
					cancel()
				}
			}()
		}
	}()
	var err error
	select {
	case err = <-recvErr:
		if err == io.EOF {
			inFlight.Wait() // the client is done sending: answer what is in flight
			select {
			case err = <-sendErr:
			default:
				return nil
			}
		}
	case err = <-sendErr:
	}
	// A failure: stop, and once no Send runs any more (the ones that would
	// start see ctx done), end the stream. Appends still settling finish on
	// their own, unanswered.
	cancel()
	sendMu.Lock()
	sendMu.Unlock() // empty: it only waits out a Send under way
	return err
}

// settle serves one request of a stream.
func settle(ctx context.Context, req *paxosdpb.AppendStreamRequest,
	appendFn func(context.Context, *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error)) *paxosdpb.AppendStreamResponse {
	if req.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	app := req.Append
	if app == nil {
		app = &paxosdpb.AppendRequest{}
	}
	// The header Append sets when it forwards (api.MasterHeader) goes
	// into this append's response: the stream's own header is long sent.
	hdr := &headers{method: paxosdpb.LogService_Append_FullMethodName}
	r, err := appendFn(grpc.NewContextWithServerTransportStream(ctx, hdr), app)
	resp := &paxosdpb.AppendStreamResponse{Id: req.Id, Append: r}
	if v := hdr.md.Get(api.MasterHeader); len(v) > 0 {
		resp.MasterAddress = v[0]
	}
	if err != nil {
		st := status.Convert(err).Proto()
		resp.Append, resp.Error = nil, &paxosdpb.AppendError{Code: st.Code, Message: st.Message, Details: st.Details}
	}
	return resp
}

// headers collects the headers one append of a stream sets.
type headers struct {
	method string
	md     metadata.MD
}

func (h *headers) Method() string                  { return h.method }
func (h *headers) SetHeader(md metadata.MD) error  { h.md = metadata.Join(h.md, md); return nil }
func (h *headers) SendHeader(md metadata.MD) error { return h.SetHeader(md) }
func (h *headers) SetTrailer(metadata.MD) error    { return nil }
