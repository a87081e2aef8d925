// Package client is the Go client of paxosd. It talks to any node of a
// cluster (nodes forward appends and linearizable reads to the master),
// moves to another endpoint when one fails, and makes appends exactly-once:
// every append carries this client's ID and a fresh sequence number, and a
// retry reuses them, so the cluster's dedup table returns the original
// indexes instead of appending twice.
//
// It must never retry an append under a new sequence number, nor send an
// append without a client ID (AppendSeq with ID 0) again after an attempt
// that may have reached the cluster: either could append it twice. Such an
// append is sent again only after an answer that says nothing was applied
// (not the master, overloaded) or to an endpoint it never reached;
// otherwise it fails with ErrUnknownOutcome.
//
// Appends go over one AppendStream per endpoint, which every caller of a
// Client shares (stream.go), or as unary Append calls to a node that does
// not serve the stream.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/idgen"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// Options tune a client.
type Options struct {
	ClientID    uint64        // 0: a random one
	DialTimeout time.Duration // to connect to one endpoint; default 3 s
	CallTimeout time.Duration // per attempt; default 5 s
	Retries     int           // rounds over the endpoints; default 10
	// TLS, when set, makes every connection use TLS with this config
	// (TLSConfig builds one from PEM files).
	TLS *tls.Config
	// Token, when set, is sent with every call as "authorization: Bearer
	// TOKEN", for nodes started with --auth-tokens-file.
	Token string
	// Cluster, when set, is the name of the cluster the client expects
	// (paxosd server's --cluster). Every call carries it, and a node of
	// another cluster refuses the call before acting on it
	// (FailedPrecondition), so nothing reaches the wrong cluster.
	Cluster string
}

// Errors callers branch on (with errors.Is).
var (
	ErrClosed   = errors.New("client closed")
	ErrConflict = errors.New("expected index does not match the end of the log")
	ErrTrimmed  = errors.New("index trimmed")
	ErrTooLarge = errors.New("entry too large")
	// ErrStaleSeq: an append's seq is below the client's dedup window; it
	// may have been applied already, and was not applied again.
	ErrStaleSeq = errors.New("sequence number below the dedup window")
	// ErrUnknownOutcome: an append failed after it may have reached the
	// cluster (a broken connection, a timeout, a proposal dropped by a
	// master that lost its lease, a node that stopped with it in flight:
	// the server's OUTCOME_UNKNOWN), and every retry with the same
	// (client ID, seq) failed too, so it may or may not have been applied.
	// An *UnknownOutcomeError says which (client ID, seq) to retry.
	ErrUnknownOutcome = errors.New("outcome unknown")
	// ErrTooManyClients: the cluster's dedup table holds its cap of
	// exactly-once clients, each of which may still retry; nothing was
	// applied. The client does not retry it (every node would say the same
	// until a client idles out): retry later, or use fewer client IDs.
	ErrTooManyClients = errors.New("too many exactly-once clients")
	// ErrSeqReused: the append's (client ID, seq) was already applied with
	// different entries; nothing was applied, and a retry gets the same
	// answer. A client restarted with a fixed ID must continue its seqs
	// above the last one it used.
	ErrSeqReused = errors.New("sequence number reused with different entries")
	// ErrTrimPastEnd: a trim's before is past the end of the log; nothing
	// was trimmed. A *TrimPastEndError names the end.
	ErrTrimPastEnd = errors.New("trim past the end of the log")
	// ErrNoSpace: the master's data directory has less free space than its
	// --min-free-bytes; nothing was appended. The client does not retry it
	// (every node forwards to the same master): free space (trim), add
	// disk, or lower the threshold; the error's message says the numbers.
	ErrNoSpace = errors.New("no space on the master's disk")
)

// UnknownOutcomeError says an append may or may not have been applied. It
// matches ErrUnknownOutcome, and unwraps to the last failure.
type UnknownOutcomeError struct {
	ClientID, Seq uint64 // ClientID 0: the append had none
	Err           error  // the failure that left the outcome open
}

func (e *UnknownOutcomeError) Error() string {
	if e.ClientID == 0 {
		return fmt.Sprintf("outcome unknown: the append may or may not have been applied; it carried no client ID, "+
			"so it was not sent again (a second attempt could apply it twice): %v", e.Err)
	}
	return fmt.Sprintf("outcome unknown: the append may or may not have been applied; AppendSeq with client ID %d, "+
		"seq %d and the same entries applies it at most once and says where it is: %v", e.ClientID, e.Seq, e.Err)
}

// Is makes errors.Is(err, ErrUnknownOutcome) true.
func (e *UnknownOutcomeError) Is(target error) bool { return target == ErrUnknownOutcome }

// Unwrap returns the last failure (a context error, a gRPC status).
func (e *UnknownOutcomeError) Unwrap() error { return e.Err }

// TrimPastEndError says a trim's before was past the end of the log, as the
// master has applied it. It matches ErrTrimPastEnd.
type TrimPastEndError struct{ End uint64 }

func (e *TrimPastEndError) Error() string {
	return fmt.Sprintf("trim past the end of the log, which ends at index %d (the index the next append gets); nothing trimmed", e.End)
}

// Is makes errors.Is(err, ErrTrimPastEnd) true.
func (e *TrimPastEndError) Is(target error) bool { return target == ErrTrimPastEnd }

// TrimmedError says a read or tail started below the first index. It
// matches ErrTrimmed.
type TrimmedError struct{ First uint64 }

func (e *TrimmedError) Error() string {
	return fmt.Sprintf("entries below index %d were trimmed; the log starts at %d", e.First, e.First)
}

// Is makes errors.Is(err, ErrTrimmed) true.
func (e *TrimmedError) Is(target error) bool { return target == ErrTrimmed }

// ConflictError says a conditional append found the log elsewhere. It
// matches ErrConflict.
type ConflictError struct{ End uint64 }

func (e *ConflictError) Error() string {
	return fmt.Sprintf("expected index does not match: the log ends at %d", e.End)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Client is safe for concurrent use. The cluster remembers the last 32
// sequence numbers of each client (core.DedupWindow): keep at most 32
// appends of one Client outstanding, or an append overtaken by 32 later
// ones fails with ErrStaleSeq although it was never applied. Use more
// Clients (each has its own ID) for more concurrency.
type Client struct {
	endpoints []string
	opt       Options

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	// streams carries the appends to each endpoint (stream.go), unless
	// unary says the endpoint has no AppendStream.
	streams map[string]*appendStream
	unary   map[string]bool
	pref    string // the endpoint that last worked (the master, after a redirect)
	seq     uint64
	closed  bool
}

// New returns a client for the given endpoints (host:port). It connects lazily.
func New(endpoints []string, opt Options) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("client: no endpoints")
	}
	if err := errors.Join(CheckMetadata("token", opt.Token), CheckMetadata("cluster name", opt.Cluster)); err != nil {
		return nil, err
	}
	if opt.ClientID == 0 {
		opt.ClientID = idgen.NewClientID(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
	}
	if opt.CallTimeout == 0 {
		opt.CallTimeout = 5 * time.Second
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = 3 * time.Second
	}
	if opt.Retries == 0 {
		opt.Retries = 10
	}
	return &Client{endpoints: endpoints, opt: opt, conns: map[string]*grpc.ClientConn{},
		streams: map[string]*appendStream{}, unary: map[string]bool{}, pref: endpoints[0]}, nil
}

// ID returns the client ID its appends carry.
func (c *Client) ID() uint64 { return c.opt.ClientID }

// Close closes the connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, s := range c.streams {
		s.cancel()
	}
	clear(c.streams)
	for _, cc := range c.conns {
		cc.Close()
	}
	clear(c.conns)
	return nil
}

func (c *Client) api(ep string) (paxosdpb.LogServiceClient, error) {
	cc, err := c.conn(ep)
	if err != nil {
		return nil, err
	}
	return paxosdpb.NewLogServiceClient(cc), nil
}

func (c *Client) conn(ep string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	cc, ok := c.conns[ep]
	if !ok {
		var err error
		cc, err = grpc.NewClient(ep, append(DialOptions(c.opt),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: c.opt.DialTimeout}),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(api.MaxResponseBytes), grpc.MaxCallSendMsgSize(api.MaxMessageBytes)),
			grpc.WithUnaryInterceptor(noteMaster))...)
		if err != nil {
			return nil, fmt.Errorf("client: endpoint %q: %w", ep, err)
		}
		c.conns[ep] = cc
	}
	return cc, nil
}

// errNotConnected: an endpoint had no established connection, so nothing
// was sent to it.
var errNotConnected = errors.New("nothing was sent")

// ready waits, up to the dial timeout, for cc to be connected. An append is
// sent only over an established connection, so that an endpoint that
// cannot be reached is known to have received nothing (and the append may
// go elsewhere), whereas a failure after sending leaves the outcome open.
func (c *Client) ready(ctx context.Context, ep string, cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, c.opt.DialTimeout)
	defer cancel()
	for {
		st := cc.GetState()
		switch st {
		case connectivity.Ready:
			return nil
		case connectivity.Idle:
			cc.Connect()
		case connectivity.TransientFailure:
			return fmt.Errorf("client: endpoint %s unreachable (%s): %w", ep, c.connError(cc), errNotConnected)
		case connectivity.Shutdown:
			return fmt.Errorf("client: endpoint %s unreachable (connection %v): %w", ep, st, errNotConnected)
		}
		if !cc.WaitForStateChange(ctx, st) {
			return fmt.Errorf("client: endpoint %s unreachable (connection %v, %v): %w", ep, st, ctx.Err(), errNotConnected)
		}
	}
}

// masterHint is where call learns, from a reply's header, that the node it
// asked forwarded the request to the master.
type masterHint struct{}

// noteMaster records the master's address a forwarding node sends back.
func noteMaster(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	hint, _ := ctx.Value(masterHint{}).(*string)
	if hint == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var md metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Header(&md))...)
	if v := md.Get(api.MasterHeader); len(v) > 0 {
		*hint = v[0]
	}
	return err
}

// order returns the endpoints to try, the preferred one first.
func (c *Client) order() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []string{c.pref}
	for _, ep := range c.endpoints {
		if ep != c.pref {
			out = append(out, ep)
		}
	}
	return out
}

func (c *Client) prefer(ep string) {
	c.mu.Lock()
	c.pref = ep
	c.mu.Unlock()
}

// nothingApplied says whether err proves that the request was not
// proposed anywhere, so that even an append without a client ID may be
// sent again: it never left (no connection), a node that is not the master
// refused it (it proposed nothing, and a node that forwarded it returns
// the master's refusal as it is), or a node shed it before proposing.
func nothingApplied(err error) bool {
	if errors.Is(err, errNotConnected) {
		return true
	}
	if _, _, ok := api.AsNotMaster(err); ok {
		return true
	}
	_, ok := api.AsOverloaded(err)
	return ok
}

// definite says whether err settles an append: nothing was applied, or the
// cluster refused it for good (bad input, a conditional append that found
// the log elsewhere, a full dedup table, a reused seq). Everything else (a
// broken connection, a timeout, a dropped proposal, an internal error)
// leaves the outcome open.
func definite(err error) bool {
	if api.AsOutcomeUnknown(err) {
		return false // whatever its code: the server says it may have applied
	}
	if nothingApplied(err) || api.AsTooManyClients(err) || noSpace(err) {
		return true
	}
	if _, ok := api.AsExpectedIndex(err); ok {
		return true
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists, codes.OutOfRange,
		codes.Unimplemented, codes.Unauthenticated, codes.PermissionDenied, codes.NotFound:
		return true
	}
	return false
}

// noSpace says whether err is the master's refusal for want of disk
// space (NO_SPACE): nothing was proposed, and every node would forward the
// retry to the same master.
func noSpace(err error) bool {
	_, _, ok := api.AsNoSpace(err)
	return ok
}

// retryable says whether another attempt (at another endpoint, or after an
// election) may succeed, and may be made: once is true for an append
// without a client ID, which nothing deduplicates.
func retryable(err error, once bool) bool {
	if nothingApplied(err) {
		return true
	}
	if once || api.AsTooManyClients(err) || noSpace(err) {
		return false
	}
	if api.AsOutcomeUnknown(err) {
		return true // with the same (client ID, seq): the dedup table makes it safe
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// call runs f against endpoints until it succeeds or fails for good. app
// is the request when f appends (nil for reads and trims): then f is sent
// only over an established connection, and a failure after an attempt that
// may have reached the cluster is an *UnknownOutcomeError. An append
// without a client ID is then never sent again.
func (c *Client) call(ctx context.Context, app *paxosdpb.AppendRequest, f func(ctx context.Context, svc paxosdpb.LogServiceClient) error) error {
	var (
		last         error
		maybeApplied bool // an append attempt failed with its outcome open
	)
	once := app != nil && app.ClientId == 0
	fail := func(err error) error {
		if app != nil && maybeApplied {
			return &UnknownOutcomeError{ClientID: app.ClientId, Seq: app.Seq, Err: err}
		}
		return err
	}
	backoff := 50 * time.Millisecond
	for attempt := 0; attempt < c.opt.Retries; attempt++ {
		for _, ep := range c.order() {
			cc, err := c.conn(ep)
			if err != nil {
				return fail(err)
			}
			var master string
			actx, cancel := context.WithTimeout(context.WithValue(ctx, masterHint{}, &master), c.opt.CallTimeout)
			if app != nil {
				err = c.ready(actx, ep, cc)
			}
			if err == nil {
				err = f(actx, logClient{paxosdpb.NewLogServiceClient(cc), c, ep, cc})
				maybeApplied = maybeApplied || (app != nil && err != nil && !definite(err))
			}
			cancel()
			if err == nil {
				if master != "" {
					ep = master // ep forwarded to it: go straight there next time
				}
				c.prefer(ep)
				return nil
			}
			last = err
			if once && maybeApplied {
				return fail(convert(err)) // a second attempt could apply it twice
			}
			if ctx.Err() != nil {
				return fail(fmt.Errorf("%w (last error: %v)", ctx.Err(), convert(last)))
			}
			if !retryable(err, once) {
				// The cluster's answer settles it; but a refusal before
				// proposing (no space) says nothing of an earlier attempt
				// whose outcome was open.
				if definite(err) && !(maybeApplied && noSpace(err)) {
					return convert(err)
				}
				return fail(convert(err))
			}
			if _, addr, ok := api.AsNotMaster(err); ok && addr != "" {
				c.prefer(addr) // the master: try it first next time
			}
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Errorf("%w (last error: %v)", ctx.Err(), convert(last)))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	return fail(fmt.Errorf("client: gave up after %d rounds over %d endpoints: %w", c.opt.Retries, len(c.endpoints), convert(last)))
}

func convert(err error) error {
	if first, ok := api.AsTrimmed(err); ok {
		return &TrimmedError{First: first}
	}
	if end, ok := api.AsExpectedIndex(err); ok {
		return &ConflictError{End: end}
	}
	if end, ok := api.AsTrimPastEnd(err); ok {
		return &TrimPastEndError{End: end}
	}
	if api.AsTooManyClients(err) {
		return &refusal{status: err, is: ErrTooManyClients}
	}
	if api.AsSeqReused(err) {
		return &refusal{status: err, is: ErrSeqReused}
	}
	if noSpace(err) {
		return &refusal{status: err, is: ErrNoSpace}
	}
	if _, desc, ok := api.AsInvalidArgument(err); ok {
		switch api.Reason(err) {
		case api.ReasonStaleSeq:
			return fmt.Errorf("%w: %s", ErrStaleSeq, desc)
		case api.ReasonEntryTooLarge:
			return fmt.Errorf("%w: %s", ErrTooLarge, desc)
		}
	}
	return err
}

// refusal is a refusal of the cluster that says it all (what happened, that
// nothing was applied, what to do): its message as the cluster wrote it,
// matching the client's sentinel and unwrapping to the gRPC status.
type refusal struct {
	status error
	is     error
}

func (r *refusal) Error() string        { return status.Convert(r.status).Message() }
func (r *refusal) Is(target error) bool { return target == r.is }
func (r *refusal) Unwrap() error        { return r.status }

// AppendResult says where an append landed.
type AppendResult struct {
	First, Last uint64
	Duplicate   bool // a retry found the append already applied
}

// Append appends entries, exactly once, and returns their indexes.
func (c *Client) Append(ctx context.Context, entries ...[]byte) (AppendResult, error) {
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	return c.AppendSeq(ctx, c.opt.ClientID, seq, entries...)
}

// AppendAt appends entries only if the first lands at index expected (a
// compare-and-append); otherwise it returns a *ConflictError (ErrConflict)
// with the log's end, and nothing is appended.
func (c *Client) AppendAt(ctx context.Context, expected uint64, entries ...[]byte) (AppendResult, error) {
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	return c.append(ctx, &paxosdpb.AppendRequest{Entries: entries, ClientId: c.opt.ClientID, Seq: seq, ExpectedIndex: &expected})
}

// AppendSeq appends entries with an explicit (clientID, seq): a repeat of an
// applied pair returns the original indexes with Duplicate set. With
// clientID 0 nothing deduplicates the append, so it is sent again only after
// an answer that says nothing was applied; any other failure returns an
// *UnknownOutcomeError (ErrUnknownOutcome).
func (c *Client) AppendSeq(ctx context.Context, clientID, seq uint64, entries ...[]byte) (AppendResult, error) {
	return c.append(ctx, &paxosdpb.AppendRequest{Entries: entries, ClientId: clientID, Seq: seq})
}

func (c *Client) append(ctx context.Context, req *paxosdpb.AppendRequest) (AppendResult, error) {
	var res AppendResult
	err := c.call(ctx, req, func(ctx context.Context, svc paxosdpb.LogServiceClient) error {
		r, err := svc.Append(ctx, req)
		if err == nil {
			res = AppendResult{First: r.FirstIndex, Last: r.LastIndex, Duplicate: r.Duplicate}
		}
		return err
	})
	return res, err
}

// Entry is one log entry.
type Entry struct {
	Index uint64
	Value []byte
}

// ReadResult is a page of the log.
type ReadResult struct {
	Entries              []Entry
	Next                 uint64 // where to continue
	FirstIndex, EndIndex uint64 // the log held [FirstIndex, EndIndex)
	Local                bool
}

// Read reads up to count entries from index from. local reads are served by
// any node from what it has applied; otherwise the master serves them,
// linearizably.
func (c *Client) Read(ctx context.Context, from uint64, count int, local bool) (ReadResult, error) {
	req := &paxosdpb.ReadRequest{From: from, MaxCount: uint32(count), Consistency: paxosdpb.Consistency_LINEARIZABLE}
	if local {
		req.Consistency = paxosdpb.Consistency_LOCAL
	}
	var res ReadResult
	err := c.call(ctx, nil, func(ctx context.Context, svc paxosdpb.LogServiceClient) error {
		r, err := svc.Read(ctx, req)
		if err == nil {
			res = ReadResult{Entries: fromPB(r.Entries), Next: r.NextIndex, FirstIndex: r.FirstIndex, EndIndex: r.EndIndex, Local: r.Local}
		}
		return err
	})
	return res, err
}

// Trim drops the entries below before on every replica; it returns the new
// first index.
func (c *Client) Trim(ctx context.Context, before uint64) (uint64, error) {
	var first uint64
	err := c.call(ctx, nil, func(ctx context.Context, svc paxosdpb.LogServiceClient) error {
		r, err := svc.Trim(ctx, &paxosdpb.TrimRequest{Before: before})
		if err == nil {
			first = r.FirstIndex
		}
		return err
	})
	return first, err
}

// TransferMaster asks the master to hand its lease to voter to (0: the one
// the master picks, the best caught up among those it hears from) and waits
// until the successor reports itself master, or ctx ends. It returns the old
// master and the successor. Appends sent meanwhile are refused with
// NotMaster and retried by the client as usual.
func (c *Client) TransferMaster(ctx context.Context, to uint64) (from, successor uint64, err error) {
	err = c.call(ctx, nil, func(ctx context.Context, svc paxosdpb.LogServiceClient) error {
		r, err := svc.TransferMaster(ctx, &paxosdpb.TransferMasterRequest{To: to})
		if err == nil {
			from, successor = r.From, r.To
		}
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return from, successor, c.AwaitMaster(ctx, successor)
}

// AwaitMaster waits until member id reports itself master, asking the
// endpoints and the address the cluster's status gives for id.
func (c *Client) AwaitMaster(ctx context.Context, id uint64) error {
	addrs := slices.Clone(c.endpoints)
	for {
		for k := 0; k < len(addrs); k++ {
			st, err := c.Status(ctx, addrs[k])
			if err != nil {
				continue
			}
			if st.NodeId == id && st.Role == "master" {
				return nil
			}
			for _, m := range st.Members {
				if m.Id == id && m.Address != "" && !slices.Contains(addrs, m.Address) {
					addrs = append(addrs, m.Address)
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("member %d is not master yet: %w", id, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Status asks one endpoint for its status.
func (c *Client) Status(ctx context.Context, endpoint string) (*paxosdpb.StatusResponse, error) {
	svc, err := c.api(endpoint)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opt.CallTimeout)
	defer cancel()
	return svc.Status(ctx, &paxosdpb.StatusRequest{})
}

// Endpoints returns the endpoints the client was given.
func (c *Client) Endpoints() []string { return c.endpoints }

// Tail calls fn with every entry from index from on, in order, following the
// log as it grows, until ctx ends or fn returns an error. When a stream
// breaks it resumes at the index after the last entry delivered, on any
// endpoint: no gaps, no duplicates. If follow is false it stops at the end
// of the log as it was when it started.
func (c *Client) Tail(ctx context.Context, from uint64, follow bool, fn func(Entry) error) error {
	next := from
	var end uint64
	if !follow {
		r, err := c.Read(ctx, from, 1, true)
		if err != nil {
			return err
		}
		end = r.EndIndex
		if next >= end {
			return nil
		}
	}
	backoff := 50 * time.Millisecond
	for {
		err := c.tailOnce(ctx, &next, end, follow, fn)
		if !errors.Is(err, errNoEndpoint) {
			return err // done, trimmed, or fn's own error
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

var errNoEndpoint = errors.New("no endpoint could serve the tail")

// Entries iterates over the log from index from, following it as it grows,
// like Tail with follow set: every index once, in order, across failures of
// any node. The iteration ends when ctx ends, when the loop breaks, or with
// an error (a *TrimmedError when from was trimmed).
func (c *Client) Entries(ctx context.Context, from uint64) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		stop := errors.New("stop")
		err := c.Tail(ctx, from, true, func(e Entry) error {
			if !yield(e, nil) {
				return stop
			}
			return nil
		})
		if err != nil && !errors.Is(err, stop) && ctx.Err() == nil {
			yield(Entry{}, err)
		}
	}
}

// tailOnce streams from each endpoint in turn until one breaks for good. It
// returns errNoEndpoint when every endpoint failed (try again later).
func (c *Client) tailOnce(ctx context.Context, next *uint64, end uint64, follow bool, fn func(Entry) error) error {
	for _, ep := range c.order() {
		svc, err := c.api(ep)
		if err != nil {
			return err
		}
		sctx, cancel := context.WithCancel(ctx)
		stream, err := svc.Tail(sctx, &paxosdpb.TailRequest{From: *next})
		if err != nil {
			cancel()
			continue
		}
		for {
			r, err := stream.Recv()
			if err != nil {
				cancel()
				if _, ok := api.AsTrimmed(err); ok || ctx.Err() != nil {
					return convert(err)
				}
				break // try the next endpoint
			}
			for _, e := range r.Entries {
				if e.Index != *next {
					continue // never deliver a gap or a repeat
				}
				if err := fn(Entry{Index: e.Index, Value: e.Value}); err != nil {
					cancel()
					return err
				}
				*next = e.Index + 1
				if !follow && *next >= end {
					cancel()
					return nil
				}
			}
		}
	}
	return errNoEndpoint
}

func fromPB(es []*paxosdpb.Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = Entry{Index: e.Index, Value: e.Value}
	}
	return out
}

// ChangeMembers makes one membership change through the master and returns
// the configuration after it, once the change is in effect on the master.
// A refused change is a FailedPrecondition whose reason api.AsChangeRefused
// returns; its message says why.
func (c *Client) ChangeMembers(ctx context.Context, req *paxosdpb.ChangeMembersRequest) (*paxosdpb.ChangeMembersResponse, error) {
	var resp *paxosdpb.ChangeMembersResponse
	err := c.call(ctx, nil, func(ctx context.Context, svc paxosdpb.LogServiceClient) error {
		r, err := svc.ChangeMembers(ctx, req)
		resp = r
		return err
	})
	return resp, err
}

// ListMembers returns the configuration as the first endpoint that answers
// applied it, with what that node knows of each member.
func (c *Client) ListMembers(ctx context.Context) (*paxosdpb.ListMembersResponse, error) {
	var resp *paxosdpb.ListMembersResponse
	err := c.call(ctx, nil, func(ctx context.Context, svc paxosdpb.LogServiceClient) error {
		r, err := svc.ListMembers(ctx, &paxosdpb.ListMembersRequest{})
		resp = r
		return err
	})
	return resp, err
}

// Join asks the cluster to add node id, serving at addr with a data
// directory of incarnation inc, as a follower (paxosd server --join does).
func (c *Client) Join(ctx context.Context, id uint64, addr string, inc uint64) (*paxosdpb.JoinResponse, error) {
	var resp *paxosdpb.JoinResponse
	err := c.call(ctx, nil, func(ctx context.Context, svc paxosdpb.LogServiceClient) error {
		r, err := svc.Join(ctx, &paxosdpb.JoinRequest{Id: id, Address: addr, Incarnation: inc})
		resp = r
		return err
	})
	return resp, err
}
