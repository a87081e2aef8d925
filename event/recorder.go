package event

import (
	"context"
	"log/slog"
	"slices"
	"sync"
)

// Recorder is a slog.Handler that keeps every record it handles, with the
// attributes of the logger it came through, for tests that check which
// events fired. Safe for concurrent use.
type Recorder struct {
	mu      *sync.Mutex
	records *[]Record
	attrs   []slog.Attr
}

// Record is one logged event: its level, message and attributes.
type Record struct {
	Level   slog.Level
	Message string
	Attrs   map[string]slog.Value
}

// NewRecorder returns an empty Recorder; slog.New(r) logs into it.
func NewRecorder() *Recorder {
	return &Recorder{mu: &sync.Mutex{}, records: &[]Record{}}
}

// Enabled records every level.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps rec.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	out := Record{Level: rec.Level, Message: rec.Message, Attrs: map[string]slog.Value{}}
	for _, a := range r.attrs {
		out.Attrs[a.Key] = a.Value.Resolve()
	}
	rec.Attrs(func(a slog.Attr) bool {
		out.Attrs[a.Key] = a.Value.Resolve()
		return true
	})
	r.mu.Lock()
	*r.records = append(*r.records, out)
	r.mu.Unlock()
	return nil
}

// WithAttrs returns a handler that adds attrs to every record.
func (r *Recorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Recorder{mu: r.mu, records: r.records, attrs: append(slices.Clip(r.attrs), attrs...)}
}

// WithGroup is not supported: paxosd's events use no groups.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

// Find returns the records with message msg, in order.
func (r *Recorder) Find(msg string) []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Record
	for _, rec := range *r.records {
		if rec.Message == msg {
			out = append(out, rec)
		}
	}
	return out
}

// All returns every record so far.
func (r *Recorder) All() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(*r.records)
}
