package event

import (
	"slices"
	"testing"
	"time"
)

// One event per key per interval goes through at once; the latest held
// back goes through at Flush once the interval has passed, with the count
// of the others; keys do not hold each other back.
func TestLimiter(t *testing.T) {
	l := NewLimiter[string](time.Second)
	t0 := time.Unix(100, 0)
	var got []string
	emit := func(tag string) func(int) {
		return func(n int) { got = append(got, tag+":"+string(rune('0'+n))) }
	}
	l.Note("a", t0, emit("a1"))
	l.Note("a", t0.Add(100*time.Millisecond), emit("a2"))
	l.Note("a", t0.Add(200*time.Millisecond), emit("a3"))
	l.Note("b", t0.Add(300*time.Millisecond), emit("b1"))
	l.Flush(t0.Add(999 * time.Millisecond))
	if want := []string{"a1:0", "b1:0"}; !slices.Equal(got, want) {
		t.Fatalf("within the interval: %q, want %q", got, want)
	}
	l.Flush(t0.Add(time.Second))
	if want := []string{"a1:0", "b1:0", "a3:1"}; !slices.Equal(got, want) {
		t.Fatalf("after the interval: %q, want %q", got, want)
	}
	// Held back and then overtaken by an event past the interval: that one
	// goes through at once and counts the one it replaced.
	l.Note("a", t0.Add(1500*time.Millisecond), emit("a4"))
	l.Note("a", t0.Add(2500*time.Millisecond), emit("a5"))
	if want := []string{"a1:0", "b1:0", "a3:1", "a5:1"}; !slices.Equal(got, want) {
		t.Fatalf("an event past the interval: %q, want %q", got, want)
	}
}

// Pass lets an event through at once, counts what was held back, and drops
// it (the event passed is newer); the interval starts again.
func TestLimiterPass(t *testing.T) {
	l := NewLimiter[int](time.Second)
	t0 := time.Unix(100, 0)
	var got []int
	l.Note(1, t0, func(n int) { got = append(got, n) })
	l.Note(1, t0.Add(time.Millisecond), func(int) { t.Error("the event Pass overtook was emitted") })
	l.Pass(1, t0.Add(2*time.Millisecond), func(n int) { got = append(got, 100+n) })
	l.Flush(t0.Add(time.Hour))
	l.Note(1, t0.Add(2*time.Millisecond+999*time.Millisecond), func(int) { t.Error("within the interval Pass started: emitted at once") })
	if !slices.Equal(got, []int{0, 101}) {
		t.Errorf("emitted %v, want [0 101]", got)
	}
}
