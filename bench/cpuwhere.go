package bench

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Where CPU goes: bench/cpuprofile.sh takes a CPU profile of every node
// while `paxosd bench` runs, and `go run ./bench/report cpu` sorts each
// profile's samples into the parts below with CPUParts, so that a node's
// CPU per append splits into fsync, socket and file I/O, gRPC, storage,
// the protocol, the apply, the runtime's scheduling and garbage collection.

// A cpuPart is one part of a node's CPU and the functions that make it.
type cpuPart struct {
	name  string
	funcs []string // prefixes of fully qualified function names
}

// cpuParts are checked from a sample's leaf to its root: the first frame
// that starts with one of a part's prefixes puts the sample in that part,
// and a sample with no such frame is "other". So a system call is charged
// to what it does (an fsync, a socket write) wherever it is made, and
// memory allocation (which matches nothing) to the code that allocates,
// unless it stopped to help the garbage collector.
var cpuParts = []cpuPart{
	{"fsync (storage sync)", []string{"syscall.Fsync", "syscall.Fdatasync"}},
	{"socket writes (syscalls)", []string{"net.(*conn).Write", "net.(*netFD).Write"}},
	{"socket reads (syscalls)", []string{"net.(*conn).Read", "net.(*netFD).Read", "net.(*rawConn).Read", "internal/poll.(*FD).RawRead"}},
	{"file writes (syscalls)", []string{"os.(*File).Write", "os.(*File).write"}},
	{"file reads (syscalls)", []string{"os.(*File).Read", "os.(*File).ReadAt", "os.(*File).pread", "os.(*File).read"}},
	{"garbage collection", []string{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge", "runtime.gcStart", "runtime.gcMarkDone", "runtime.gcMarkTermination"}},
	{"scheduling and wake-ups", []string{"runtime.futex", "runtime.schedule", "runtime.findRunnable", "runtime.park_m", "runtime.netpoll", "runtime.usleep", "runtime.sysmon", "runtime.wakep", "runtime.ready", "runtime.goready", "runtime.notewakeup", "runtime.gopark", "runtime.goschedImpl", "runtime.Gosched", "runtime.osyield", "runtime.mPark", "runtime.stopm", "runtime.startm", "runtime.exitsyscall", "runtime.entersyscall"}},
	{"gRPC: HTTP/2 framing and writer loop", []string{"google.golang.org/grpc/internal/transport", "golang.org/x/net/http2"}},
	{"gRPC: calls, streams, protobuf", []string{"google.golang.org/grpc", "google.golang.org/protobuf"}},
	{"storage: encoding, batch, memtable (goleveldb)", []string{"github.com/paxosd/paxosd/storage.", "github.com/syndtr/goleveldb/"}},
	{"apply (learner: entries, dedup)", []string{"github.com/paxosd/paxosd/learner."}},
	{"protocol (instance, message codec)", []string{"github.com/paxosd/paxosd/instance.", "github.com/paxosd/paxosd/core."}},
	{"peer transport (batching, delivery)", []string{"github.com/paxosd/paxosd/rpc.(*Transport)", "github.com/paxosd/paxosd/rpc.(*peer", "github.com/paxosd/paxosd/rpc.(*sender"}},
	{"client API (append stream, forwarding)", []string{"github.com/paxosd/paxosd/rpc.", "github.com/paxosd/paxosd/api.", "context."}},
	{"node loop", []string{"github.com/paxosd/paxosd/node."}},
}

// cpuOther names the samples no part claims.
const cpuOther = "other"

// CPUPartNames lists the parts in their order, "other" last.
func CPUPartNames() []string {
	names := make([]string, 0, len(cpuParts)+1)
	for _, p := range cpuParts {
		names = append(names, p.name)
	}
	return append(names, cpuOther)
}

// cpuPartOf names the part a sample's stack (leaf first) belongs to.
func cpuPartOf(stack []string) string {
	for _, fn := range stack {
		for _, p := range cpuParts {
			for _, prefix := range p.funcs {
				if strings.HasPrefix(fn, prefix) {
					return p.name
				}
			}
		}
	}
	return cpuOther
}

// CPUParts reads a CPU profile as `go tool pprof -traces` prints it and
// returns the CPU time of each part (by CPUPartNames) and in all.
func CPUParts(r io.Reader) (map[string]time.Duration, time.Duration, error) {
	parts := map[string]time.Duration{}
	var total, value time.Duration
	var stack []string
	inTrace := false
	flush := func() {
		if inTrace && len(stack) > 0 {
			parts[cpuPartOf(stack)] += value
			total += value
		}
		stack, inTrace = stack[:0], false
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----------+") {
			flush()
			inTrace = true
			continue
		}
		if !inTrace {
			continue // the header: File, Type, Duration...
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if len(stack) == 0 && !strings.HasPrefix(line, " ") {
			return nil, 0, fmt.Errorf("cpu profile: unexpected line %q", line)
		}
		if len(stack) == 0 {
			// The first line of a trace: its value, then its leaf.
			d, err := parseSampleValue(fields[0])
			if err != nil {
				return nil, 0, fmt.Errorf("cpu profile: %w", err)
			}
			value = d
			if len(fields) < 2 {
				return nil, 0, fmt.Errorf("cpu profile: trace %q has no function", line)
			}
			fields = fields[1:]
		}
		stack = append(stack, fields[0])
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("cpu profile: %w", err)
	}
	flush()
	if total == 0 {
		return nil, 0, fmt.Errorf("cpu profile: no samples (is it the output of go tool pprof -traces?)")
	}
	return parts, total, nil
}

// parseSampleValue reads a trace's value as pprof prints CPU time: "10ms",
// "1.20s", "500us".
func parseSampleValue(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	// A bare number is nanoseconds (pprof's unit for cpu when it prints no unit).
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sample value %q is not a duration", s)
	}
	return time.Duration(n), nil
}
