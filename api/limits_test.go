package api

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// TestLimitsRelate: each limit holds what the one below it lets through,
// measured on the encoded messages rather than on the raw bytes.
func TestLimitsRelate(t *testing.T) {
	if DefaultMaxEntryBytes > DefaultMaxAppendBytes || DefaultMaxAppendBytes > MaxEntryBytesLimit {
		t.Fatalf("want DefaultMaxEntryBytes (%d) <= DefaultMaxAppendBytes (%d) <= MaxEntryBytesLimit (%d)",
			DefaultMaxEntryBytes, DefaultMaxAppendBytes, MaxEntryBytesLimit)
	}
	if WindowBytes < MaxEntryBytesLimit || WindowBytes > 1<<31-1 {
		t.Fatalf("WindowBytes %d: want at least MaxEntryBytesLimit (%d), so that an entry at the limit flows without a window update, and at most HTTP/2's 2^31-1", WindowBytes, MaxEntryBytesLimit)
	}
	if MaxReadBytes < MaxEntryBytesLimit {
		t.Fatalf("MaxReadBytes %d < MaxEntryBytesLimit %d: a page could not hold one entry at the limit", MaxReadBytes, MaxEntryBytesLimit)
	}
	// The largest append a node at the limit takes, as one entry and as
	// many one-byte entries (the most framing per byte of data).
	largest := max(DefaultMaxAppendBytes, MaxEntryBytesLimit)
	one := &paxosdpb.AppendRequest{Entries: [][]byte{make([]byte, largest)}, ClientId: ^uint64(0), Seq: ^uint64(0)}
	if n := proto.Size(one); n > MaxMessageBytes {
		t.Errorf("an append of one %d-byte entry encodes to %d bytes, over MaxMessageBytes %d", largest, n, MaxMessageBytes)
	}
	small := &paxosdpb.AppendRequest{Entries: [][]byte{{0}}}
	if n := proto.Size(small) * largest; n > MaxMessageBytes {
		t.Errorf("an append of %d one-byte entries encodes to %d bytes, over MaxMessageBytes %d", largest, n, MaxMessageBytes)
	}
	// A page of a read: entries up to MaxReadBytes, or one at the limit.
	page := &paxosdpb.ReadResponse{Entries: []*paxosdpb.Entry{{Index: ^uint64(0), Value: make([]byte, MaxReadBytes)}},
		NextIndex: ^uint64(0), FirstIndex: ^uint64(0), EndIndex: ^uint64(0), Local: true}
	if n := proto.Size(page); n > MaxResponseBytes {
		t.Errorf("a read page of one %d-byte entry encodes to %d bytes, over MaxResponseBytes %d", MaxReadBytes, n, MaxResponseBytes)
	}
}
