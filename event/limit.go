package event

import (
	"sync"
	"time"
)

// Limiter lets at most one event per key through per interval and holds
// back the others, so that a link that flaps or a disk that stays slow
// makes one line per interval instead of a flood. The last event held back
// is not lost: Flush lets it through once its key's interval has passed,
// with the count of those held back before it, so the log always ends on
// the latest state. Time is passed in (tests step it). Safe for
// concurrent use.
type Limiter[K comparable] struct {
	every time.Duration
	mu    sync.Mutex
	keys  map[K]*limited
}

type limited struct {
	last    time.Time      // when an event of this key was last let through
	held    int            // events held back since then
	pending func(held int) // the latest of them, nil when none
}

// NewLimiter returns a Limiter that lets one event per key through every
// interval.
func NewLimiter[K comparable](every time.Duration) *Limiter[K] {
	return &Limiter[K]{every: every, keys: map[K]*limited{}}
}

// Note offers an event of key at now. If key's interval has passed, emit
// runs at once with the number of events of key held back and not emitted
// since the last one that was; else emit is kept (in place of any event
// held back before it) for Flush.
func (l *Limiter[K]) Note(key K, now time.Time, emit func(suppressed int)) {
	l.mu.Lock()
	k := l.keys[key]
	if k == nil {
		k = &limited{}
		l.keys[key] = k
	}
	if !k.last.IsZero() && now.Sub(k.last) < l.every {
		k.held++
		k.pending = emit
		l.mu.Unlock()
		return
	}
	held := k.held
	k.last, k.held, k.pending = now, 0, nil
	l.mu.Unlock()
	emit(held)
}

// Pass emits an event of key at now at once, whatever the interval, with
// the number of events of key held back and not emitted (they are
// dropped: this one is newer); key's interval starts again at now.
func (l *Limiter[K]) Pass(key K, now time.Time, emit func(suppressed int)) {
	l.mu.Lock()
	held := 0
	if k := l.keys[key]; k != nil {
		held = k.held
	}
	l.keys[key] = &limited{last: now}
	l.mu.Unlock()
	emit(held)
}

// Flush emits, for every key whose interval has passed at now, the latest
// event held back, with the number held back before it.
func (l *Limiter[K]) Flush(now time.Time) {
	type due struct {
		emit func(int)
		n    int
	}
	var out []due
	l.mu.Lock()
	for _, k := range l.keys {
		if k.pending != nil && now.Sub(k.last) >= l.every {
			out = append(out, due{k.pending, k.held - 1})
			k.last, k.held, k.pending = now, 0, nil
		}
	}
	l.mu.Unlock()
	for _, d := range out {
		d.emit(d.n)
	}
}
