package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// Fault names one kind of fault the nemesis injects.
type Fault string

// The faults. Each is held for a few seconds and then healed; see
// docs/testing.md for what each does.
const (
	IsolateOne   Fault = "isolate-one"    // cut one node off, both ways
	IsolateMast  Fault = "isolate-master" // cut the master off, both ways
	Split        Fault = "split"          // a random majority/minority split
	Bridge       Fault = "bridge"         // two halves that only one node connects
	OneWay       Fault = "one-way"        // one direction of one link
	MuteMaster   Fault = "mute-master"    // everything the master sends is lost, longer than its lease; it still hears
	Loss         Fault = "loss"           // links break connections at random
	Delay        Fault = "delay"          // links hold bytes 5-100 ms
	Kill         Fault = "kill"           // SIGKILL a random node, restart it later
	KillMaster   Fault = "kill-master"    // SIGKILL the master, restart it later
	BounceMaster Fault = "bounce-master"  // SIGKILL the master and restart it at once
	FlipBounce   Fault = "flip-bounce"    // the master reaches half the others; bounce it; it comes back reaching the other half
	KillMajority Fault = "kill-majority"  // SIGKILL a majority one after another, then restart them
	PauseMaster  Fault = "pause-master"   // SIGSTOP the master for longer than its lease, then SIGCONT
	Pause        Fault = "pause"          // SIGSTOP a random node for 1-6 s
	KillCatchup  Fault = "kill-catchup"   // keep a node down while the log grows, restart it, kill it again mid catch-up
	KillTrim     Fault = "kill-trim"      // trim the log and SIGKILL a node (often the master) while the trim runs
	KillForGood  Fault = "kill-for-good"  // SIGKILL a minority (often the master) and keep it down until the round ends
	ClockJump    Fault = "clock-jump"     // restart a node (often the master) with its wall clock 1-6 h off until the round ends
	WipeReplace  Fault = "wipe-replace"   // wipe a node's disk, remove it, start it again with --join, promote it
)

// AllFaults lists every fault.
var AllFaults = []Fault{IsolateOne, IsolateMast, Split, Bridge, OneWay, MuteMaster, Loss, Delay,
	Kill, KillMaster, BounceMaster, FlipBounce, KillMajority, PauseMaster, Pause, KillCatchup, KillTrim, KillForGood, ClockJump, WipeReplace}

// DefaultWeights gives every fault the same chance.
func DefaultWeights() map[Fault]int {
	w := map[Fault]int{}
	for _, f := range AllFaults {
		w[f] = 1
	}
	return w
}

// leaseTime is the default master lease (instance.DefaultConfig's 300 ticks
// of 10 ms); pauses of the master outlast it.
const leaseTime = 3 * time.Second

// Nemesis injects faults from a seeded schedule: every step it picks a
// fault by weight, holds it for a few seconds, heals it, and rests.
type Nemesis struct {
	c       *Cluster
	trimmer *Trimmer
	rng     *rand.Rand
	weights map[Fault]int
	logf    func(format string, args ...any)
	start   time.Time
	// minHold, when set, is the least time partitions and pauses are held.
	minHold time.Duration
	// ahead is the furthest a clock-jump has set a wall clock ahead so far.
	ahead time.Duration

	mu     sync.Mutex
	counts map[string]int
	bg     sync.WaitGroup // trims started by kill-trim
}

// NewNemesis returns a nemesis for c; the trimmer serves the kill-trim fault.
func NewNemesis(c *Cluster, t *Trimmer, seed uint64, weights map[Fault]int, logf func(string, ...any)) *Nemesis {
	if weights == nil {
		weights = DefaultWeights()
	}
	return &Nemesis{c: c, trimmer: t, rng: rand.New(rand.NewPCG(seed, 0xfa17)), weights: weights, logf: logf,
		counts: map[string]int{}, start: time.Now()}
}

// Counts returns the faults injected, by kind.
func (n *Nemesis) Counts() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]int{}
	for k, v := range n.counts {
		out[k] = v
	}
	return out
}

func (n *Nemesis) count(name string) {
	n.mu.Lock()
	n.counts[name]++
	n.mu.Unlock()
}

func (n *Nemesis) pick() Fault {
	faults := make([]Fault, 0, len(n.weights))
	total := 0
	for f, w := range n.weights {
		if w > 0 {
			faults = append(faults, f)
			total += w
		}
	}
	sort.Slice(faults, func(i, j int) bool { return faults[i] < faults[j] })
	x := n.rng.IntN(total)
	for _, f := range faults {
		if x < n.weights[f] {
			return f
		}
		x -= n.weights[f]
	}
	return faults[len(faults)-1]
}

// between returns a random duration in [lo, hi].
func (n *Nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(n.rng.Int64N(int64(hi-lo)+1))
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (n *Nemesis) log(format string, args ...any) {
	n.logf("[%6.1fs] nemesis: %s", time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
}

// HealAll ends every fault but those that last until the round ends
// (Cluster.Restore ends them): every link open, every node running but
// those killed for good, clocks left as they are.
func (n *Nemesis) HealAll() {
	n.c.HealNetwork()
	for i := range n.c.Addrs {
		n.c.Resume(i)
		if err := n.c.Start(i); err != nil {
			n.log("restart node %d: %v", i+1, err)
		}
	}
}

// Run injects faults until ctx ends, then heals everything and waits for
// the trims it started.
func (n *Nemesis) Run(ctx context.Context) {
	defer n.bg.Wait()
	defer n.HealAll()
	for ctx.Err() == nil {
		f := n.pick()
		n.step(ctx, f)
		n.HealAll()
		if !sleep(ctx, n.between(500*time.Millisecond, 2500*time.Millisecond)) {
			return
		}
	}
}

// block picks how a partition blocks: mostly stalled links (silently lost
// packets), sometimes resets.
func (n *Nemesis) block() Block {
	if n.rng.IntN(3) == 0 {
		return Reset
	}
	return Stall
}

// target returns the master, or a random node (and false) when no master
// is known.
func (n *Nemesis) target() (int, bool) {
	if m := n.c.Master(); m >= 0 {
		return m, true
	}
	return n.rng.IntN(n.c.N()), false
}

// targetWithin is target, waiting up to d for a master (one may be
// taking over after an earlier fault).
func (n *Nemesis) targetWithin(ctx context.Context, d time.Duration) (int, bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if m := n.c.Master(); m >= 0 {
			return m, true
		}
		sleep(ctx, 100*time.Millisecond)
	}
	return n.target()
}

func (n *Nemesis) step(ctx context.Context, f Fault) {
	N := n.c.N()
	hold := n.between(max(2*time.Second, n.minHold), max(7*time.Second, n.minHold+2*time.Second))
	// Network weather now and then, under whatever else happens.
	if f != Loss && f != Delay && f != WipeReplace && n.rng.IntN(5) == 0 {
		n.weather(n.rng.IntN(2) == 0)
	}
	switch f {
	case IsolateOne, IsolateMast:
		i, isMaster := n.rng.IntN(N), false
		if f == IsolateMast {
			i, isMaster = n.target()
		}
		side := make([]int, N)
		side[i] = 1
		b := n.block()
		n.c.Partition(side, b)
		n.record(f, isMaster || f == IsolateOne, "node %d cut off (%s) for %v", i+1, b, hold)
	case Split:
		perm := n.rng.Perm(N)
		side := make([]int, N)
		for _, i := range perm[:N/2] {
			side[i] = 1
		}
		b := n.block()
		n.c.Partition(side, b)
		n.record(f, true, "split %s (%s) for %v", sides(side), b, hold)
	case Bridge:
		perm := n.rng.Perm(N)
		b := n.block()
		// perm[0] is the bridge; the others form two halves that reach
		// each other only through it.
		half := map[int]int{}
		for k, i := range perm[1:] {
			half[i] = k % 2
		}
		for i := 0; i < N; i++ {
			for j := 0; j < N; j++ {
				if i != j && i != perm[0] && j != perm[0] && half[i] != half[j] {
					st := n.c.Link(i, j)
					st.Block = b
					n.c.SetLink(i, j, st)
				}
			}
		}
		n.record(f, true, "bridge through node %d (%s) for %v", perm[0]+1, b, hold)
	case OneWay:
		i := n.rng.IntN(N)
		j := (i + 1 + n.rng.IntN(N-1)) % N
		st := n.c.Link(i, j)
		st.Block = Stall
		n.c.SetLink(i, j, st)
		n.record(f, true, "link %d -> %d stalled for %v", i+1, j+1, hold)
	case MuteMaster:
		// The master's Accepts already sent are answered, so it learns
		// values chosen and acknowledges them, but no Commit leaves it; the
		// others elect a new master once its lease runs out.
		m, ok := n.target()
		for j := 0; j < N; j++ {
			if j != m {
				st := n.c.Link(m, j)
				st.Block = Stall
				n.c.SetLink(m, j, st)
			}
		}
		hold = max(n.minHold, leaseTime+n.between(time.Second, 4*time.Second))
		n.record(f, ok, "node %d's outgoing links stalled; it still hears the others; for %v", m+1, hold)
	case Loss, Delay:
		n.weather(f == Loss)
	case WipeReplace:
		// A wiped node is down until it is replaced, and its removal needs
		// a quorum of the others live: with a minority down for good
		// already, wiping one more leaves a 3-node cluster no quorum for
		// the rest of the round.
		if (N-1)/2-n.c.HeldCount() <= 0 {
			n.log("%s: skipped, a minority is down for good already", f)
			return
		}
		n.wipeReplace(ctx)
		return
	case Kill, KillMaster:
		i, isMaster := n.rng.IntN(N), false
		if f == KillMaster {
			i, isMaster = n.target()
		}
		n.c.Kill(i)
		hold = n.between(500*time.Millisecond, 5*time.Second)
		n.record(f, f == Kill || isMaster, "SIGKILL node %d, restart in %v", i+1, hold)
	case BounceMaster:
		i, isMaster := n.target()
		n.c.Kill(i)
		n.c.Start(i)
		n.record(f, isMaster, "SIGKILL node %d and restart it at once", i+1)
		hold = n.between(time.Second, 4*time.Second) // let it take over again
	case FlipBounce:
		// The master reaches only the others in x (a quorum with it), so
		// what it sent last lies accepted there; it is killed, and comes
		// back while x is cut off (y and it are a quorum too). x hears
		// what was held back when the fault heals.
		m, isMaster := n.target()
		var others []int
		for _, j := range n.rng.Perm(N) {
			if j != m {
				others = append(others, j)
			}
		}
		x, y := others[:len(others)/2], others[len(others)/2:]
		for _, j := range y {
			n.c.SetLink(m, j, LinkState{Block: Reset})
		}
		if !sleep(ctx, n.between(500*time.Millisecond, 1500*time.Millisecond)) {
			return
		}
		n.c.Kill(m)
		for _, j := range y {
			n.c.SetLink(m, j, LinkState{})
		}
		side := make([]int, N)
		for _, j := range x {
			side[j] = 1
		}
		n.c.Partition(side, Stall)
		n.c.Start(m)
		hold = n.between(time.Second, 3*time.Second)
		n.record(f, isMaster, "node %d reached only %v; SIGKILL, restart with %v cut off, for %v", m+1, plus1(x), plus1(x), hold)
	case KillMajority:
		perm := n.rng.Perm(N)
		var killed []string
		for _, i := range perm[:N/2+1] {
			n.c.Kill(i)
			killed = append(killed, fmt.Sprint(i+1))
			if !sleep(ctx, n.between(100*time.Millisecond, time.Second)) {
				break
			}
		}
		n.record(f, true, "SIGKILL nodes %s one after another", strings.Join(killed, ", "))
		if !sleep(ctx, n.between(500*time.Millisecond, 3*time.Second)) {
			return
		}
		for _, i := range perm[:N/2+1] {
			n.c.Start(i)
			if !sleep(ctx, n.between(100*time.Millisecond, time.Second)) {
				return
			}
		}
		hold = 0
	case PauseMaster, Pause:
		i, isMaster := n.rng.IntN(N), false
		hold = max(n.minHold, n.between(time.Second, 6*time.Second))
		if f == PauseMaster {
			i, isMaster = n.target()
			hold = max(n.minHold, leaseTime+n.between(time.Second, 4*time.Second))
		}
		n.c.Pause(i)
		n.record(f, f == Pause || isMaster, "SIGSTOP node %d for %v", i+1, hold)
	case KillCatchup:
		m := n.c.Master()
		i := n.rng.IntN(N)
		if i == m {
			i = (i + 1) % N
		}
		n.c.Kill(i)
		n.record(f, true, "SIGKILL node %d, keep it down while the log grows", i+1)
		if !sleep(ctx, n.between(3*time.Second, 6*time.Second)) {
			return
		}
		n.c.Start(i)
		mid := n.between(50*time.Millisecond, time.Second)
		if !sleep(ctx, mid) {
			return
		}
		n.c.Kill(i)
		n.log("node %d killed again %v into its catch-up", i+1, mid)
		hold = n.between(500*time.Millisecond, 2*time.Second)
	case KillTrim:
		i, isMaster := n.rng.IntN(N), false
		if n.rng.IntN(2) == 0 {
			i, isMaster = n.target()
		}
		started := make(chan struct{})
		n.bg.Add(1)
		go func() { defer n.bg.Done(); n.trimmer.TrimNow(started) }()
		<-started
		if !sleep(ctx, n.between(0, 300*time.Millisecond)) {
			return
		}
		n.c.Kill(i)
		n.record(f, true, "trim under way; SIGKILL node %d (it was master: %v)", i+1, isMaster)
		hold = n.between(500*time.Millisecond, 3*time.Second)
	case KillForGood:
		// The survivors must carry on: a new master, with what the dead
		// ones had accepted or applied out of reach.
		room := (N-1)/2 - n.c.HeldCount()
		if room <= 0 {
			n.log("%s: skipped, a minority is down for good already", f)
			break
		}
		var victims []int
		aimed, master := true, false
		if n.rng.IntN(2) == 0 {
			m, ok := n.target()
			aimed, master = ok, ok
			if !n.c.Held(m) {
				victims = append(victims, m)
			}
		}
		want := 1 + n.rng.IntN(room)
		for _, i := range n.rng.Perm(N) {
			if len(victims) < want && !n.c.Held(i) && !slices.Contains(victims, i) {
				victims = append(victims, i)
			}
		}
		for _, i := range victims {
			n.c.KillForGood(i)
		}
		n.record(f, aimed, "SIGKILL nodes %v, down until the round ends (the first was master: %v)", plus1(victims), master)
		hold = n.between(2*time.Second, 5*time.Second)
	case ClockJump:
		// A node's wall clock goes in lease commands when it is master,
		// where it ages idle clients' dedup rows: mostly the master, then,
		// which restarted at once usually takes its lease back. A clock
		// ahead goes past the furthest one so far: log time keeps the
		// largest wall clock it has taken, so a master less far ahead than
		// an earlier one would not move it, and the fault would test
		// nothing a second time.
		i, isMaster := n.rng.IntN(N), false
		if n.rng.IntN(4) > 0 {
			i, isMaster = n.targetWithin(ctx, 5*time.Second)
		}
		off := n.between(time.Hour, 6*time.Hour).Round(time.Minute)
		if n.rng.IntN(2) == 0 {
			off = -off
		} else {
			off += n.ahead
			n.ahead = off
		}
		n.c.SetClockOffset(i, off)
		n.c.Kill(i)
		n.c.Start(i)
		n.record(f, true, "restart node %d (it was master: %v) with its wall clock %v off, until the round ends", i+1, isMaster, off)
		hold = n.between(time.Second, 4*time.Second)
	}
	sleep(ctx, hold)
}

// record counts a fault and logs it. A fault aimed at the master that found
// no master is counted under its name with "(no master)".
func (n *Nemesis) record(f Fault, aimed bool, format string, args ...any) {
	name := string(f)
	if !aimed {
		name += " (no master)"
	}
	n.count(name)
	n.log("%s: %s", name, fmt.Sprintf(format, args...))
}

// weather sets loss (or delay) on every link.
func (n *Nemesis) weather(loss bool) {
	N := n.c.N()
	var st LinkState
	var what string
	if loss {
		st.Loss = []float64{0.002, 0.01, 0.05}[n.rng.IntN(3)]
		what = fmt.Sprintf("loss %.1f%% of chunks", st.Loss*100)
	} else {
		st.Delay = n.between(5*time.Millisecond, 60*time.Millisecond)
		st.Jitter = n.between(0, 40*time.Millisecond)
		what = fmt.Sprintf("delay %v + up to %v", st.Delay, st.Jitter)
	}
	for i := 0; i < N; i++ {
		for j := 0; j < N; j++ {
			if i != j {
				n.c.SetLink(i, j, st)
			}
		}
	}
	f := Delay
	if loss {
		f = Loss
	}
	n.record(f, true, "every link: %s", what)
}

func sides(side []int) string {
	var a, b []string
	for i, s := range side {
		if s == 0 {
			a = append(a, fmt.Sprint(i+1))
		} else {
			b = append(b, fmt.Sprint(i+1))
		}
	}
	return "{" + strings.Join(a, ",") + "} | {" + strings.Join(b, ",") + "}"
}

// plus1 turns node indexes into node IDs.
func plus1(xs []int) []int {
	out := make([]int, len(xs))
	for k, x := range xs {
		out[k] = x + 1
	}
	return out
}

// wipeReplace is the replace procedure of docs/operations.md, done to a
// node whose disk is wiped under load: SIGKILL it (not the master, when one
// is known), delete its data directory, remove it from the membership,
// start it again on the empty directory with --join (it joins as a
// follower, with a new incarnation), and promote it once it caught up.
// Membership changes and catch-up from an empty directory run under the
// workload; the round's check then finds every acknowledged entry on it
// too. A step that does not complete within a minute is logged; the node
// stays down (or exits, refused), which the round's check reports.
func (n *Nemesis) wipeReplace(ctx context.Context) {
	N := n.c.N()
	i := n.rng.IntN(N)
	if m := n.c.Master(); m >= 0 && N > 1 {
		i = (m + 1 + n.rng.IntN(N-1)) % N
	}
	start := time.Now()
	if err := n.c.Wipe(i); err != nil {
		n.log("wipe node %d: %v", i+1, err)
		return
	}
	var others []string
	for j, a := range n.c.Addrs {
		if j != i {
			others = append(others, a)
		}
	}
	cl, err := n.c.NewClient(others, client.Options{CallTimeout: 5 * time.Second})
	if err != nil {
		n.log("wipe-replace: client: %v", err)
		return
	}
	defer cl.Close()
	// The replacement runs to its end even when the faults end first: the
	// wiped node is lost until it is removed and joins again, and the round
	// heals only after this step returns (a node killed just before, and
	// restarted, may hold the removal up until the window ends).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	id := uint64(i + 1)
	// member reports node i's role in the configuration ("" if none, or
	// on an error).
	member := func() string {
		ms, err := cl.ListMembers(ctx)
		if err != nil {
			return "?"
		}
		for _, m := range ms.Members {
			if m.Id == id {
				return m.Role
			}
		}
		if ms.Pending != "" {
			return "?" // wait for the change in progress
		}
		return ""
	}
	for member() != "" {
		if _, err := cl.ChangeMembers(ctx, &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_REMOVE, Id: id}); err != nil && ctx.Err() == nil {
			n.log("wipe-replace: remove node %d: %v (retrying)", i+1, err)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			n.log("wipe-replace: node %d not removed within a minute", i+1)
			return
		}
	}
	if err := n.c.Start(i); err != nil {
		n.log("wipe-replace: start node %d: %v", i+1, err)
		return
	}
	for {
		ms, err := cl.ListMembers(ctx)
		if err == nil && ms.Pending == "" && slices.ContainsFunc(ms.Members, func(m *paxosdpb.MemberInfo) bool {
			if m.Id == id && m.Role == "voter" {
				n.c.SetSlot(i, m.Slot)
				return true
			}
			return false
		}) {
			break
		}
		if _, err := cl.ChangeMembers(ctx, &paxosdpb.ChangeMembersRequest{Kind: paxosdpb.ChangeKind_PROMOTE, Id: id}); err != nil && ctx.Err() == nil &&
			status.Code(err) != codes.FailedPrecondition {
			n.log("wipe-replace: promote node %d: %v (retrying)", i+1, err)
		}
		if !sleep(ctx, 300*time.Millisecond) {
			n.log("wipe-replace: node %d not a voter again within a minute", i+1)
			return
		}
	}
	n.record(WipeReplace, true, "node %d wiped, removed, joined again on an empty directory and promoted in %v", i+1, time.Since(start).Round(time.Millisecond))
}
