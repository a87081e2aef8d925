package server

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/paxosd/paxosd/event"
)

// A flapping link makes at most one line per peer per LinkLogEvery: the
// first up, and the first change after a quiet interval, at once; the latest of those held back once the interval
// has passed, with how many were not logged. Other peers are not held
// back by it.
func TestLinkFlapRateLimited(t *testing.T) {
	rec := event.NewRecorder()
	now := time.Unix(1000, 0)
	l := newLinkLog(slog.New(rec), func() time.Time { return now })
	down := errors.New("connection refused")

	l.note(2, "a:2", true, nil) // the first up: at once
	now = now.Add(time.Second)
	l.note(2, "a:2", false, down)
	for i := range 99 { // flaps: up, down, ..., ending up
		now = now.Add(10 * time.Millisecond)
		l.note(2, "a:2", i%2 == 0, down)
	}
	l.note(3, "a:3", true, nil)
	l.limit.Flush(now)
	if got := len(rec.All()); got != 2 {
		t.Fatalf("%d lines within %v of flapping, want 2 (peer 2's first up, peer 3's): %+v", got, LinkLogEvery, rec.All())
	}

	now = now.Add(LinkLogEvery)
	l.limit.Flush(now)
	var up2 []event.Record
	for _, r := range rec.Find(event.PeerLinkUp) {
		if r.Attrs[event.KeyPeer].Uint64() == 2 {
			up2 = append(up2, r)
		}
	}
	if len(up2) != 2 || up2[1].Attrs[event.KeySuppress].Int64() != 99 {
		t.Fatalf("after the interval: %+v, want the first up and one %q for peer 2 with 99 changes suppressed", up2, event.PeerLinkUp)
	}
	if d := rec.Find(event.PeerLinkDown); len(d) != 0 {
		t.Errorf("a down held back and overtaken by an up was logged: %+v", d)
	}
	l.limit.Flush(now.Add(time.Hour))
	if got := len(rec.All()); got != 3 {
		t.Errorf("%d lines after a quiet hour, want 3", got)
	}
	// Quiet for an interval: the next change is logged at once.
	now = now.Add(time.Hour)
	l.note(2, "a:2", false, down)
	if d := rec.Find(event.PeerLinkDown); len(d) != 1 || d[0].Attrs[event.KeySuppress].Int64() != 0 || d[0].Attrs[event.KeyErr].String() != down.Error() ||
		d[0].Level != slog.LevelWarn {
		t.Errorf("a change after a quiet interval: %+v", d)
	}
}
