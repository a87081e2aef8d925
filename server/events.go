package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Bounds of what one event keeps: a record with a huge message or many
// attributes costs the ring no more than this.
const (
	maxEventText  = 512 // bytes of the message and of each attribute value
	maxEventAttrs = 32  // attributes kept per record
)

// Event is one log record as the status page shows it.
type Event struct {
	Seq   uint64      `json:"seq"` // 1, 2, ... in the order the ring took them
	Time  time.Time   `json:"time"`
	Level string      `json:"level"`
	Msg   string      `json:"msg"`
	Attrs []EventAttr `json:"attrs,omitempty"`
}

// EventAttr is one attribute of an Event, its key qualified by its groups
// ("group.key") and its value as text.
type EventAttr struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// EventRing is a slog.Handler middleware: it passes every record on to
// the next handler and keeps the last n of those at or above its level
// (Info) for the status page, which also subscribes to new ones. Handlers
// derived with WithAttrs and WithGroup share its ring.
type EventRing struct {
	ring   *eventRing
	next   slog.Handler // nil: keep only
	attrs  []EventAttr  // from WithAttrs, keys qualified
	prefix string       // the open groups, "a.b."
}

// eventRing is what an EventRing and the handlers derived from it share.
type eventRing struct {
	level slog.Level
	mu    sync.Mutex
	buf   []Event // the last len(buf) events; next goes to buf[seq%cap]
	seq   uint64  // events taken so far
	subs  broadcast[Event]
}

// maxEventSubscribers bounds the subscribers of a ring (status page
// streams; each holds a buffer).
const maxEventSubscribers = 64

// NewEventRing returns a handler that passes records on to next (nil: to
// none) and keeps the last n (at least 1) at level Info or above.
func NewEventRing(next slog.Handler, n int) *EventRing {
	n = max(n, 1)
	return &EventRing{ring: &eventRing{level: slog.LevelInfo, buf: make([]Event, 0, n), subs: broadcast[Event]{max: maxEventSubscribers}}, next: next}
}

// Enabled reports whether the ring or the next handler wants a record of
// level l.
func (h *EventRing) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.ring.level || (h.next != nil && h.next.Enabled(ctx, l))
}

// Handle keeps rec if its level is the ring's or above, tells the
// subscribers without waiting for any, and passes rec on to the next
// handler if that wants it.
func (h *EventRing) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= h.ring.level {
		ev := Event{Time: rec.Time, Level: rec.Level.String(), Msg: clip(rec.Message, maxEventText)}
		ev.Attrs = append(ev.Attrs, h.attrs[:min(len(h.attrs), maxEventAttrs)]...)
		rec.Attrs(func(a slog.Attr) bool {
			ev.Attrs = appendAttr(ev.Attrs, h.prefix, a)
			return len(ev.Attrs) < maxEventAttrs
		})
		h.ring.add(ev)
	}
	if h.next != nil && h.next.Enabled(ctx, rec.Level) {
		return h.next.Handle(ctx, rec)
	}
	return nil
}

// WithAttrs returns a handler that adds as to every record, sharing the ring.
func (h *EventRing) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		h2.attrs = appendAttr(h2.attrs, h.prefix, a)
	}
	if h.next != nil {
		h2.next = h.next.WithAttrs(as)
	}
	return &h2
}

// WithGroup returns a handler that qualifies later attributes with name,
// sharing the ring.
func (h *EventRing) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	if h.next != nil {
		h2.next = h.next.WithGroup(name)
	}
	return &h2
}

// Events returns the events the ring holds, oldest first.
func (h *EventRing) Events() []Event {
	r := h.ring
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Event, 0, len(r.buf))
	if len(r.buf) < cap(r.buf) {
		return append(out, r.buf...)
	}
	i := int(r.seq % uint64(cap(r.buf)))
	return append(append(out, r.buf[i:]...), r.buf[:i]...)
}

// Subscribe returns a subscription to the events the ring takes from now
// on, with room for buf of them. A subscriber that lets its buffer fill is
// dropped (its channel closed, Dropped true) rather than waited for: a
// slow reader must never hold up the logging of the node.
func (h *EventRing) Subscribe(buf int) (*Subscription[Event], error) {
	return h.ring.subs.subscribe(buf)
}

func (r *eventRing) add(ev Event) {
	r.mu.Lock()
	r.seq++
	ev.Seq = r.seq
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, ev)
	} else {
		r.buf[(r.seq-1)%uint64(cap(r.buf))] = ev
	}
	r.mu.Unlock()
	r.subs.publish(ev)
}

// appendAttr flattens a (a group's attributes become group.key) onto out,
// values clipped, at most maxEventAttrs in all.
func appendAttr(out []EventAttr, prefix string, a slog.Attr) []EventAttr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			out = appendAttr(out, p, g)
		}
		return out
	}
	if a.Key == "" || len(out) >= maxEventAttrs {
		return out
	}
	return append(out, EventAttr{Key: clip(prefix+a.Key, maxEventText), Value: clip(v.String(), maxEventText)})
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut with
// "…", and makes it valid UTF-8.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// ErrTooManySubscribers refuses a subscriber beyond a broadcast's bound.
var ErrTooManySubscribers = errors.New("too many subscribers")

// broadcast hands values to subscribers without ever waiting for one: a
// subscriber whose buffer is full is dropped. Its zero value, with max
// set, is ready.
type broadcast[T any] struct {
	max  int // subscribers at once
	mu   sync.Mutex
	subs map[*Subscription[T]]struct{}
}

// Subscription receives a broadcast's values on C until Close, or until it
// fell behind: then C is closed and Dropped reports true.
type Subscription[T any] struct {
	C       <-chan T
	c       chan T
	b       *broadcast[T]
	dropped bool // under b.mu
}

func (b *broadcast[T]) subscribe(buf int) (*Subscription[T], error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) >= b.max {
		return nil, fmt.Errorf("%w (%d)", ErrTooManySubscribers, b.max)
	}
	if b.subs == nil {
		b.subs = map[*Subscription[T]]struct{}{}
	}
	c := make(chan T, max(buf, 1))
	s := &Subscription[T]{C: c, c: c, b: b}
	b.subs[s] = struct{}{}
	return s, nil
}

// publish offers v to every subscriber, dropping those with no room.
func (b *broadcast[T]) publish(v T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.c <- v:
		default:
			s.dropped = true
			close(s.c)
			delete(b.subs, s)
		}
	}
}

// count is the number of subscribers.
func (b *broadcast[T]) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Dropped reports whether the subscription was dropped for falling behind.
func (s *Subscription[T]) Dropped() bool {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	return s.dropped
}

// Close ends the subscription (C is closed, unless it was dropped already).
func (s *Subscription[T]) Close() {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if _, ok := s.b.subs[s]; ok {
		delete(s.b.subs, s)
		close(s.c)
	}
}
