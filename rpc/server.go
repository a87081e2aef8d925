package rpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/gossip"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/members"
	"github.com/paxosd/paxosd/node"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
	"github.com/paxosd/paxosd/storage"
)

// Read and tail bounds: a default, and a ceiling no request can exceed.
const (
	defaultReadCount = 1000
	maxReadCount     = 10000
	defaultReadBytes = 4 << 20
	maxReadBytes     = api.MaxReadBytes
	// noMasterWait is how long an append, trim or linearizable read waits
	// for an election before answering Unavailable.
	noMasterWait = 5 * time.Second
	// forwardedKey marks a request one node forwarded to the master, so that
	// it is never forwarded twice (no loops while masters change).
	forwardedKey = "paxosd-forwarded"
	// redialWait bounds the dial a forward makes at once on a connection
	// that failed before (redial).
	redialWait = time.Second
)

// LogServer serves paxosd.v1.LogService for one node. Appends, trims and
// linearizable reads that reach a node that is not the master are forwarded
// to the master, so any endpoint works.
type LogServer struct {
	paxosdpb.UnimplementedLogServiceServer
	node      *node.Node
	id        uint64
	clusterID uint64
	static    map[uint64]string // the nodes given at start: id -> address
	memMu     sync.RWMutex
	addrs     map[uint64]string // every member and follower: id -> address (SetMembers)
	voters    map[uint64]bool
	// Incarnation is the incarnation of the node's data directory, which
	// Status reports. Set it before serving.
	Incarnation uint64
	// Cluster and Genesis are the cluster's name and the voters it was
	// created with, which Join tells a joining node. Set them before
	// serving.
	Cluster string
	Genesis map[uint64]string
	// Gossip is the node's gossip, nil when it runs none. Status reports
	// its address, ListMembers its view of who is alive. Set it before
	// serving.
	Gossip *gossip.Gossip
	// Connected, when set, says whether the node has heard from its
	// cluster; until it has, local reads and tails fail with
	// api.NotConnectedError (a follower that never reached its member
	// holds no log of the cluster's). Set it before serving.
	Connected func() bool
	// DialCreds secure the connections to the master this node forwards
	// to (nil: plaintext). Set it before serving.
	DialCreds credentials.TransportCredentials

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// NewLogServer returns the API server of n. addrs maps every node (members
// and followers) to its address; voters says which are members.
func NewLogServer(n *node.Node, id, clusterID uint64, addrs map[uint64]string, voters map[uint64]bool) *LogServer {
	return &LogServer{node: n, id: id, clusterID: clusterID, static: addrs, addrs: addrs, voters: voters, conns: map[string]*grpc.ClientConn{}}
}

// Register registers the service on s.
func (s *LogServer) Register(g *grpc.Server) { paxosdpb.RegisterLogServiceServer(g, s) }

// Close closes the connections used for forwarding.
func (s *LogServer) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	clear(s.conns)
}

// Append implements LogService.Append.
func (s *LogServer) Append(ctx context.Context, req *paxosdpb.AppendRequest) (*paxosdpb.AppendResponse, error) {
	if len(req.Entries) == 0 {
		return nil, api.InvalidArgument("entries", "at least one entry is required")
	}
	var resp *paxosdpb.AppendResponse
	err := s.toMaster(ctx, func(ctx context.Context) error {
		r, err := s.node.Append(ctx, req.Entries, req.ClientId, req.Seq, req.ExpectedIndex)
		if err == nil {
			resp = &paxosdpb.AppendResponse{FirstIndex: r.First, LastIndex: r.Last, Duplicate: r.Duplicate}
		} else if errors.Is(err, core.ErrConflict) {
			return api.ExpectedIndexError(req.GetExpectedIndex(), r.First)
		}
		return err
	}, func(ctx context.Context, c paxosdpb.LogServiceClient) error {
		r, err := c.Append(ctx, req)
		resp = r
		return err
	})
	return resp, appendOutcome(err)
}

// appendOutcome keeps the errors that settle an append (nothing was
// applied, or the cluster refused it for good) and turns every other
// failure into api.OutcomeUnknownError: the append was proposed here, or
// forwarded to the master, and then this node could not learn its fate (the
// node stopped with it in flight, its storage failed, the proposal was
// dropped when mastership changed, the deadline passed, the forward
// broke). A list of what settles, not of what does not, so that a failure
// nobody thought of is never reported as a plain one.
func appendOutcome(err error) error {
	if err == nil || api.AsOutcomeUnknown(err) {
		return err
	}
	if _, _, ok := api.AsNotMaster(err); ok {
		return err // nothing proposed: go to the master
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.Aborted, codes.AlreadyExists, codes.Canceled:
		return err // bad input, a failed expected_index, a reused seq; Canceled: the caller left
	case codes.Unauthenticated, codes.PermissionDenied:
		return err // the master's auth check refused a forward before acting (rpc/auth.go)
	case codes.ResourceExhausted:
		if api.Reason(err) != "" {
			return err // TOO_MANY_CLIENTS, NO_SPACE, OVERLOADED: refused before it applied
		}
	}
	return api.OutcomeUnknownError(status.Convert(err).Message())
}

// Trim implements LogService.Trim. Whether before is past the end of the
// log is the master's to say (instance.ProposeTrim, against its applied
// state): this node may lag behind the log, and would refuse a valid trim.
// A forwarded trim returns the master's answer.
func (s *LogServer) Trim(ctx context.Context, req *paxosdpb.TrimRequest) (*paxosdpb.TrimResponse, error) {
	if req.Before == 0 {
		return nil, api.InvalidArgument("before", "must be above 0 (nothing lies below index 0)")
	}
	var resp *paxosdpb.TrimResponse
	err := s.toMaster(ctx, func(ctx context.Context) error {
		r, err := s.node.Trim(ctx, req.Before)
		if err == nil {
			resp = &paxosdpb.TrimResponse{FirstIndex: r.First}
		}
		return err
	}, func(ctx context.Context, c paxosdpb.LogServiceClient) error {
		r, err := c.Trim(ctx, req)
		resp = r
		return err
	})
	return resp, err
}

// Read implements LogService.Read.
func (s *LogServer) Read(ctx context.Context, req *paxosdpb.ReadRequest) (*paxosdpb.ReadResponse, error) {
	count, bytes := int(req.MaxCount), int(min(req.MaxBytes, maxReadBytes))
	if count == 0 {
		count = defaultReadCount
	}
	if count > maxReadCount {
		return nil, api.InvalidArgument("max_count", fmt.Sprintf("%d is above the limit of %d", count, maxReadCount))
	}
	if bytes == 0 {
		bytes = defaultReadBytes
	}
	local := req.Consistency == paxosdpb.Consistency_LOCAL
	if local {
		if err := s.notConnected(); err != nil {
			return nil, err
		}
		resp, err := s.read(ctx, req.From, count, bytes, false)
		return resp, s.status(err)
	}
	var resp *paxosdpb.ReadResponse
	err := s.toMaster(ctx, func(ctx context.Context) error {
		r, err := s.read(ctx, req.From, count, bytes, true)
		resp = r
		return err
	}, func(ctx context.Context, c paxosdpb.LogServiceClient) error {
		r, err := c.Read(ctx, req)
		resp = r
		return err
	})
	return resp, err
}

func (s *LogServer) read(ctx context.Context, from uint64, count, bytes int, linearizable bool) (*paxosdpb.ReadResponse, error) {
	ents, err := s.node.Read(ctx, from, count, bytes, linearizable)
	if err != nil {
		return nil, err
	}
	first, end := s.node.Bounds()
	resp := &paxosdpb.ReadResponse{Entries: toPB(ents), NextIndex: from, FirstIndex: first, EndIndex: max(end, from), Local: !linearizable}
	if len(ents) > 0 {
		resp.NextIndex = ents[len(ents)-1].Index + 1
		resp.EndIndex = max(resp.EndIndex, resp.NextIndex)
	}
	return resp, nil
}

// notConnected is the error of a local read or tail before the node heard
// from its cluster (see Connected), nil after.
func (s *LogServer) notConnected() error {
	if s.Connected == nil || s.Connected() {
		return nil
	}
	return api.NotConnectedError(fmt.Sprintf("node %d is a follower that has not heard from its cluster yet (its member is down or unreachable, "+
		"or refuses it: see the node's log): it holds no log of the cluster's to serve; read from a member, or retry once it has caught up", s.id))
}

// Tail implements LogService.Tail.
func (s *LogServer) Tail(req *paxosdpb.TailRequest, stream grpc.ServerStreamingServer[paxosdpb.TailResponse]) error {
	if err := s.notConnected(); err != nil {
		return err
	}
	err := s.node.Tail(stream.Context(), req.From, defaultReadCount, defaultReadBytes, func(ents []core.Entry) error {
		return stream.Send(&paxosdpb.TailResponse{Entries: toPB(ents)})
	})
	return s.status(err)
}

// Status implements LogService.Status.
func (s *LogServer) Status(ctx context.Context, _ *paxosdpb.StatusRequest) (*paxosdpb.StatusResponse, error) {
	st, err := s.node.Status(ctx)
	if err != nil {
		return nil, s.status(err)
	}
	first, end := s.node.Bounds()
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	resp := &paxosdpb.StatusResponse{
		NodeId: s.id, ClusterId: s.clusterID, Role: st.Role, MasterId: st.Master, MasterAddress: s.addrs[st.Master],
		Ballot: uint64(st.Ballot), Promised: uint64(st.Promised), ChosenInstance: st.Applied, FirstIndex: first, EndIndex: end,
		DedupHits: st.DedupHits, DedupClients: uint64(st.DedupClients), Incarnation: s.Incarnation,
	}
	if s.Gossip != nil {
		resp.GossipAddress = s.Gossip.Addr()
	}
	// A failed check leaves the numbers 0 (the proto says so): Status still
	// answers, it is what an operator looks at when the disk is in trouble.
	free, used, minFree, _ := s.node.Disk()
	resp.DiskFreeBytes, resp.DiskUsedBytes, resp.MinFreeBytes = free, used, minFree
	ids := make([]uint64, 0, len(s.addrs))
	for id := range s.addrs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		resp.Members = append(resp.Members, &paxosdpb.Member{Id: id, Address: s.addrs[id], Voter: s.voters[id]})
	}
	return resp, nil
}

// TransferMaster implements LogService.TransferMaster.
func (s *LogServer) TransferMaster(ctx context.Context, req *paxosdpb.TransferMasterRequest) (*paxosdpb.TransferMasterResponse, error) {
	s.memMu.RLock()
	isVoter := s.voters[req.To]
	var voters []uint64
	for id, v := range s.voters {
		if v {
			voters = append(voters, id)
		}
	}
	s.memMu.RUnlock()
	if req.To != 0 && !isVoter {
		slices.Sort(voters)
		return nil, api.InvalidArgument("to", fmt.Sprintf("%d is not a voter of this cluster (voters: %v)", req.To, voters))
	}
	var resp *paxosdpb.TransferMasterResponse
	err := s.toMaster(ctx, func(ctx context.Context) error {
		to, err := s.node.TransferMaster(ctx, req.To)
		if err == nil {
			resp = &paxosdpb.TransferMasterResponse{From: s.id, To: to}
		}
		return err
	}, func(ctx context.Context, c paxosdpb.LogServiceClient) error {
		r, err := c.TransferMaster(ctx, req)
		resp = r
		return err
	})
	return resp, err
}

// toMaster runs local on this node; if it is not the master, it forwards the
// request to the master with remote, waiting out an election if none is
// known yet.
func (s *LogServer) toMaster(ctx context.Context, local func(context.Context) error, remote func(context.Context, paxosdpb.LogServiceClient) error) error {
	deadline := time.Now().Add(noMasterWait)
	for {
		err := local(ctx)
		var nm *core.NotMasterError
		if !errors.As(err, &nm) {
			return s.status(err)
		}
		if nm.Master != 0 && nm.Master != s.id {
			addr := s.addr(nm.Master)
			// Looked up only here: a stream's context is a long chain of
			// values to walk, for every append (at 64 clients this was 4%
			// of a master's CPU); and not with FromIncomingContext, which
			// copies every header.
			if len(metadata.ValueFromIncomingContext(ctx, forwardedKey)) > 0 {
				return api.NotMasterError(nm.Master, addr)
			}
			c, err := s.forwardConn(ctx, addr)
			if err != nil {
				return api.NotMasterError(nm.Master, addr)
			}
			_ = grpc.SetHeader(ctx, metadata.Pairs(api.MasterHeader, addr)) // a hint: losing it costs a hop
			fctx := metadata.AppendToOutgoingContext(forwardIdentity(ctx), forwardedKey, fmt.Sprint(s.id))
			return remote(fctx, paxosdpb.NewLogServiceClient(c))
		}
		// No master known: an election is under way.
		if time.Now().After(deadline) {
			return api.NotMasterError(0, "")
		}
		select {
		case <-ctx.Done():
			return s.status(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// forwardConn is conn, for a request about to be forwarded on it: a
// connection that failed before dials again at once (redial).
func (s *LogServer) forwardConn(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	c, err := s.conn(addr)
	if err == nil {
		redial(ctx, c)
	}
	return c, err
}

// redial makes a connection in transient failure dial again now and waits
// for that attempt, at most redialWait. gRPC fails every call on such a
// connection until its backoff ends, with the error of the last dial: a
// node that asked a peer for its gossip address at start, before the peer
// listened, then answered its first forwards to that peer, the master long
// up by then, with "connection refused".
func redial(ctx context.Context, c *grpc.ClientConn) {
	if c.GetState() != connectivity.TransientFailure {
		return
	}
	c.ResetConnectBackoff()
	ctx, cancel := context.WithTimeout(ctx, redialWait)
	defer cancel()
	for st := connectivity.TransientFailure; c.WaitForStateChange(ctx, st); {
		if st = c.GetState(); st != connectivity.Connecting && st != connectivity.Idle {
			return
		}
	}
}

func (s *LogServer) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	if addr == "" {
		return nil, errors.New("no address")
	}
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if s.DialCreds != nil {
		creds = s.DialCreds
	}
	// A connection that failed (the node was not up yet when gossip
	// discovery asked it, or it restarted) fails every call at once until
	// its backoff ends; gRPC's default backoff grows to two minutes, which
	// would fail forwards to a master that is up all that time. Reconnect
	// within a second instead.
	c, err := grpc.NewClient(addr, append(api.DialWindow(), grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(api.MaxResponseBytes), grpc.MaxCallSendMsgSize(api.MaxMessageBytes)))...)
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// status turns node errors into gRPC statuses with details.
func (s *LogServer) status(err error) error {
	var (
		nm *core.NotMasterError
		tr *storage.TrimmedError
		ee *node.EntryError
		te *core.TrimPastEndError
		ns *node.NoSpaceError
	)
	if reason, ok := changeRefused(err); ok && status.Code(err) == codes.Unknown {
		return api.ChangeRefusedError(reason, err.Error())
	}
	switch {
	case err == nil:
		return nil
	case status.Code(err) != codes.Unknown:
		return err // already a status (forwarded)
	case errors.As(err, &ee) && errors.Is(err, node.ErrTooLarge):
		return api.InvalidArgumentReason(fmt.Sprintf("entries[%d]", ee.Index), err.Error(), api.ReasonEntryTooLarge)
	case errors.As(err, &ee):
		return api.InvalidArgument(fmt.Sprintf("entries[%d]", ee.Index), err.Error())
	case errors.As(err, &nm):
		return api.NotMasterError(nm.Master, s.addr(nm.Master))
	case errors.As(err, &tr):
		return api.TrimmedError(tr.First)
	case errors.Is(err, node.ErrEmpty):
		return api.InvalidArgument("entries", err.Error())
	case errors.Is(err, node.ErrTooLarge):
		return api.InvalidArgumentReason("entries", err.Error(), api.ReasonEntryTooLarge)
	case errors.Is(err, core.ErrStaleSeq):
		return api.InvalidArgumentReason("seq", err.Error(), api.ReasonStaleSeq)
	case errors.As(err, &te):
		return api.TrimPastEndError(te.Before, te.End)
	case errors.As(err, &ns):
		return api.NoSpaceError(s.id, ns.Dir, ns.Free, ns.Min)
	case errors.Is(err, core.ErrTooManyClients):
		return api.TooManyClientsError(err.Error())
	case errors.Is(err, core.ErrSeqReused):
		return api.SeqReusedError(err.Error())
	case errors.Is(err, core.ErrDropped), errors.Is(err, core.ErrUnknownOutcome):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, node.ErrStopped):
		return status.Error(codes.Unavailable, "node is stopping")
	case errors.Is(err, instance.ErrNoSuccessor):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, members.ErrBadChange):
		return api.InvalidArgument("kind", err.Error())
	case errors.Is(err, node.ErrRemoved):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded; the outcome of an append is unknown")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func toPB(ents []core.Entry) []*paxosdpb.Entry {
	out := make([]*paxosdpb.Entry, len(ents))
	for i, e := range ents {
		out[i] = &paxosdpb.Entry{Index: e.Index, Value: e.Data}
	}
	return out
}
