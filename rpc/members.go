package rpc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/gossip"
	"github.com/paxosd/paxosd/instance"
	"github.com/paxosd/paxosd/learner"
	"github.com/paxosd/paxosd/members"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// handoverWait bounds how long removing the master waits for its successor.
const handoverWait = 10 * time.Second

// changeRefused maps the members package's refusals to their reasons.
func changeRefused(err error) (string, bool) {
	for _, r := range []struct {
		err    error
		reason string
	}{
		{members.ErrChangePending, api.ReasonChangePending}, {members.ErrBehind, api.ReasonMemberBehind},
		{members.ErrMemberExists, api.ReasonMemberExists}, {members.ErrUnknownMember, api.ReasonUnknownMember},
		{members.ErrNotFollower, api.ReasonNotFollower}, {members.ErrLastVoter, api.ReasonLastVoter},
		{members.ErrNoQuorum, api.ReasonNoQuorum}, {members.ErrSlotsExhausted, api.ReasonSlotsExhausted},
		{learner.ErrNoMembership, api.ReasonNoMembership}, {members.ErrNoIncarnation, api.ReasonNoIncarnation},
		{members.ErrBadChange, api.ReasonBadChange},
	} {
		if errors.Is(err, r.err) {
			return r.reason, true
		}
	}
	return "", false
}

// SetMembers makes the server follow the membership h: forwarding finds
// members added later, Status lists the configuration. The loop calls it
// (node.Config.OnMembers); it must not block.
func (s *LogServer) SetMembers(h members.History) {
	if h.IsZero() {
		return
	}
	addrs, voters := maps.Clone(s.static), map[uint64]bool{}
	for _, c := range []members.Config{h.Cur, h.Latest()} {
		for _, m := range c.Members {
			addrs[m.ID] = m.Addr
			voters[m.ID] = voters[m.ID] || m.Role == members.Voter
		}
	}
	for id := range s.static {
		if _, ok := voters[id]; !ok {
			voters[id] = false // a static follower, or a genesis member no longer listed
		}
	}
	s.memMu.Lock()
	s.addrs, s.voters = addrs, voters
	s.memMu.Unlock()
}

// addr returns the address of node id, "" if unknown.
func (s *LogServer) addr(id uint64) string {
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	return s.addrs[id]
}

func kindOf(k paxosdpb.ChangeKind) (members.Kind, bool) {
	switch k {
	case paxosdpb.ChangeKind_ADD_FOLLOWER:
		return members.AddFollower, true
	case paxosdpb.ChangeKind_PROMOTE:
		return members.Promote, true
	case paxosdpb.ChangeKind_REMOVE:
		return members.Remove, true
	}
	return 0, false
}

// ChangeMembers implements LogService.ChangeMembers.
func (s *LogServer) ChangeMembers(ctx context.Context, req *paxosdpb.ChangeMembersRequest) (*paxosdpb.ChangeMembersResponse, error) {
	kind, ok := kindOf(req.Kind)
	switch {
	case !ok:
		return nil, api.InvalidArgument("kind", "must be ADD_FOLLOWER, PROMOTE or REMOVE")
	case req.Id == 0:
		return nil, api.InvalidArgument("id", "a member ID is a positive integer")
	case kind == members.AddFollower:
		if _, _, err := net.SplitHostPort(req.Address); err != nil {
			return nil, api.InvalidArgument("address", fmt.Sprintf("%q is not HOST:PORT: %v", req.Address, err))
		}
	}
	ch := members.Change{Kind: kind, ID: req.Id, Addr: req.Address, Incarnation: req.Incarnation}
	var resp *paxosdpb.ChangeMembersResponse
	remote := func(ctx context.Context, c paxosdpb.LogServiceClient) error {
		r, err := c.ChangeMembers(ctx, req)
		resp = r
		return err
	}
	err := s.toMaster(ctx, func(ctx context.Context) error {
		first, err := s.node.ChangeMembers(ctx, ch)
		if errors.Is(err, instance.ErrRemovingMaster) {
			return s.removeSelf(ctx, remote)
		}
		if err != nil {
			return err
		}
		resp = &paxosdpb.ChangeMembersResponse{FirstInstance: first, Members: memberInfos(s.node.Members().Latest(), nil, nil), MasterId: s.id}
		return nil
	}, remote)
	return resp, err
}

// removeSelf removes this node, the master: it hands its lease to another
// voter, waits for the successor to serve, and sends the removal there.
func (s *LogServer) removeSelf(ctx context.Context, remote func(context.Context, paxosdpb.LogServiceClient) error) error {
	to, err := s.node.TransferMaster(ctx, 0)
	if err != nil {
		return fmt.Errorf("removing the master (node %d): handing its lease over first: %w", s.id, err)
	}
	wctx, cancel := context.WithTimeout(ctx, handoverWait)
	defer cancel()
	for {
		st, err := s.node.Status(wctx)
		if err != nil {
			return err
		}
		if st.Master == to {
			break
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("removing the master (node %d): node %d did not take the lease over within %v: %w", s.id, to, handoverWait, wctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	c, err := s.forwardConn(ctx, s.addr(to))
	if err != nil {
		return api.NotMasterError(to, s.addr(to))
	}
	// Forwarded once more, on purpose: the request came to this node as
	// the master, which is no longer the master.
	fctx := metadata.AppendToOutgoingContext(forwardIdentity(ctx), forwardedKey, fmt.Sprint(s.id))
	_ = grpc.SetHeader(ctx, metadata.Pairs(api.MasterHeader, s.addr(to)))
	return remote(fctx, paxosdpb.NewLogServiceClient(c))
}

// memberInfos describes the members of c, with progress from st when given
// and what the gossip view peers (nil: no gossip) says of each.
func memberInfos(c members.Config, st *instance.Status, peers map[uint64]gossip.Peer) []*paxosdpb.MemberInfo {
	out := make([]*paxosdpb.MemberInfo, 0, len(c.Members))
	for _, m := range c.Members {
		mi := &paxosdpb.MemberInfo{Id: m.ID, Address: m.Addr, Role: m.Role.String(), Slot: m.Slot, Incarnation: m.Incarnation}
		if m.Role != members.Voter {
			mi.Slot = 0
		}
		// A gossip peer stands for the member only if it serves at the
		// member's address (or has not said where it serves yet).
		p, gossiped := peers[m.ID]
		gossiped = gossiped && (p.APIAddr == "" || p.APIAddr == m.Addr)
		if gossiped {
			mi.GossipAddress = p.GossipAddr
		}
		if st != nil {
			if m.ID == st.ID {
				mi.Applied, mi.Known, mi.Live = st.Applied, true, true
			}
			for _, p := range st.Peers {
				if p.ID == m.ID && (p.Applied > 0 || p.Live) {
					mi.Applied, mi.Known, mi.Live = p.Applied, true, p.Live
				}
			}
			// Applied only grows, so the higher figure is the fresher:
			// gossip's when the member last reported here long ago, or
			// never (a follower this node does not learn from). A peer
			// with no role has not published its state yet.
			if gossiped && p.Role != "" && (!mi.Known || p.Applied > mi.Applied) {
				mi.Applied, mi.Known = p.Applied, true
			}
			if mi.Known {
				mi.Lag = st.Applied - min(mi.Applied, st.Applied)
			}
			mi.Alive = mi.Live
			if peers != nil {
				mi.Alive = gossiped && p.Alive
			}
		}
		out = append(out, mi)
	}
	return out
}

// describeChange says what change turns cur into next.
func describeChange(cur, next members.Config) string {
	for _, m := range next.Members {
		old, ok := cur.Get(m.ID)
		switch {
		case !ok:
			return fmt.Sprintf("add-follower %d", m.ID)
		case old.Role != m.Role:
			return fmt.Sprintf("promote %d", m.ID)
		}
	}
	for _, m := range cur.Members {
		if _, ok := next.Get(m.ID); !ok {
			return fmt.Sprintf("remove %d", m.ID)
		}
	}
	return "change"
}

// ListMembers implements LogService.ListMembers.
func (s *LogServer) ListMembers(ctx context.Context, _ *paxosdpb.ListMembersRequest) (*paxosdpb.ListMembersResponse, error) {
	st, err := s.node.Status(ctx)
	if err != nil {
		return nil, s.status(err)
	}
	h := st.Members
	peers := s.gossipPeers()
	resp := &paxosdpb.ListMembersResponse{NodeId: s.id, Applied: st.Applied, MasterId: st.Master, Members: memberInfos(h.Cur, &st, peers), Gossip: peers != nil}
	if from, ok := h.Pending(); ok {
		resp.Pending, resp.PendingFrom = describeChange(h.Cur, *h.Next), from
		resp.PendingMembers = memberInfos(*h.Next, &st, peers)
	}
	return resp, nil
}

// Join implements LogService.Join: the master adds the caller as a follower
// (or finds it added already with the same incarnation) and the answer
// carries what it needs to run.
func (s *LogServer) Join(ctx context.Context, req *paxosdpb.JoinRequest) (*paxosdpb.JoinResponse, error) {
	switch {
	case req.Id == 0:
		return nil, api.InvalidArgument("id", "a member ID is a positive integer")
	case req.Incarnation == 0:
		return nil, api.InvalidArgument("incarnation", "a joining node sends its data directory's incarnation")
	}
	if _, _, err := net.SplitHostPort(req.Address); err != nil {
		return nil, api.InvalidArgument("address", fmt.Sprintf("%q is not HOST:PORT: %v", req.Address, err))
	}
	var resp *paxosdpb.JoinResponse
	err := s.toMaster(ctx, func(ctx context.Context) error {
		if err := s.joined(req); err != nil {
			return err
		}
		if m, ok := s.node.Members().Latest().Get(req.Id); ok && addedAhead(m, req) {
			// Added ahead (members add) with no incarnation: the node
			// that joins at its address takes its place. A follower does
			// not vote, so nothing rests on the entry it replaces.
			if _, err := s.node.ChangeMembers(ctx, members.Change{Kind: members.Remove, ID: req.Id}); err != nil && !errors.Is(err, members.ErrUnknownMember) {
				return err
			}
		}
		ch := members.Change{Kind: members.AddFollower, ID: req.Id, Addr: req.Address, Incarnation: req.Incarnation}
		_, err := s.node.ChangeMembers(ctx, ch)
		for errors.Is(err, members.ErrChangePending) && !s.isMember(req.Id) {
			// Another change (another node joining) goes first: they take
			// effect within a few round trips.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
			_, err = s.node.ChangeMembers(ctx, ch)
		}
		if errors.Is(err, members.ErrMemberExists) || errors.Is(err, members.ErrChangePending) {
			// Another attempt of this join may have been chosen meanwhile.
			if jerr := s.joined(req); jerr != nil || s.isMember(req.Id) {
				err = jerr
			}
		}
		if err != nil {
			return err
		}
		resp = s.joinResponse()
		return nil
	}, func(ctx context.Context, c paxosdpb.LogServiceClient) error {
		r, err := c.Join(ctx, req)
		resp = r
		return err
	})
	return resp, err
}

// isMember reports whether id is in the newest configuration.
func (s *LogServer) isMember(id uint64) bool {
	_, ok := s.node.Members().Latest().Get(id)
	return ok
}

// joined checks a join against the newest configuration: nil when req's
// node is not a member (the join goes on) or is one with the same address
// and incarnation (a restart: nothing to do); a refusal otherwise.
func (s *LogServer) joined(req *paxosdpb.JoinRequest) error {
	m, ok := s.node.Members().Latest().Get(req.Id)
	switch {
	case !ok || addedAhead(m, req):
		return nil
	case m.Incarnation != req.Incarnation:
		return api.ChangeRefusedError(api.ReasonIncarnationMismatch, fmt.Sprintf(
			"node %d is a member (a %s at %s) with another data directory (incarnation %016x; this one is %016x): "+
				"to put this directory in its place, run `paxosd members replace %d`, then start this node again with --join",
			req.Id, m.Role, m.Addr, m.Incarnation, req.Incarnation, req.Id))
	case m.Addr != req.Address:
		return api.ChangeRefusedError(api.ReasonMemberExists, fmt.Sprintf(
			"node %d is a member at %s, not %s: start it with --listen %s, or replace it (`paxosd members replace %d`)",
			req.Id, m.Addr, req.Address, m.Addr, req.Id))
	}
	return nil
}

// addedAhead reports whether m is a follower added without an incarnation
// (paxosd members add) at the address req joins at.
func addedAhead(m members.Member, req *paxosdpb.JoinRequest) bool {
	return m.Role == members.Follower && m.Incarnation == 0 && m.Addr == req.Address
}

func (s *LogServer) joinResponse() *paxosdpb.JoinResponse {
	resp := &paxosdpb.JoinResponse{Cluster: s.Cluster, ClusterId: s.clusterID, Members: memberInfos(s.node.Members().Latest(), nil, s.gossipPeers())}
	if s.Gossip != nil {
		resp.GossipAddress = s.Gossip.Addr()
	}
	for _, id := range slices.Sorted(maps.Keys(s.Genesis)) {
		resp.Genesis = append(resp.Genesis, &paxosdpb.Member{Id: id, Address: s.Genesis[id], Voter: true})
	}
	return resp
}

// gossipPeers is the gossip view by member ID, nil when the node runs no
// gossip.
func (s *LogServer) gossipPeers() map[uint64]gossip.Peer {
	if s.Gossip == nil {
		return nil
	}
	out := map[uint64]gossip.Peer{}
	for _, p := range s.Gossip.Peers() {
		out[p.ID] = p
	}
	return out
}

// PeerGossipAddress asks the node serving the API at addr for its gossip
// address ("" when it runs no gossip), over the connections used for
// forwarding.
func (s *LogServer) PeerGossipAddress(ctx context.Context, addr string) (string, error) {
	c, err := s.conn(addr)
	if err != nil {
		return "", fmt.Errorf("status of %s: %w", addr, err)
	}
	st, err := paxosdpb.NewLogServiceClient(c).Status(ctx, &paxosdpb.StatusRequest{})
	if err != nil {
		return "", fmt.Errorf("status of %s: %w", addr, err)
	}
	return st.GossipAddress, nil
}
