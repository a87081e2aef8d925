package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/paxosd/paxosd/client"
)

// Trimmer trims the log now and then, as an operator would, and keeps
// what it trims: before trimming below index T it reads [archived, T) from
// every node that answers, requires them to agree, and archives those
// values. The final log the checker sees is the archive followed by what
// the nodes still hold, so trims hide nothing from it.
type Trimmer struct {
	c    *Cluster
	w    *Workload
	cl   *client.Client
	rng  *rand.Rand
	logf func(format string, args ...any)

	mu       sync.Mutex // one trim at a time
	archive  []string
	problems []string
	sent, ok int
}

// keepEntries is how much of the log's end a trim leaves.
const keepEntries = 1000

// NewTrimmer returns a trimmer of c's log; w learns the new first index.
func NewTrimmer(c *Cluster, w *Workload, seed uint64, logf func(string, ...any)) (*Trimmer, error) {
	cl, err := c.NewClient(c.Addrs, client.Options{CallTimeout: 2 * time.Second, DialTimeout: time.Second, Retries: 1 << 20})
	if err != nil {
		return nil, err
	}
	return &Trimmer{c: c, w: w, cl: cl, rng: rand.New(rand.NewPCG(seed, 0x7419)), logf: logf}, nil
}

// Close closes the trimmer's client.
func (t *Trimmer) Close() { t.cl.Close() }

// Archive returns the archived log: the values of indexes [0, len).
func (t *Trimmer) Archive() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.archive...)
}

// Problems returns the disagreements between nodes it saw while archiving.
func (t *Trimmer) Problems() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.problems...)
}

// Counts returns the trims sent and acknowledged.
func (t *Trimmer) Counts() (sent, ok int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sent, t.ok
}

// Run trims every 8 to 15 seconds until ctx ends.
func (t *Trimmer) Run(ctx context.Context) {
	for {
		t.mu.Lock()
		d := 8*time.Second + time.Duration(t.rng.Int64N(int64(7*time.Second)))
		t.mu.Unlock()
		if !sleep(ctx, d) {
			return
		}
		t.TrimNow(nil)
	}
}

// TrimNow archives and trims, keeping the last keepEntries entries, if the
// log has grown enough. It closes started (if not nil) just before it
// sends the trim, or when it decides not to.
func (t *Trimmer) TrimNow(started chan struct{}) {
	signal := func() {
		if started != nil {
			close(started)
			started = nil
		}
	}
	defer signal()
	t.mu.Lock()
	defer t.mu.Unlock()
	from := uint64(len(t.archive))
	end := t.w.Hint()
	if end < from+keepEntries+500 {
		return
	}
	to := end - keepEntries
	var longest []string
	var got [][]string
	var who []int
	for i := range t.c.Addrs {
		if !t.c.Up(i) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		vals, err := t.c.ReadRange(ctx, i, from, to)
		cancel()
		if err != nil && len(vals) == 0 {
			continue
		}
		got, who = append(got, vals), append(who, i)
		if len(vals) > len(longest) {
			longest = vals
		}
	}
	for k, vals := range got {
		for j, v := range vals {
			if v != longest[j] {
				t.problems = append(t.problems, fmt.Sprintf("logs differ: at index %d node %d holds %q where another node holds %q (read while archiving before a trim)",
					from+uint64(j), who[k]+1, v, longest[j]))
				break
			}
		}
	}
	if len(longest) == 0 {
		return
	}
	t.archive = append(t.archive, longest...)
	before := uint64(len(t.archive))
	t.sent++
	signal()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	first, err := t.cl.Trim(ctx, before)
	cancel()
	if err != nil {
		t.logf("trim below %d: %v (outcome unknown)", before, err)
		return
	}
	t.ok++
	t.w.SetFloor(first)
}
