// The peer transport's configuration: its defaults and limits, and the gRPC
// dial and server options they make.
package rpc

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/paxosd/paxosd/api"
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
	return append(api.DialWindow(),
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
	)
}

// ServerOptions are the options the grpc.Server that serves this transport
// (see Register) must be built with: the receive limit, keepalive on the
// server side and the policy that lets peers' keepalive pings through, and
// the credentials. They apply to every service of that server.
func (t *Transport) ServerOptions() []grpc.ServerOption {
	return append(api.ServerWindow(),
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
	)
}
