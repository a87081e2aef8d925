package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/checker"
	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// Recorder keeps the history: every client operation with its invoke and
// complete times (nanoseconds on the monotonic clock since the run began)
// and the outcome the client saw.
type Recorder struct {
	base time.Time
	mu   sync.Mutex
	hist checker.History
	// kinds[i] says what hist[i] was, for the summary; nodes[i] which node
	// (0-based) it was sent to, -1 for a client over every endpoint.
	kinds []string
	nodes []int
}

// NewRecorder starts the history's clock.
func NewRecorder() *Recorder { return &Recorder{base: time.Now()} }

// Now is the history's clock.
func (r *Recorder) Now() int64 { return int64(time.Since(r.base)) }

func (r *Recorder) add(kind string, node int, op checker.Op) {
	r.mu.Lock()
	r.hist = append(r.hist, op)
	r.kinds = append(r.kinds, kind)
	r.nodes = append(r.nodes, node)
	r.mu.Unlock()
}

// History returns a copy of the history so far, with each op's kind and
// node.
func (r *Recorder) History() (checker.History, []string, []int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(checker.History(nil), r.hist...), append([]string(nil), r.kinds...), append([]int(nil), r.nodes...)
}

// gate makes the history quiescent now and then: Quiesce waits until no
// operation is in flight while holding new ones back. Porcupine can only
// cut a history into windows at such points.
type gate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	active  int
	closing bool
}

func newGate() *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) enter() {
	g.mu.Lock()
	for g.closing {
		g.cond.Wait()
	}
	g.active++
	g.mu.Unlock()
}

func (g *gate) exit() {
	g.mu.Lock()
	g.active--
	if g.active == 0 {
		g.cond.Broadcast()
	}
	g.mu.Unlock()
}

func (g *gate) quiesce() {
	g.mu.Lock()
	g.closing = true
	for g.active > 0 {
		g.cond.Wait()
	}
	g.closing = false
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Role is what a client of the workload does.
type Role int

const (
	// ExactlyOnce appends through the Go client over every endpoint: a
	// (client_id, seq) on every append, retried on any node until it
	// lands or the op's deadline passes (then its outcome is unknown).
	// Now and then it reads linearizably through the same client, or
	// sends one of its last acknowledged appends again, as a client that
	// lost the answer would (resendEO).
	ExactlyOnce Role = iota
	// Plain sends each append once, without client_id, to a random node,
	// and reads (linearizable and local) from random nodes.
	Plain
	// Reader only reads, linearizable and local, from random nodes.
	Reader
	// Large appends like ExactlyOnce, values of 256 KiB to 1 MiB, one
	// every 0.5-1.5 s: few of the operations, most of the bytes, so that
	// phase 1, catch-up and base installs carry large values.
	Large
)

// Large values: a name ("L<client>-<n>-<size>B"), a '|', and largePad up
// to the size. The history and the checker see only the name (entryName).
const (
	largeMin = 256 << 10
	largeMax = api.DefaultMaxEntryBytes // the servers' default --max-entry-bytes
)

// largePad fills large values: random, so that snappy in goleveldb cannot
// shrink what the nodes store and send.
var largePad = func() []byte {
	rnd := rand.New(rand.NewPCG(7, 11))
	b := make([]byte, largeMax)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}()

// entryName is what the history records for a log entry: a large value's
// name if the rest of it is intact, any other entry as it is.
func entryName(v []byte) string {
	if len(v) < 4096 {
		return string(v)
	}
	name, _, ok := bytes.Cut(v[:min(len(v), 256)], []byte("|"))
	n := len(name) + 1
	if !ok || !strings.HasSuffix(string(name), fmt.Sprintf("-%dB", len(v))) || !bytes.Equal(v[n:], largePad[:len(v)-n]) {
		return fmt.Sprintf("a damaged large value (%d bytes, starting %q)", len(v), v[:32])
	}
	return string(name)
}

// Timeouts of the workload's operations. A timeout makes the outcome
// unknown, never a failure.
const (
	appendTimeout = 10 * time.Second // an exactly-once append, retries included
	callTimeout   = 3 * time.Second  // one attempt on one node
)

// Workload runs the clients and the tail, recording everything.
type Workload struct {
	c     *Cluster
	rec   *Recorder
	gate  *gate
	roles []Role
	seed  uint64

	// floor is the lowest index still readable everywhere as far as the
	// workload knows (trims move it); hint is the highest end of the log
	// any operation saw.
	floor, hint atomic.Uint64

	conns   []*grpc.ClientConn // one per node, for single-node calls
	clients []*client.Client
	next    atomic.Int64 // values appended so far, for unique values

	cancel context.CancelFunc
	wg     sync.WaitGroup
	tailWG sync.WaitGroup

	mu       sync.Mutex
	problems []string
	resends  map[string]int // re-sent appends by outcome: ok, fail, unknown
}

// NewWorkload prepares clients with the given roles.
func NewWorkload(c *Cluster, rec *Recorder, roles []Role, seed uint64) (*Workload, error) {
	w := &Workload{c: c, rec: rec, gate: newGate(), roles: roles, seed: seed, resends: map[string]int{}}
	for _, a := range c.Addrs {
		cc, err := grpc.NewClient(a, append(c.dialOptions(),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(api.MaxResponseBytes)))...) // reads of large values
		if err != nil {
			return nil, err
		}
		w.conns = append(w.conns, cc)
	}
	return w, nil
}

// Close closes the workload's connections.
func (w *Workload) Close() {
	for _, cc := range w.conns {
		cc.Close()
	}
	for _, cl := range w.clients {
		cl.Close()
	}
}

// SetFloor raises the floor (after a trim).
func (w *Workload) SetFloor(f uint64) {
	for {
		cur := w.floor.Load()
		if f <= cur || w.floor.CompareAndSwap(cur, f) {
			return
		}
	}
}

func (w *Workload) seen(end uint64) {
	for {
		cur := w.hint.Load()
		if end <= cur || w.hint.CompareAndSwap(cur, end) {
			return
		}
	}
}

// Hint returns the highest end of the log an operation saw.
func (w *Workload) Hint() uint64 { return w.hint.Load() }

// Start starts the clients, the tail and the quiescer; Stop ends them.
func (w *Workload) Start(round int) {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for k, role := range w.roles {
		rng := rand.New(rand.NewPCG(w.seed+uint64(round)<<32, uint64(k)+1))
		var eo *client.Client
		if role == ExactlyOnce || role == Large {
			eps := append([]string(nil), w.c.Addrs...)
			rng.Shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
			call := 2 * time.Second
			if role == Large {
				call = 5 * time.Second // a retry sends the whole value again
			}
			cl, err := w.c.NewClient(eps, client.Options{CallTimeout: call, DialTimeout: time.Second, Retries: 1 << 20})
			if err != nil {
				panic(err) // client.New fails only without endpoints
			}
			eo = cl
			w.clients = append(w.clients, cl)
		}
		w.wg.Add(1)
		go w.runClient(ctx, k, role, rng, eo)
	}
	w.tailWG.Add(1)
	go w.runTail(ctx, len(w.roles), round)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.gate.quiesce()
			}
		}
	}()
}

// Stop stops issuing operations and waits for those in flight to end.
func (w *Workload) Stop() {
	w.cancel()
	w.wg.Wait()
	w.tailWG.Wait()
}

func (w *Workload) value(k int) string {
	return fmt.Sprintf("c%d-%d", k, w.next.Add(1))
}

func (w *Workload) runClient(ctx context.Context, k int, role Role, rng *rand.Rand, eo *client.Client) {
	defer w.wg.Done()
	var mine eoAppends
	for ctx.Err() == nil {
		w.gate.enter()
		switch role {
		case ExactlyOnce:
			switch x := rng.IntN(6); {
			case x == 0:
				w.readVia(k, rng, eo)
			case x == 1 && len(mine.acked) > 0:
				w.resendEO(k, rng, eo, &mine)
			default:
				w.appendEO(k, eo, &mine)
			}
		case Plain:
			switch x := rng.IntN(10); {
			case x < 6:
				w.appendPlain(k, rng.IntN(len(w.conns)))
			case x < 8:
				w.readOne(k, rng, rng.IntN(len(w.conns)), true)
			default:
				w.readOne(k, rng, rng.IntN(len(w.conns)), false)
			}
		case Reader:
			w.readOne(k, rng, rng.IntN(len(w.conns)), rng.IntN(2) == 0)
		case Large:
			w.appendLarge(k, rng, eo)
		}
		w.gate.exit()
		d := time.Duration(rng.IntN(10)) * time.Millisecond
		if role == Large {
			d = 500*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second)))
		}
		if d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}
}

// eoAppends is what an exactly-once client remembers of its appends: the
// last sequence number it used and its last few acknowledged appends.
type eoAppends struct {
	seq   uint64
	acked []ackedAppend
}

type ackedAppend struct {
	seq   uint64
	value string
	index uint64
}

// resendFrom is how many of its last acknowledged appends a client picks a
// re-send from; well inside core.DedupWindow, so every one must be
// answered from the dedup table.
const resendFrom = 8

// appendEO appends one value exactly-once through the Go client.
func (w *Workload) appendEO(k int, cl *client.Client, mine *eoAppends) {
	v := w.value(k)
	mine.seq++
	op := checker.Op{Client: k, Kind: checker.Append, Value: v, Invoke: w.rec.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	res, err := cl.AppendSeq(ctx, cl.ID(), mine.seq, []byte(v))
	cancel()
	op.Complete = w.rec.Now()
	if err == nil {
		op.Status, op.Index = checker.OK, res.First
		w.seen(res.First + 1)
		if len(mine.acked) == resendFrom {
			mine.acked = mine.acked[1:]
		}
		mine.acked = append(mine.acked, ackedAppend{seq: mine.seq, value: v, index: res.First})
	} else {
		// The client retried with the same (client_id, seq) on any node: an
		// earlier attempt may still land. Never a definite failure.
		op.Status = checker.Unknown
	}
	w.rec.add("append-eo", -1, op)
}

// resendEO sends one of the client's last acknowledged appends again, with
// its (client_id, seq) and value, as an application that lost the answer
// (or crashed before it wrote it down) does. It must be answered as a
// Duplicate at the index first given and never be applied again, whatever
// happened to masters and clocks in between: a re-send right after a new
// master's first lease is how a log time that jumped (expiring every dedup
// row) shows. It is no operation of the history (the value is the
// original's); a wrong answer is a problem, and a second copy of the value
// in the log the checker's "duplicated".
func (w *Workload) resendEO(k int, rng *rand.Rand, cl *client.Client, mine *eoAppends) {
	a := mine.acked[rng.IntN(len(mine.acked))]
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	res, err := cl.AppendSeq(ctx, cl.ID(), a.seq, []byte(a.value))
	cancel()
	outcome := "ok"
	switch {
	case err == nil && (!res.Duplicate || res.First != a.index):
		outcome = "fail"
		w.problem("client %d re-sent seq %d (%q, acknowledged at index %d): answered at index %d, duplicate %v; want a duplicate at %d",
			k, a.seq, a.value, a.index, res.First, res.Duplicate, a.index)
	case errors.Is(err, client.ErrStaleSeq) || errors.Is(err, client.ErrSeqReused):
		outcome = "fail"
		w.problem("client %d re-sent seq %d (%q, acknowledged at index %d): %v", k, a.seq, a.value, a.index, err)
	case err != nil:
		outcome = "unknown" // nothing is learned: the append stays where it was
	}
	w.mu.Lock()
	w.resends[outcome]++
	w.mu.Unlock()
}

// Resends counts the re-sent appends by outcome: ok (a duplicate at its
// index), fail (any other answer: each is a problem) and unknown.
func (w *Workload) Resends() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.resends)
}

// appendLarge appends one large value exactly-once through the Go client.
func (w *Workload) appendLarge(k int, rng *rand.Rand, cl *client.Client) {
	size := largeMin + rng.IntN(largeMax-largeMin+1)
	name := fmt.Sprintf("L%d-%d-%dB", k, w.next.Add(1), size)
	v := make([]byte, size)
	n := copy(v, name+"|")
	copy(v[n:], largePad)
	op := checker.Op{Client: k, Kind: checker.Append, Value: name, Invoke: w.rec.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	res, err := cl.Append(ctx, v)
	cancel()
	op.Complete = w.rec.Now()
	if err == nil {
		op.Status, op.Index = checker.OK, res.First
		w.seen(res.First + 1)
	} else {
		op.Status = checker.Unknown // retried under the same (client_id, seq), like appendEO
	}
	w.rec.add("append-large", -1, op)
}

// appendPlain sends one append, without client_id, to node i, once.
func (w *Workload) appendPlain(k, i int) {
	v := w.value(k)
	op := checker.Op{Client: k, Kind: checker.Append, Value: v, Invoke: w.rec.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	r, err := paxosdpb.NewLogServiceClient(w.conns[i]).Append(ctx, &paxosdpb.AppendRequest{Entries: [][]byte{[]byte(v)}})
	cancel()
	op.Complete = w.rec.Now()
	switch {
	case err == nil:
		op.Status, op.Index = checker.OK, r.FirstIndex
		w.seen(r.FirstIndex + 1)
	case definiteFailure(err):
		op.Status = checker.Fail
	default:
		op.Status = checker.Unknown
	}
	w.rec.add("append-plain", i, op)
}

// definiteFailure says whether an append error proves the append was not
// and will not be applied: a node that is not the master refused it (it
// proposed nothing; with no master known it says so after waiting), or the
// request was invalid. Everything else (timeouts, broken connections, a
// proposal dropped or a node stopping) leaves the outcome unknown.
func definiteFailure(err error) bool {
	if _, _, ok := api.AsNotMaster(err); ok {
		return true
	}
	return status.Code(err) == codes.InvalidArgument
}

// readOne reads from node i alone, once: linearizable (the node forwards
// to the master) or local.
func (w *Workload) readOne(k int, rng *rand.Rand, i int, linearizable bool) {
	from, count := w.readRange(rng, linearizable)
	op := checker.Op{Client: k, Kind: checker.Read, Linearizable: linearizable, Invoke: w.rec.Now()}
	req := &paxosdpb.ReadRequest{From: from, MaxCount: uint32(count), Consistency: paxosdpb.Consistency_LOCAL}
	if linearizable {
		req.Consistency = paxosdpb.Consistency_LINEARIZABLE
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	r, err := paxosdpb.NewLogServiceClient(w.conns[i]).Read(ctx, req)
	cancel()
	op.Complete = w.rec.Now()
	kind := "read-local"
	if linearizable {
		kind = "read-lin"
	}
	if err != nil {
		op.Status = readFailure(err)
		if first, ok := api.AsTrimmed(err); ok {
			w.SetFloor(first)
		}
		w.rec.add(kind, i, op)
		return
	}
	ents := make([]client.Entry, len(r.Entries))
	for j, e := range r.Entries {
		ents[j] = client.Entry{Index: e.Index, Value: e.Value}
	}
	w.recordRead(kind, i, &op, ents, r.EndIndex)
}

// readVia reads linearizably through an exactly-once client (it goes to
// the master it knows, retrying elsewhere).
func (w *Workload) readVia(k int, rng *rand.Rand, cl *client.Client) {
	from, count := w.readRange(rng, true)
	op := checker.Op{Client: k, Kind: checker.Read, Linearizable: true, Invoke: w.rec.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	r, err := cl.Read(ctx, from, count, false)
	cancel()
	op.Complete = w.rec.Now()
	if err != nil {
		op.Status = readFailure(err)
		var te *client.TrimmedError
		if errors.As(err, &te) {
			w.SetFloor(te.First)
		}
		w.rec.add("read-lin", -1, op)
		return
	}
	w.recordRead("read-lin", -1, &op, r.Entries, r.EndIndex)
}

// readRange picks where a read starts and how much it reads. Linearizable
// reads mostly start at the floor, so that the node's end (which the
// checker compares with what was acknowledged) is reported exactly: a read
// that starts beyond a node's end cannot tell how far the node got.
func (w *Workload) readRange(rng *rand.Rand, linearizable bool) (from uint64, count int) {
	floor, hint := w.floor.Load(), w.hint.Load()
	if linearizable && rng.IntN(3) > 0 || hint <= floor+1 {
		return floor, 1 + rng.IntN(4)
	}
	return floor + rng.Uint64N(hint-floor), 8
}

// recordRead records a successful read. A read that returned no entry
// cannot tell where the node's log ended (the response's end is at least
// from); it is recorded as unknown, which the checker ignores.
func (w *Workload) recordRead(kind string, node int, op *checker.Op, ents []client.Entry, end uint64) {
	if len(ents) == 0 {
		op.Status = checker.Unknown
		w.rec.add(kind+"-empty", node, *op)
		return
	}
	op.Status = checker.OK
	op.From = ents[0].Index
	for _, e := range ents {
		op.Entries = append(op.Entries, entryName(e.Value))
	}
	op.LastIndex = int64(end) - 1
	if !op.Linearizable {
		// A local read's end says nothing the checker uses; its entries do.
		op.LastIndex = int64(ents[len(ents)-1].Index)
	}
	w.seen(end)
	w.rec.add(kind, node, *op)
}

// readFailure classifies a failed read: a timeout is unknown, anything
// else a failure (a read changes nothing either way).
func readFailure(err error) checker.Status {
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return checker.Unknown
	}
	return checker.Fail
}

// runTail follows the log from the floor through the Go client (which
// resumes on any node after a failure) and records what it delivers, in
// chunks, as local reads: every entry must match the final log, and no
// entry may arrive before its append was sent.
func (w *Workload) runTail(ctx context.Context, k, round int) {
	defer w.tailWG.Done()
	eps := append([]string(nil), w.c.Addrs...)
	rng := rand.New(rand.NewPCG(w.seed+uint64(round)<<32, 0x7a11))
	rng.Shuffle(len(eps), func(i, j int) { eps[i], eps[j] = eps[j], eps[i] })
	cl, err := w.c.NewClient(eps, client.Options{CallTimeout: 2 * time.Second, DialTimeout: time.Second})
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		from := w.floor.Load()
		op := checker.Op{Client: k, Kind: checker.Read, From: from, Invoke: w.rec.Now()}
		flush := func() {
			if len(op.Entries) > 0 {
				op.Status, op.Complete = checker.OK, w.rec.Now()
				op.LastIndex = int64(op.From) + int64(len(op.Entries)) - 1
				w.rec.add("tail", -1, op)
			}
			next := op.From + uint64(len(op.Entries))
			op = checker.Op{Client: k, Kind: checker.Read, From: next, Invoke: w.rec.Now()}
		}
		last := time.Now()
		var terr error
		for e, err := range cl.Entries(ctx, from) {
			if err != nil {
				terr = err
				break
			}
			if e.Index != op.From+uint64(len(op.Entries)) {
				terr = fmt.Errorf("tail delivered index %d where %d was due", e.Index, op.From+uint64(len(op.Entries)))
				break
			}
			op.Entries = append(op.Entries, entryName(e.Value))
			w.seen(e.Index + 1)
			if len(op.Entries) >= 200 || time.Since(last) > 500*time.Millisecond {
				flush()
				last = time.Now()
			}
		}
		flush()
		var te *client.TrimmedError
		switch {
		case errors.As(terr, &te):
			w.SetFloor(te.First)
		case terr != nil:
			w.problem("tail: %v", terr)
			return
		}
	}
}

// problem records a violation the workload saw itself.
func (w *Workload) problem(format string, args ...any) {
	w.mu.Lock()
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

// Problems returns the violations the workload saw itself.
func (w *Workload) Problems() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.problems...)
}
