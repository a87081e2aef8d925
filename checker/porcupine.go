package checker

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// PorcupineResult is the per-window outcome of CheckPorcupine.
type PorcupineResult struct {
	Windows int   // windows the history was cut into, skipped ones included
	Skipped int   // windows too large or timed out (not a violation; counted and reported)
	Illegal []int // window numbers (0-based, in time order) Porcupine found not linearizable
	// Files are the HTML visualizations written for illegal windows when
	// PorcupineOptions.VisualizeDir is set.
	Files []string
	// Err reports visualizations that could not be written; it never
	// changes the verdict.
	Err error
}

// OK reports whether no window was found illegal. Skipped windows do not
// count against it; callers that need full coverage check Skipped too.
func (r PorcupineResult) OK() bool { return len(r.Illegal) == 0 }

// String summarizes the result on one line.
func (r PorcupineResult) String() string {
	s := fmt.Sprintf("porcupine: %d windows, %d skipped, %d illegal %v", r.Windows, r.Skipped, len(r.Illegal), r.Illegal)
	for _, f := range r.Files {
		s += " " + f
	}
	return s
}

// PorcupineOptions tunes CheckPorcupine. Zero values mean the defaults.
type PorcupineOptions struct {
	MaxWindowOps int           // target window size; default 200
	Timeout      time.Duration // per window; default 10s
	VisualizeDir string        // where to write HTML for illegal windows ("" = don't write)
}

// pInput is what Porcupine sees as an operation's input; its output is an
// int64: the index for an append, LastIndex for a read.
type pInput struct {
	read  bool
	value string
	op    int // index into the history, -1 for the final-log read
}

// logModel is the sequential specification: the state is the log length.
// Contents are not modelled; Check compares them with the final log.
var logModel = porcupine.Model{
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		n, in, out := state.(int64), input.(pInput), output.(int64)
		if in.read {
			return out+1 == n, n
		}
		return out == n, n + 1
	},
	Hash: func(state any) uint64 { return uint64(state.(int64)) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(pInput), output.(int64)
		if in.op < 0 {
			return fmt.Sprintf("final log: last index %d", out)
		}
		if in.read {
			return fmt.Sprintf("read -> last index %d [op %d]", out, in.op)
		}
		return fmt.Sprintf("append(%q) -> %d [op %d]", in.value, out, in.op)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("len %d", state.(int64)) },
}

// CheckPorcupine checks h for linearizability with Porcupine, against a model
// whose state is the log length.
//
// The history is first completed with the final log: an Unknown (or Fail)
// append whose value is in the final log took effect at that index; one whose
// value is absent never took effect and is dropped, as are local reads and
// reads that did not succeed. An append that took effect without the client
// seeing it may have landed at any time after its invoke, even after the
// client gave up, so its completion is +infinity, narrowed only by what the
// rest of the history proves (see completeHistory). A final read of the whole
// final log is added after everything, so appends acknowledged but missing
// from it are caught.
//
// The ops are then cut into windows at quiescent points (see cutWindows) and
// each window is checked from the log length reached at its cut.
func CheckPorcupine(h History, final []string, opt PorcupineOptions) PorcupineResult {
	if opt.MaxWindowOps <= 0 {
		opt.MaxWindowOps = 200
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	ops := completeHistory(h, final)
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })

	var res PorcupineResult
	var errs []error
	next := int64(0) // log length at the start of the current window
	for w, win := range cutWindows(ops, opt.MaxWindowOps) {
		res.Windows++
		start := next
		for _, o := range win {
			if !o.Input.(pInput).read {
				next = max(next, o.Output.(int64)+1)
			}
		}
		if len(win) > 4*opt.MaxWindowOps {
			res.Skipped++
			continue
		}
		model := logModel
		model.Init = func() any { return start }
		verdict, info := porcupine.CheckOperationsVerbose(model, win, opt.Timeout)
		switch verdict {
		case porcupine.Illegal:
			res.Illegal = append(res.Illegal, w)
			if opt.VisualizeDir != "" {
				path := filepath.Join(opt.VisualizeDir, fmt.Sprintf("window-%d.html", w))
				err := os.MkdirAll(opt.VisualizeDir, 0o755)
				if err == nil {
					err = porcupine.VisualizePath(model, info, path)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("window %d: %w", w, err))
				} else {
					res.Files = append(res.Files, path)
				}
			}
		case porcupine.Unknown:
			res.Skipped++
		}
	}
	res.Err = errors.Join(errs...)
	return res
}

// completeHistory turns h into Porcupine operations, resolving unknown
// outcomes with the final log.
//
// An append that took effect but whose client never heard back gets
// completion +infinity. That is sound but expensive: no window can be cut
// after it. Yet the model orders appends by index, so in any legal
// linearization the append at index i precedes every append with a higher
// index and every linearizable read that saw index i; each of those
// linearized no later than it completed. So the earliest completion among
// them bounds when index i can have taken effect, and shrinking the interval
// to that bound keeps exactly the same set of legal linearizations. Only an
// append nothing later observed keeps +infinity, represented as a time after
// every real event (and before the final-log read).
func completeHistory(h History, final []string) []porcupine.Operation {
	pos := make(map[string]int64, len(final))
	for i, v := range final {
		if _, dup := pos[v]; !dup {
			pos[v] = int64(i)
		}
	}
	// bound[k]: earliest completion of an op proving index k had taken
	// effect; bounds for index i are the suffix minimum from i.
	bound := make([]int64, len(final))
	for i := range bound {
		bound[i] = math.MaxInt64
	}
	observe := func(k int64, t int64) {
		k = min(k, int64(len(final))-1)
		if k >= 0 {
			bound[k] = min(bound[k], t)
		}
	}

	var ops []porcupine.Operation
	var open []int // ops whose completion is still +infinity
	latest, client := int64(math.MinInt64), 0
	keep := func(o Op, i int, out int64, infinite bool) {
		call, ret := o.Invoke, max(o.Complete, o.Invoke)
		latest = max(latest, call)
		if infinite {
			open = append(open, len(ops))
		} else {
			latest = max(latest, ret)
		}
		client = max(client, o.Client+1)
		ops = append(ops, porcupine.Operation{
			ClientId: max(o.Client, 0),
			Input:    pInput{read: o.Kind == Read, value: o.Value, op: i},
			Call:     call, Output: out, Return: ret,
		})
	}
	for i, o := range h {
		switch {
		case o.Kind == Append && o.Status == OK:
			idx := int64(min(o.Index, math.MaxInt64/2)) // guard the conversion against absurd claims
			keep(o, i, idx, false)
			observe(idx-1, o.Complete)
		case o.Kind == Append:
			if p, ok := pos[o.Value]; ok {
				keep(o, i, p, true)
			}
		case o.Kind == Read && o.Status == OK && o.Linearizable:
			keep(o, i, o.LastIndex, false)
			observe(o.LastIndex, o.Complete)
		}
	}
	for k := len(bound) - 2; k >= 0; k-- {
		bound[k] = min(bound[k], bound[k+1])
	}

	if latest == math.MinInt64 {
		latest = 0
	}
	infinity := latest + 1
	for _, j := range open {
		b := bound[ops[j].Output.(int64)]
		if b == math.MaxInt64 {
			ops[j].Return = infinity
		} else {
			// A bound before the invoke means the history is illegal
			// anyway; keep the interval well-formed so Porcupine says so.
			ops[j].Return = max(b, ops[j].Call)
		}
	}
	return append(ops, porcupine.Operation{
		ClientId: client,
		Input:    pInput{read: true, op: -1},
		Call:     infinity + 1, Output: int64(len(final)) - 1, Return: infinity + 1,
	})
}

// cutWindows splits ops (sorted by Call) into windows at quiescent points: a
// cut before ops[k] is allowed only when every earlier op returned strictly
// before ops[k] was called (intervals are closed, so a tie is concurrency).
// Then all ops before the cut precede all ops after it in real time, every
// linearization puts them first, and each window can be checked on its own
// from the log length reached at the cut. Windows are formed greedily: the
// furthest cut at most maxOps ops ahead, or, if there is none, the nearest cut
// beyond that (such a window may be larger than maxOps).
func cutWindows(ops []porcupine.Operation, maxOps int) [][]porcupine.Operation {
	var cuts []int // positions k where a cut before ops[k] is allowed
	reach := int64(math.MinInt64)
	for k, o := range ops {
		if k > 0 && reach < o.Call {
			cuts = append(cuts, k)
		}
		reach = max(reach, o.Return)
	}
	cuts = append(cuts, len(ops))

	var windows [][]porcupine.Operation
	start, c := 0, 0
	for start < len(ops) {
		for c < len(cuts) && cuts[c] <= start {
			c++
		}
		end := cuts[c] // nearest cut; take further ones while they fit
		for c+1 < len(cuts) && cuts[c+1]-start <= maxOps {
			c++
			end = cuts[c]
		}
		windows = append(windows, ops[start:end])
		start = end
	}
	return windows
}
