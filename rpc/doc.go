// Package rpc is paxosd's gRPC layer: the peer transport that carries
// core.Message between the nodes of a cluster (Transport), the server of the
// client API (LogServer), and, in rpc/paxosdpb, the .proto files and the
// committed code generated from them. The typed errors the API returns are
// in package api, which the client shares without importing the server.
//
// The transport is where the node's event loop meets the network, so it must
// never block the node loop: Send only encodes and enqueues, and a full queue
// drops the message (Paxos tolerates loss; its timers retry) and counts it.
// It must never deliver a message from another cluster, or one addressed to
// another node: a batch whose cluster ID or destination is wrong is rejected
// whole, with an error naming both IDs, before anything in it is decoded.
// The error carries the kind of rejection (an ErrorInfo reason), and the
// sender's TransportConfig.Rejected hears of it: a follower its cluster
// refuses stops instead of retrying for ever.
// Every goroutine it starts has an owner and ends on Close.
//
// Its one invariant: every message handed to deliver decoded intact from
// core.AppendMessage bytes, came in a batch of this cluster addressed to this
// node, and has To == SelfID and the From of its batch; no deliver call
// starts after Close has returned.
package rpc
