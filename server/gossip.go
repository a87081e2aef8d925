package server

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/paxosd/paxosd/gossip"
	"github.com/paxosd/paxosd/members"
)

// GossipOff is the Config.GossipListen (--gossip-listen) that runs no gossip.
const GossipOff = "off"

// publishEvery is how often the node's role and applied instance are handed
// to gossip: SetLocal is cheap, and gossip itself re-advertises at most every
// 250 ms, so members list shows others' progress within about a second.
const publishEvery = 500 * time.Millisecond

// discoverEvery is how often the node asks the members its gossip does not
// see alive for their gossip addresses (and joins them). A round costs one
// Status call per such member, and nothing once every member is alive.
const discoverEvery = 3 * time.Second

// discoverTimeout bounds one Status call of a discovery round, so that a
// dead member delays the next round by at most that.
const discoverTimeout = time.Second

// maxDiscoverPerRound bounds the Status calls of one round (they run in
// parallel); the others wait for the next round.
const maxDiscoverPerRound = 16

// gossipAddrs returns where the node gossips: bind is IP:PORT to listen on,
// advertise (possibly "") the address to tell the others when bind is a
// wildcard. gossipListen is Config.GossipListen ("" for the default: the
// host of listen with port 0, a free port the OS picks); self is the
// node's API address, whose host is advertised behind a wildcard bind.
// Memberlist takes IP addresses only: a host name is resolved to its first
// address.
func gossipAddrs(ctx context.Context, gossipListen, listen, self string) (bind, advertise string, err error) {
	what := "--gossip-listen " + gossipListen
	if gossipListen == "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return "", "", fmt.Errorf("--listen %q: %v", listen, err)
		}
		gossipListen, what = net.JoinHostPort(host, "0"), fmt.Sprintf("the gossip address derived from --listen %s", listen)
	}
	host, port, err := net.SplitHostPort(gossipListen)
	if err != nil {
		return "", "", fmt.Errorf("%s: %v (give IP:PORT, or %q)", what, err, GossipOff)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", fmt.Errorf("%s: port %q is not a number from 0 to 65535", what, port)
	} else if p == 0 {
		port = "0"
	}
	ip, err := resolveIP(ctx, host)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", what, err)
	}
	bind = net.JoinHostPort(ip.String(), port)
	if ip.IsUnspecified() {
		// Tell the others the host they reach the API at, when it is an
		// address; otherwise memberlist picks one of the host's private
		// addresses.
		if sh, _, err := net.SplitHostPort(self); err == nil {
			if sip, err := resolveIP(ctx, sh); err == nil && !sip.IsUnspecified() {
				advertise = net.JoinHostPort(sip.String(), "0")
			}
		}
	}
	return bind, advertise, nil
}

// resolveIP returns host as an IP address: "" is the IPv4 wildcard, a name
// its first address.
func resolveIP(ctx context.Context, host string) (net.IP, error) {
	if host == "" {
		return net.IPv4zero, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("host %q: gossip needs an IP address and the name does not resolve (%v)", host, err)
	}
	return ips[0].IP, nil
}

// startGossip starts the node's gossip (nil when cfg turns it off).
func startGossip(ctx context.Context, cfg Config, self string, cid uint64, onDown func(uint64)) (*gossip.Gossip, error) {
	if cfg.GossipListen == GossipOff {
		return nil, nil
	}
	bind, advertise, err := gossipAddrs(ctx, cfg.GossipListen, cfg.Listen, self)
	if err != nil {
		return nil, err
	}
	g, err := gossip.Start(gossip.Config{NodeID: cfg.ID, BindAddr: bind, AdvertiseAddr: advertise, APIAddr: self,
		Cluster: cid, Logger: cfg.Logger, ProbeInterval: cfg.GossipProbeInterval, OnDown: onDown, Key: cfg.GossipKey})
	if err != nil {
		return nil, fmt.Errorf("%w (pick another address with --gossip-listen, or --gossip-listen %s)", err, GossipOff)
	}
	return g, nil
}

// runGossip feeds the node's gossip until ctx ends: its role and applied
// instance every publishEvery, and, every discoverEvery, the gossip
// addresses of members it does not see alive (seeds first: what a Join
// answer listed). It returns once both loops have ended.
func (r *Server) runGossip(ctx context.Context, seeds []string) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.NewTicker(publishEvery)
		defer t.Stop()
		for {
			r.publishGossip(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		defer wg.Done()
		if len(seeds) > 0 {
			_, _ = r.gossip.Join(seeds) // the rounds below retry
		}
		t := time.NewTicker(discoverEvery)
		defer t.Stop()
		for {
			r.discover(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	wg.Wait()
}

// publishGossip hands the node's role and applied instance to gossip.
func (r *Server) publishGossip(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, publishEvery)
	defer cancel()
	st, err := r.node.Status(sctx)
	if err != nil {
		return // stopping, or the loop is busy: next time
	}
	role := gossip.RoleFollower
	if h := st.Members; h.IsZero() {
		if _, ok := r.cfg.Peers[r.cfg.ID]; ok && r.cfg.Follow == 0 {
			role = gossip.RoleVoter
		}
	} else if m, ok := h.Cur.Get(r.cfg.ID); ok && m.Role == members.Voter {
		role = gossip.RoleVoter
	}
	r.gossip.SetLocal(role, st.Applied)
}

// discover runs one discovery round: it asks each member that gossip does
// not see alive for its gossip address, and joins those that have one.
func (r *Server) discover(ctx context.Context) {
	// The applied membership once there is one (a removed member is no
	// longer asked); until then the members given at start.
	addrs := map[uint64]string{}
	if h := r.node.Members(); h.IsZero() {
		maps.Copy(addrs, r.cfg.Peers)
	} else {
		for _, c := range []members.Config{h.Cur, h.Latest()} {
			for _, m := range c.Members {
				addrs[m.ID] = m.Addr
			}
		}
	}
	delete(addrs, r.cfg.ID)
	var ask []string
	for _, id := range slices.Sorted(maps.Keys(addrs)) {
		if alive, _ := r.gossip.Alive(id); !alive && len(ask) < maxDiscoverPerRound {
			ask = append(ask, addrs[id])
		}
	}
	if len(ask) == 0 {
		return
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		seeds []string
	)
	for _, a := range ask {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, discoverTimeout)
			defer cancel()
			ga, err := r.api.PeerGossipAddress(sctx, a)
			if err != nil || ga == "" {
				return // down, or runs no gossip: next round
			}
			mu.Lock()
			seeds = append(seeds, ga)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(seeds) > 0 && ctx.Err() == nil {
		_, _ = r.gossip.Join(seeds) // none answering is retried next round
	}
}
