package node

import (
	"log/slog"
	"testing"
	"time"

	"github.com/paxosd/paxosd/core"
	"github.com/paxosd/paxosd/event"
)

// An acceptor below MinFreeBytes declines Accepts that carry user entries,
// each instance for at most DeclineFor, and never those of lease renewals,
// trims or no-ops; with space back it votes for everything again.
func TestDeclineAccept(t *testing.T) {
	free := uint64(100)
	rec := event.NewRecorder()
	n := &Node{cfg: Config{ID: 2, DataDir: "/data", MinFreeBytes: 1000, DiskFree: func() (uint64, error) { return free, nil }},
		log: slog.New(rec), declined: map[uint64]time.Time{}}
	user := core.Message{Type: core.MsgAccept, Instance: 7, Value: core.Value{Commands: []core.Command{
		{Kind: core.CmdLease}, {Kind: core.CmdUser, Entries: [][]byte{[]byte("x")}}}}}
	control := core.Message{Type: core.MsgAccept, Instance: 8, Value: core.Value{Commands: []core.Command{
		{Kind: core.CmdLease}, {Kind: core.CmdTrim, Before: 3}, {Kind: core.CmdNoop}}}}
	commit := core.Message{Type: core.MsgCommit, Instance: 7}
	t0 := time.Unix(1000, 0)
	turn := func() { n.turn++ } // the loop's next turn: free space is asked again

	turn()
	if !n.declineAccept(user, t0) {
		t.Fatal("an Accept of user entries was voted for below the threshold")
	}
	if got := rec.All(); len(got) != 1 || got[0].Message != event.AcceptsDeclined || got[0].Attrs[event.KeyInstance].Uint64() != 7 {
		t.Errorf("logged %+v, want one %q for instance 7", got, event.AcceptsDeclined)
	}
	if n.declineAccept(control, t0) || n.declineAccept(commit, t0) {
		t.Fatal("a lease renewal, trim or commit was declined")
	}
	turn()
	if !n.declineAccept(user, t0.Add(DeclineFor-time.Millisecond)) {
		t.Fatal("the resent Accept was voted for within DeclineFor")
	}
	turn()
	if n.declineAccept(user, t0.Add(DeclineFor)) {
		t.Fatal("instance 7 still declined after DeclineFor: a quorum of full acceptors would stop the log there")
	}
	other := user
	other.Instance = 9
	if !n.declineAccept(other, t0.Add(DeclineFor)) {
		t.Fatal("a new instance was not declined")
	}
	free = 1000
	turn()
	if n.declineAccept(other, t0.Add(DeclineFor)) {
		t.Fatal("declined with space back")
	}
	n.cfg.MinFreeBytes = 0
	free = 0
	turn()
	if n.declineAccept(user, t0) {
		t.Fatal("declined with the check off (--min-free-bytes 0)")
	}
}

// The free space is asked once per turn of the loop, not once per message.
func TestSpaceCheckedOncePerTurn(t *testing.T) {
	calls := 0
	n := &Node{cfg: Config{MinFreeBytes: 10, DiskFree: func() (uint64, error) { calls++; return 5, nil }}}
	n.turn = 1
	for range 100 {
		if _, low := n.spaceLow(); !low {
			t.Fatal("5 bytes free not below 10")
		}
	}
	n.turn = 2
	n.spaceLow()
	if calls != 2 {
		t.Fatalf("%d statfs calls for two turns", calls)
	}
}
