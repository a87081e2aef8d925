package bench

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// maxLatency is the largest latency the histograms hold; longer ones are
// recorded as this.
const maxLatency = 10 * time.Minute

// maxErrorKinds is how many distinct error messages a run keeps to show.
const maxErrorKinds = 5

// recorder collects what the clients saw: the whole measured part, and the
// interval since the last progress line.
type recorder struct {
	mu                      sync.Mutex
	total, interval         *hdrhistogram.Histogram
	ops, entries, errors    int64 // measured
	timeouts                int64 // measured
	iOps, iEntries, iErrors int64 // this interval, warmup included
	lastDone                time.Time
	errorKinds              map[string]int64 // every error, warmup included
}

func newRecorder() *recorder {
	return &recorder{
		total:      newHistogram(),
		interval:   newHistogram(),
		errorKinds: map[string]int64{},
	}
}

func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, maxLatency.Microseconds(), 3)
}

// record adds one request that began (was due, in the open loop) at began
// and finished at done with values values.
func (r *recorder) record(measured bool, began, done time.Time, values int, err error) {
	us := min(max(done.Sub(began).Microseconds(), 1), maxLatency.Microseconds())
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.iErrors++
		if measured {
			r.errors++
			if isTimeout(err) {
				r.timeouts++
			}
		}
		msg := err.Error()
		if _, ok := r.errorKinds[msg]; !ok && len(r.errorKinds) >= maxErrorKinds {
			msg = otherErrors
		}
		r.errorKinds[msg]++
		return
	}
	r.interval.RecordValue(us)
	r.iOps++
	r.iEntries += int64(values)
	if !measured {
		return
	}
	r.total.RecordValue(us)
	r.ops++
	r.entries += int64(values)
	r.lastDone = done
}

// progress writes a line every cfg.Interval until stop is closed.
func (r *recorder) progress(start time.Time, cfg Config, stop <-chan struct{}) {
	if cfg.Interval <= 0 || cfg.Progress == nil {
		<-stop
		return
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	last := start
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			r.mu.Lock()
			secs := now.Sub(last).Seconds()
			h := r.interval
			phase := ""
			if now.Sub(start) <= cfg.Warmup {
				phase = " (warmup)"
			}
			line := fmt.Sprintf("%6.1fs%s  %.0f ops/s  %.0f entries/s  %.2f MB/s  errors %d  ms p50 %.2f p95 %.2f p99 %.2f p99.9 %.2f max %.2f",
				now.Sub(start).Seconds(), phase, float64(r.iOps)/secs, float64(r.iEntries)/secs,
				float64(r.iEntries)*float64(cfg.Size)/secs/1e6, r.iErrors,
				ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(95)), ms(h.ValueAtQuantile(99)),
				ms(h.ValueAtQuantile(99.9)), ms(h.Max()))
			r.interval.Reset()
			r.iOps, r.iEntries, r.iErrors = 0, 0, 0
			r.mu.Unlock()
			last = now
			fmt.Fprintln(cfg.Progress, line)
		}
	}
}

// otherErrors stands for the messages past the first maxErrorKinds.
const otherErrors = "(other errors)"

// ErrorKind is one distinct error message and how often it was seen.
type ErrorKind struct {
	Message string `json:"message"`
	Count   int64  `json:"count"`
}

// errorKindList returns the errors seen, most frequent first; the caller
// holds r.mu.
func (r *recorder) errorKindList() []ErrorKind {
	var out []ErrorKind
	for m, n := range r.errorKinds {
		out = append(out, ErrorKind{m, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Message < out[j].Message
	})
	return out
}
