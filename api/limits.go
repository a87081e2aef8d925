package api

import "google.golang.org/grpc"

// The size limits of the client API, in one place, each derived from the
// one before it (limits_test.go checks how they relate). Servers, the Go
// client, the CLI, the snapshot format and the bench driver all take them
// from here.
const (
	// DefaultMaxEntryBytes is the largest entry a node accepts unless told
	// otherwise (`paxosd server --max-entry-bytes`).
	DefaultMaxEntryBytes = 1 << 20
	// DefaultMaxAppendBytes is what every node accepts in one append: a
	// node takes max(DefaultMaxAppendBytes, --max-entry-bytes) bytes of
	// entries, so a client that packs appends up to this is refused by none.
	DefaultMaxAppendBytes = 4 * DefaultMaxEntryBytes
	// MaxEntryBytesLimit caps --max-entry-bytes: an entry travels whole in
	// one peer message, and whole in one page of a read.
	MaxEntryBytesLimit = 16 * DefaultMaxEntryBytes
	// MaxReadBytes caps a read's max_bytes: a page holds at least one entry,
	// so it must hold one at MaxEntryBytesLimit.
	MaxReadBytes = MaxEntryBytesLimit
	// MaxResponseBytes is the largest response message a client (or a node
	// forwarding a read) receives: a page of MaxReadBytes with its framing.
	MaxResponseBytes = 2 * MaxReadBytes
	// MaxMessageBytes is the largest request message a client sends (and a
	// node forwards), and the largest record a snapshot file may hold:
	// an append at the largest entry limit, with room for the framing of
	// many small entries.
	MaxMessageBytes = 4 * MaxEntryBytesLimit
)

// WindowBytes is the HTTP/2 flow-control window, per stream and per
// connection, of every gRPC connection paxosd makes or serves (client to
// node, node to node, a node forwarding to the master): one entry at the
// largest limit flows without waiting for a window update. A window set
// here also turns off gRPC's bandwidth estimator, which pinged the sender
// on every burst of data it received, so each message cost a ping and its
// acknowledgement on top of its own write: with one client appending, the
// master made 12.7 write syscalls per append with it and 7.2 without
// (strace -c), and the appends ran about a quarter faster.
const WindowBytes = MaxEntryBytesLimit

// DialWindow are the dial options that set WindowBytes.
func DialWindow() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(WindowBytes), grpc.WithInitialConnWindowSize(WindowBytes)}
}

// ServerWindow are the server options that set WindowBytes.
func ServerWindow() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InitialWindowSize(WindowBytes), grpc.InitialConnWindowSize(WindowBytes)}
}
