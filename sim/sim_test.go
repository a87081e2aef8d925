package sim

import (
	"cmp"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paxosd/paxosd/instance"
)

// The seed budget: PAXOSD_SIM_SEEDS seeds per cluster size (default 500),
// starting at PAXOSD_SIM_FIRST_SEED (default 1).
const defaultSeeds = 500

// envInt reads a non-negative integer from the environment.
func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, s)
	}
	return v
}

// runSeeds runs seeds [first, first+count) with opts from mk on every CPU and
// returns the failing reports (at most max of them, lowest seeds first).
func runSeeds(first, count uint64, mk func(seed uint64) Options, stopAtFirst bool, seen ...func(Report)) (fails []Report, ran int64) {
	var (
		next = first
		mu   sync.Mutex
		wg   sync.WaitGroup
		stop atomic.Bool
		n    atomic.Int64
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				mu.Lock()
				seed := next
				next++
				mu.Unlock()
				if seed >= first+count {
					return
				}
				rep := Run(mk(seed))
				n.Add(1)
				for _, f := range seen {
					f(rep)
				}
				if rep.Err != nil {
					mu.Lock()
					fails = append(fails, rep)
					mu.Unlock()
					if stopAtFirst {
						stop.Store(true)
					}
				}
			}
		}()
	}
	wg.Wait()
	return fails, n.Load()
}

func TestSeeds(t *testing.T) {
	count := uint64(envInt(t, "PAXOSD_SIM_SEEDS", defaultSeeds))
	first := uint64(envInt(t, "PAXOSD_SIM_FIRST_SEED", 1))
	for _, nodes := range []int{3, 5} {
		t.Run(fmt.Sprintf("nodes=%d", nodes), func(t *testing.T) {
			start := time.Now()
			var installs, withInstall, withDead, withHours, withLarge, oversize, withOversize, transfers, withTransfers, resends, withResends atomic.Int64
			var peakMu sync.Mutex
			var peaks []int
			fails, ran := runSeeds(first, count, func(s uint64) Options { return DefaultOptions(s, nodes) }, false, func(r Report) {
				peakMu.Lock()
				peaks = append(peaks, r.Peak)
				peakMu.Unlock()
				installs.Add(int64(r.Installs))
				oversize.Add(int64(r.Oversize))
				transfers.Add(int64(r.Faults["transfer"]))
				resends.Add(int64(r.Faults["resend"]))
				for _, c := range []struct {
					n  *atomic.Int64
					on bool
				}{{&withInstall, r.Installs > 0}, {&withDead, r.Dead > 0}, {&withHours, r.Opt.WallHours}, {&withLarge, r.Opt.LargeValues}, {&withOversize, r.Oversize > 0}, {&withTransfers, r.Faults["transfer"] > 0}, {&withResends, r.Faults["resend"] > 0}} {
					if c.on {
						c.n.Add(1)
					}
				}
			})
			t.Logf("%d seeds from %d, %d nodes: %d failed in %v; %d installed a base (%d installs); %d had voters down for good, "+
				"%d wall clocks off by hours, %d large values, %d master handovers (%d handovers), %d re-sent acknowledged appends (%d re-sends); "+
				"%d dropped messages over the size limit (%d drops)",
				ran, first, nodes, len(fails), time.Since(start).Round(time.Millisecond), withInstall.Load(), installs.Load(),
				withDead.Load(), withHours.Load(), withLarge.Load(), withTransfers.Load(), transfers.Load(), withResends.Load(), resends.Load(),
				withOversize.Load(), oversize.Load())
			if len(peaks) > 0 {
				slices.Sort(peaks)
				t.Logf("events pending at once, the run's peak: median %d, 99th percentile %d, highest %d (a storm fails at %d)",
					peaks[len(peaks)/2], peaks[len(peaks)*99/100], peaks[len(peaks)-1], maxPending)
			}
			for i, f := range fails {
				if i == 10 {
					t.Errorf("... and %d more", len(fails)-10)
					break
				}
				t.Errorf("seed %d: %v\n  replay: %s", f.Opt.Seed, f.Err, f.Replay())
			}
		})
	}
}

// TestReplay replays one seed, printing its trace with PAXOSD_SIM_TRACE=1.
// PAXOSD_SIM_TRIM=0, PAXOSD_SIM_LATE=0, PAXOSD_SIM_TRANSFERS=0,
// PAXOSD_SIM_MEMBERSHIP=0, PAXOSD_SIM_HINTS=0 and PAXOSD_SIM_RESENDS=0 turn
// off trims, the late faults, master handovers, membership changes (with
// wipes), failure detector reports and re-sends of acknowledged appends.
func TestReplay(t *testing.T) {
	seed := envInt(t, "PAXOSD_SIM_SEED", 0)
	if seed == 0 {
		t.Skip("set PAXOSD_SIM_SEED (and PAXOSD_SIM_NODES, PAXOSD_SIM_BUG) to replay a run")
	}
	opt := DefaultOptions(uint64(seed), envInt(t, "PAXOSD_SIM_NODES", 3))
	if b := os.Getenv("PAXOSD_SIM_BUG"); b != "" {
		opt.Bug = bugByName(t, b)
	}
	// Regression seeds older than trims or the late faults replay without them.
	if os.Getenv("PAXOSD_SIM_TRIM") == "0" {
		opt.Trim = false
	}
	if os.Getenv("PAXOSD_SIM_LATE") == "0" {
		opt = opt.WithoutLateFaults()
	}
	if os.Getenv("PAXOSD_SIM_TRANSFERS") == "0" {
		opt = opt.WithoutTransfers()
	}
	if os.Getenv("PAXOSD_SIM_HINTS") == "0" {
		opt = opt.WithoutHints()
	}
	if os.Getenv("PAXOSD_SIM_MEMBERSHIP") == "0" {
		opt = opt.WithoutMembership()
	}
	if os.Getenv("PAXOSD_SIM_RESENDS") == "0" {
		opt = opt.WithoutResends()
	}
	if os.Getenv("PAXOSD_SIM_TRACE") != "" {
		opt.Trace = func(s string) { fmt.Println(s) }
	}
	rep := Run(opt)
	t.Logf("seed %d: events=%d ops=%d acked=%d final=%d masters=%d installs=%d down-for-good=%d wall-hours=%v large=%v faults=%v trace hash %016x",
		seed, rep.Events, rep.Ops, rep.Acked, rep.FinalLen, rep.Masters, rep.Installs, rep.Dead, opt.WallHours, opt.LargeValues, rep.Faults, rep.Hash)
	if rep.Err != nil {
		t.Fatalf("%v\nreplay: %s", rep.Err, rep.Replay())
	}
}

func bugByName(t *testing.T, name string) instance.Bug {
	var names []string
	for _, b := range instance.Bugs() {
		if b.String() == name {
			return b
		}
		names = append(names, b.String())
	}
	t.Fatalf("unknown bug %q; known: %s", name, strings.Join(names, ", "))
	return 0
}

// The same seed gives the same trace, every time. Seeds 137 and 474 (5
// nodes) install bases with requests outstanding, whose results the core
// lists in map order: they once gave another trace one run in two.
func TestDeterministic(t *testing.T) {
	for _, nodes := range []int{3, 5} {
		for _, seed := range []uint64{42, 137, 474} {
			a := Run(DefaultOptions(seed, nodes))
			for range 3 {
				if b := Run(DefaultOptions(seed, nodes)); a.Hash != b.Hash || a.Events != b.Events {
					t.Fatalf("%d nodes: seed %d ran twice gave hashes %016x and %016x (%d and %d events)", nodes, seed, a.Hash, b.Hash, a.Events, b.Events)
				}
			}
		}
		if Run(DefaultOptions(42, nodes)).Hash == Run(DefaultOptions(43, nodes)).Hash {
			t.Fatalf("seeds 42 and 43 gave the same trace hash")
		}
	}
}

// unreached lists the planted bugs the simulator's faults do not reach,
// with the test that catches each. reproposed-lease needs a lease accepted
// by one acceptor only, above the instances the next master's phase 1
// heard of, that master outbid and its next phase 1 hearing from that
// acceptor, then the lease's holder elected while the master's lease runs:
// none of seeds 1-1000 gets there.
//
// handover-keeps-lease needs the successor, cut off from the old master,
// to complete phase 1 through the acceptors that accepted the handover
// before the old master hears it was chosen: none of seeds 1-300.
//
// guard-old-lease needs a stale lease's Accept to reach an acceptor after
// the lease above it, or a restart with two leases to tell apart. Since a
// master proposes its own lease only once the foreign leases it
// re-proposed applied, that takes a late duplicate: none of seeds 1-1500,
// and with handovers off only 696 of seeds 1-2000 with three nodes, and
// 109 and 1769 of 1-1800 with five (the regression seeds 696 and 109;
// 407 replaced 109 once a half-fetched base survived a timeout).
var unreached = map[instance.Bug]string{
	instance.BugReproposedLease:    "instance.TestReproposedForeignLease",
	instance.BugHandoverKeepsLease: "instance.TestHandoverStopsServingAtOnce",
	instance.BugGuardOldLease:      "instance.TestStaleLeaseKeepsGuard",
}

// bugBudget is how many seeds the simulator may need to catch each planted bug.
const bugBudget = 50

// Every planted bug is caught within the budget. PAXOSD_SIM_BUG_SEEDS=N runs
// every one of seeds 1..N instead, and logs how many catch each bug (the
// table in docs/protocol.md §8).
func TestPlantedBugsCaught(t *testing.T) {
	all := uint64(envInt(t, "PAXOSD_SIM_BUG_SEEDS", 0))
	for _, bug := range instance.Bugs() {
		t.Run(bug.String(), func(t *testing.T) {
			if test, ok := unreached[bug]; ok && all == 0 {
				t.Skipf("the simulator does not reach %s; %s catches it", bug, test)
			}
			fails, ran := runSeeds(1, max(all, bugBudget), func(s uint64) Options {
				// The table in docs/protocol.md §8 was measured before
				// failure detector reports and re-sends.
				o := DefaultOptions(s, 3+2*int(s%2)).WithoutHints().WithoutResends()
				o.Bug = bug
				switch bug {
				case instance.BugChangeAtOnce, instance.BugSlotReuse:
					o.Membership = true // only membership changes reach these
				case instance.BugWipedVotes:
					o.Membership, o.Wipes = true, o.DownForGood == 0 // and wipes this one
				case instance.BugHintEndsLease:
					o.Hints = true // only failure detector reports reach it
				case instance.BugDedupLatestOnly:
					// Only re-sends of acknowledged appends reach it: a
					// client retries only its highest seq.
					o = o.WithoutMembership()
					o.Resends = true
				default:
					// The others were measured before membership changes,
					// which send a seed elsewhere: behind-dead-peer is then
					// reached by none of seeds 1-120.
					o = o.WithoutMembership()
				}
				return o
			}, all == 0)
			slices.SortFunc(fails, func(a, b Report) int { return cmp.Compare(a.Opt.Seed, b.Opt.Seed) })
			if _, ok := unreached[bug]; ok && len(fails) == 0 {
				t.Logf("caught in 0 of seeds 1-%d", ran)
				return
			}
			if len(fails) == 0 || fails[0].Opt.Seed > bugBudget {
				t.Fatalf("planted bug %s not caught in %d seeds", bug, bugBudget)
			}
			f := fails[0]
			if all > 0 {
				t.Logf("caught in %d of seeds 1-%d, first at seed %d: %v", len(fails), ran, f.Opt.Seed, f.Err)
				return
			}
			t.Logf("caught after %d runs: seed %d: %v", ran, f.Opt.Seed, f.Err)
		})
	}
}

// Seeds that once failed, kept as regressions. Each must now run clean, or,
// with a planted bug, be caught by that bug's invariant (want) and by
// nothing else.
var regressions = []struct {
	seed  uint64
	nodes int
	bug   instance.Bug
	want  string // with a planted bug: the failure that must be reported
	why   string
	trim  bool // the seed failed with trims on (they came later: older seeds replay without them)
	// late: the seed failed with the faults DefaultOptions draws beyond the
	// first model (voters down for good, wall clocks off by hours, large
	// values); older seeds replay without them.
	late bool
}{
	{73, 5, instance.BugBallotReuse, "a ballot reused", "a new master served a linearizable read from its disk before persisting " +
		"entries it had applied: the history checker reported a stale read (the sim's read path now waits for the disk, as " +
		"node.Read does). Since the ballot invariant was added, the planted reuse is caught before the read", false, false},
	{2307, 3, instance.BugNone, "", "a stale linearizable read: a node that had not seen the master's lease (partitioned) ran phase 1 " +
		"with a node that had, re-proposed its own old appends, got them chosen and acknowledged them while the master still served " +
		"reads under its lease. Acceptors now refuse Prepares from others while a lease they accepted is on", false, false},
	{7648, 3, instance.BugNone, "", "the same stale read as seed 2307, after a partition flip isolated the new master", false, false},
	{425, 3, instance.BugNone, "", "with the lease guard but no matching eligibility rule, a node started phase 1 while its own acceptor " +
		"refused its Prepare: the ballot left without the node's own durable promise and was issued again after a restart", false, false},
	{398, 5, instance.BugNone, "", "the same ballot reissue as seed 425, in a 5-node cluster", false, false},
	{1238, 3, instance.BugNone, "", "no master for 20 s after healing: once chosen-only writes went unsynced, a master pushed an " +
		"applied value to the follower, then crashed and lost that apply; every voter then saw a peer (the follower) ahead of " +
		"it, so none would stand for election. Catch-up now counts only the peers a node learns from, and their latest report", false, false},
	{16314, 5, instance.BugNone, "", "a simulator bug, not a protocol one: the post-heal probe started with acknowledged index 0, not -1, " +
		"so the run ended at the heal, before the probe's first attempt and before the nodes converged. A master had acknowledged an " +
		"append whose apply it then lost in a crash (the value was chosen, held by a quorum's accepted records, but not yet learned " +
		"elsewhere), and the final check read logs that had not caught up", false, false},
	{246, 5, instance.BugNone, "", "while fetching bases, a node took entries from its own log's end up to one base's first index " +
		"skipped, then switched to an older base of another peer that started lower, and installed it with entries missing. A fetch " +
		"that skipped entries now starts over from its own log's end when the base changes", true, false},
	// The faults outside the first model, on the core before each fix (7b32675; 5d0fb37 for the log time).
	{100, 3, instance.BugNone, "", "a window of large values accepted when the master died made every Promise larger than the message " +
		"limit: all 122 dropped, no master for good. Promises now come in pieces", true, true},
	{58, 5, instance.BugNone, "", "the same oversize Promises as seed 100 (1,421 dropped), in a 5-node cluster with a voter down for good", true, true},
	{70, 3, instance.BugNone, "", "the master died for good after both survivors heard it had applied an instance neither had learned; " +
		"they counted themselves behind it for good and never ran the phase 1 that recovers it. A silent peer now stops counting", true, true},
	{268, 5, instance.BugNone, "", "the same dead master ahead of every survivor as seed 70, in a 5-node cluster", true, true},
	{197, 3, instance.BugNone, "", "a new master re-proposed a stale lease below its own; accepted after it, the stale one moved an " +
		"acceptor's guard to its holder, which was promised while the new lease ran. An older instance's lease no longer moves the guard", true, true},
	{47, 5, instance.BugNone, "", "the same guard moved by a stale lease as seed 197, in a 5-node cluster", true, true},
	{24, 3, instance.BugNone, "", "a master hours ahead moved log time by hours in one lease, expiring a live client's dedup row; its " +
		"retried append was applied twice. Log time now steps at most LogTimeStepMillis a lease", true, true},
	{23, 5, instance.BugNone, "", "the same dedup row expired by a clock hours ahead as seed 24, in a 5-node cluster", true, true},
	// Found by the default seeds once the faults above were in; failed on d286260.
	{391, 3, instance.BugNone, "", "a lease of an older ballot accepted in a higher instance than a newer master's lease kept an " +
		"acceptor's guard, ordered by instance alone, from the new holder; the acceptor promised the old holder while the new lease " +
		"ran. The guard now follows the highest (ballot, instance)", true, true},
	{736, 5, instance.BugNone, "", "the same guard kept by an older ballot's lease as seed 391, in a 5-node cluster", true, true},
	{84, 3, instance.BugNone, "", "a catch-up storm: any answer from the peer asked ended the outstanding request, so each duplicated " +
		"answer let one more request out, and 21,444 answers were pending at once. Only the answer to the outstanding request ends it now", true, true},
	{354, 3, instance.BugNone, "", "the same catch-up storm as seed 84", true, true},
	{194, 5, instance.BugNone, "", "the same catch-up storm as seed 84, in a 5-node cluster", true, true},
	{446, 5, instance.BugNone, "", "the same catch-up storm as seed 84, in a 5-node cluster", true, true},
	{2902, 3, instance.BugNone, "", "a simulator bug, not a protocol one (seed 2902 of the 20,000-seed run): a node installed a base and " +
		"applied a trim past it in the same Ready, taking a new base, which the checker did not record since the Ready also " +
		"installed; the follower that then fetched that base was reported to install a base no node took", true, true},
	// The same seeds with each fix's bug planted again: they still reach the fault.
	// Seed 100 stopped reaching it when a master began to hold its commit notices for its next Accept; 21 does.
	{21, 3, instance.BugUnboundedPromise, "no progress", "seed 21 with Promises unbounded", true, true},
	// Seed 58 stopped reaching the fault when a master began to wait for
	// the foreign leases it re-proposed before proposing its own, and 5,
	// which replaced it, when voters began to yield to a phase in progress
	// and a leader to wait out the lease it re-proposed; 25 did until a
	// master began to hold its commit notices for its next Accept; 2 does.
	{2, 5, instance.BugUnboundedPromise, "no progress", "seed 2 with Promises unbounded", true, true},
	// Seed 70 stopped reaching it with the same change; 27 did until an
	// applied lease began to arm an empty lease guard; 43 did until phase 1
	// timeouts began to back off (proposer.prepareTimeout); 45 did until a
	// voter began to yield to another's phase for as long as its own phase
	// 1 would wait (proposer.PrepareTimeout); 34 did until a master began
	// to hold its commit notices for its next Accept; 18 does.
	{18, 3, instance.BugBehindDeadPeer, "no progress", "seed 18 with dead peers counted", true, true},
	// Seed 268 stopped reaching the fault when a master began to announce,
	// after stepping down, what it saw chosen (for the handover); 34 did
	// until a master began to hold its commit notices for its next Accept;
	// 26 does.
	{26, 5, instance.BugBehindDeadPeer, "no progress", "seed 26 with dead peers counted", true, true},
	// Seeds 197 and 47 stopped reaching it with the same change, and the
	// seeds that replaced them when a master began to wait for the foreign
	// leases it re-proposed; 301 and 868 did until voters began to yield to
	// a phase in progress and a leader to wait out the lease it re-proposed
	// (counted from when it first saw it); 696 and 109 did, 109 until a
	// half-fetched base began to survive a timeout of the only peer ahead
	// (catchup.Maybe); 696 and 407 did, 696 until phase 1 timeouts began to
	// back off (proposer.prepareTimeout); 610 and 407 did, 407 until a voter
	// began to yield to another's phase for as long as its own phase 1
	// would wait (proposer.PrepareTimeout); 610 and 9 did, 610 until a
	// master began to hold its commit notices for its next Accept; 3 and 9
	// do.
	{3, 3, instance.BugGuardOldLease, "while guarding", "seed 3 with old leases moving the guard", true, true},
	{9, 5, instance.BugGuardOldLease, "while guarding", "seed 9 with old leases moving the guard", true, true},
	{24, 3, instance.BugLogTimeJump, "applied twice", "seed 24 with log time unbounded", true, true},
	// Seed 23 stopped reaching it with the same change; 27 did until a
	// master began to hold its commit notices for its next Accept; 32 does.
	{32, 5, instance.BugLogTimeJump, "applied twice", "seed 32 with log time unbounded", true, true},
}

func TestRegressionSeeds(t *testing.T) {
	for _, r := range regressions {
		o := DefaultOptions(r.seed, r.nodes)
		if !r.late {
			o = o.WithoutLateFaults()
		}
		o.Bug = r.bug
		o.Trim = r.trim
		o = o.WithoutTransfers().WithoutMembership().WithoutHints().WithoutResends() // every regression seed is older than them
		rep := Run(o)
		switch {
		case r.want == "" && rep.Err != nil, r.want != "" && (rep.Err == nil || !strings.Contains(rep.Err.Error(), r.want)):
			t.Errorf("seed %d (%d nodes, bug %s), once: %s\nnow: %v (want %q)\nreplay: %s", r.seed, r.nodes, r.bug, r.why, rep.Err, r.want, rep.Replay())
		}
	}
}

// membershipRegressions are seeds that once failed with membership changes
// on; they replay with today's DefaultOptions, less the faults added since.
var membershipRegressions = []struct {
	seed  uint64
	nodes int
	why   string
}{
	{110, 3, "a voter removed while another went down for good stopped as soon as it applied its removal; the survivors had not " +
		"learned the last instance before it took effect and needed the removed voter's vote to choose anything: stuck for good. " +
		"A removed node now stops only once a majority of the new voters applied past the removal (instance.Node.Departed)"},
	{194, 5, "a voter that had not applied the membership naming a replaced node's new directory refused it, and the replaced " +
		"node (and a rejoining one) stopped, as the runtime did (found by the chaos suite too): a directory that joined, or " +
		"one its own membership names, now carries on when refused"},
	{5742, 5, "a node installed a base whose lease named node 5 and then applied, in the base's first instance, node 3's lease: " +
		"the guard took the base's lease as chosen in that instance (the base's Applied), so the later lease did not move it, and " +
		"the node promised node 5 while node 3's lease ran. A base's lease now guards as chosen below the base"},
	{7449, 5, "the same guard left on a base's holder as seed 5742"},
	{12247, 5, "a simulator bug, not a protocol one (seed 12247 of the 5-node 20,000-seed run): an Accepted a voter sent before its " +
		"disk was wiped, still in flight, was reported as a vote of the wiped node; the checker now tells a vote of the lost " +
		"directory from one of its new directory by the directory it was sent from"},
}

func TestMembershipRegressionSeeds(t *testing.T) {
	for _, r := range membershipRegressions {
		if rep := Run(DefaultOptions(r.seed, r.nodes).WithoutHints().WithoutResends()); rep.Err != nil {
			t.Errorf("seed %d (%d nodes), once: %s\nnow: %v\nreplay: %s", r.seed, r.nodes, r.why, rep.Err, rep.Replay())
		}
	}
}
