package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The ring keeps the last n records at Info and above, oldest first, and
// passes every record the next handler wants on to it.
func TestEventRingKeepsTheLastN(t *testing.T) {
	var out bytes.Buffer
	ring := NewEventRing(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}), 3)
	log := slog.New(ring)
	for i := range 5 {
		log.Info("record", "i", i)
	}
	log.Debug("debug record")
	evs := ring.Events()
	if len(evs) != 3 {
		t.Fatalf("ring holds %d events, want 3: %+v", len(evs), evs)
	}
	for k, ev := range evs {
		want := fmt.Sprint(k + 2)
		if ev.Msg != "record" || ev.Seq != uint64(k+3) || len(ev.Attrs) != 1 || ev.Attrs[0] != (EventAttr{"i", want}) || ev.Level != "INFO" {
			t.Errorf("event %d: %+v, want record i=%s seq %d", k, ev, want, k+3)
		}
	}
	if got := strings.Count(out.String(), "msg=record"); got != 5 {
		t.Errorf("the next handler got %d of 5 records:\n%s", got, out.String())
	}
	if !strings.Contains(out.String(), "debug record") {
		t.Errorf("the next handler did not get the debug record it wants:\n%s", out.String())
	}

	// Without a next handler that wants them, debug records are not
	// enabled at all; with none, the ring keeps records alone.
	quiet := NewEventRing(slog.NewTextHandler(&out, nil), 3)
	if quiet.Enabled(context.Background(), slog.LevelDebug) || !quiet.Enabled(context.Background(), slog.LevelInfo) {
		t.Error("Enabled: want Info and above only")
	}
	alone := NewEventRing(nil, 2)
	slog.New(alone).Warn("alone")
	if evs := alone.Events(); len(evs) != 1 || evs[0].Msg != "alone" || evs[0].Level != "WARN" {
		t.Errorf("a ring without next handler: %+v", evs)
	}
}

// Handlers derived with With and WithGroup share the ring and qualify
// their attributes; long text is clipped on a rune boundary.
func TestEventRingAttrsAndGroups(t *testing.T) {
	var out bytes.Buffer
	ring := NewEventRing(slog.NewTextHandler(&out, nil), 10)
	log := slog.New(ring)
	log.With("node", 1).WithGroup("peer").Info("link up", "id", 2, slog.Group("addr", "host", "h"))
	log.Info(strings.Repeat("é", maxEventText)) // two bytes each
	evs := ring.Events()
	if len(evs) != 2 {
		t.Fatalf("ring holds %d events, want 2", len(evs))
	}
	want := []EventAttr{{"node", "1"}, {"peer.id", "2"}, {"peer.addr.host", "h"}}
	if fmt.Sprint(evs[0].Attrs) != fmt.Sprint(want) {
		t.Errorf("attrs %v, want %v", evs[0].Attrs, want)
	}
	if !strings.Contains(out.String(), "peer.id=2") {
		t.Errorf("the next handler did not get the group: %s", out.String())
	}
	if m := evs[1].Msg; len(m) > maxEventText || !utf8.ValidString(m) || !strings.HasSuffix(m, "…") {
		t.Errorf("long message kept as %d bytes (valid UTF-8 %v), want at most %d, clipped with …", len(m), utf8.ValidString(m), maxEventText)
	}
	var many []any
	for i := range 2 * maxEventAttrs {
		many = append(many, fmt.Sprint("k", i), i)
	}
	log.Info("many", many...)
	if evs := ring.Events(); len(evs[2].Attrs) != maxEventAttrs {
		t.Errorf("kept %d attributes, want %d", len(evs[2].Attrs), maxEventAttrs)
	}
}

// A subscriber that does not read is dropped once its buffer is full; the
// logging goes on without waiting, and a subscriber that reads gets every
// record.
func TestEventRingDropsASlowSubscriber(t *testing.T) {
	ring := NewEventRing(nil, 100)
	slow, err := ring.Subscribe(2)
	if err != nil {
		t.Fatal(err)
	}
	fast, err := ring.Subscribe(100)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10 {
			slog.New(ring).Info(fmt.Sprint("record ", i))
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("logging blocked on a subscriber that does not read")
	}
	if !slow.Dropped() {
		t.Error("the slow subscriber was not dropped")
	}
	var got []string
	for ev := range slow.C { // closed once dropped
		got = append(got, ev.Msg)
	}
	if len(got) != 2 || got[0] != "record 0" {
		t.Errorf("the slow subscriber got %q before the drop, want its first 2", got)
	}
	for i := range 10 {
		if ev := <-fast.C; ev.Msg != fmt.Sprint("record ", i) {
			t.Fatalf("the reading subscriber got %q, want record %d", ev.Msg, i)
		}
	}
	if fast.Dropped() {
		t.Error("the reading subscriber was dropped")
	}
	slow.Close() // after a drop: no double close
	fast.Close()
	fast.Close()
	if _, ok := <-fast.C; ok {
		t.Error("C still open after Close")
	}

	// The number of subscribers is bounded.
	var subs []*Subscription[Event]
	for range maxEventSubscribers {
		s, err := ring.Subscribe(1)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	if _, err := ring.Subscribe(1); err == nil {
		t.Errorf("subscriber %d accepted, want ErrTooManySubscribers", maxEventSubscribers+1)
	}
	for _, s := range subs {
		s.Close()
	}
}
