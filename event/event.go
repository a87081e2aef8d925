// Package event names what a paxosd node logs: every message string and
// attribute key of its structured log (log/slog), in one place, so that
// docs/operations.md ("Logs and events") can list them all and a test can
// check that it does. It also holds Limiter, which keeps an event that can
// repeat fast (a flapping link, a slow disk) to one line per interval.
//
// It imports nothing of paxosd's, and the protocol core never imports it:
// the core reports (Ready, Status, counters) and the runtime (node, rpc,
// server, cmd/paxosd) logs. The one rule it keeps: a message string, once
// released, does not change (operators match on it); what varies goes in
// attributes.
package event

// Messages. Levels and attributes: docs/operations.md, "Logs and events".
const (
	// Start-up and shutdown (cmd/paxosd, server).
	Starting        = "starting"
	Serving         = "serving"
	ShuttingDown    = "shutting down"
	HandoverOnStop  = "handover on shutdown"
	NodeStopped     = "node stopped"
	Joining         = "joining cluster"
	Joined          = "joined cluster"
	MetricsServing  = "metrics serving"
	MetricsStopped  = "metrics server stopped"
	MetricsError    = "metrics error"
	PprofServing    = "pprof serving"
	PprofStopped    = "pprof server stopped"
	TLSReloaded     = "tls reloaded"
	TLSReloadFailed = "tls reload failed"

	// Mastership (node).
	PhaseOneStarted = "phase 1 started"
	PhaseOneEnded   = "phase 1 ended"
	MasterElected   = "master elected"
	MasterLost      = "master lost"
	MasterHandover  = "master handed over"
	MasterChanged   = "master changed"
	LeaseExpired    = "lease expired"

	// Log and storage (node, server).
	CatchupStarted     = "catch-up started"
	CatchupFinished    = "catch-up finished"
	TrimApplied        = "trim applied"
	BaseInstalled      = "base installed"
	SlowFsync          = "slow fsync"
	StorageFailure     = "storage failure"
	StorageNotice      = "storage notice"
	Removed            = "removed from the cluster"
	MessageDropped     = "message dropped"
	RetainFailed       = "retention measurement failed"
	DiskCheckFailed    = "free space check failed"
	AcceptsDeclined    = "declining accepts: low disk space"
	IncarnationKept    = "peer refused incarnation: carrying on"
	GossipCloseFailed  = "gossip close failed"
	GossipLine         = "memberlist"
	GossipLeaveFailed  = "gossip leave failed"
	GossipMetaLarge    = "gossip metadata too large"
	GossipBadState     = "gossip state ignored"
	PeerLinkUp         = "peer link up"
	PeerLinkDown       = "peer link down"
	PeerLinkAdded      = "peer link added"
	PeerLinkRemoved    = "peer link removed"
	PeerLinkError      = "peer link error"
	PeerQueueFull      = "peer queue full"
	MessageTooLarge    = "message over size limit"
	BatchRejected      = "batch rejected"
	RejectedByPeer     = "rejected by peer"
	FollowerConnected  = "follower connected"
	IncarnationRefused = "incarnation refused by peer"
	// PeerIncarnationRecorded: the first batch from a peer's data
	// directory, whose incarnation is now synced to disk.
	PeerIncarnationRecorded = "peer incarnation recorded"
)

// Attribute keys.
const (
	KeyNode      = "node"     // every line: this node's ID
	KeyInstance  = "instance" // protocol events: the applied frontier (instances below it are applied)
	KeyBallot    = "ballot"   // protocol events: this node's proposer ballot
	KeyReason    = "reason"
	KeyErr       = "err"
	KeyPeer      = "peer"
	KeyAddr      = "addr"
	KeyMaster    = "master"
	KeyPrevious  = "previous"
	KeyTo        = "to"
	KeyTook      = "took"
	KeySuppress  = "suppressed"
	KeyThreshold = "threshold"
)
