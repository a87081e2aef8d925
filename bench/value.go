package bench

import (
	"bytes"
	"math/bits"
	"strconv"
	"sync"
)

// MinSize is the smallest value size: every value starts with its identity,
// "RUNIDxxx/CLIENT/N/" (an 8-character run ID, a client below MaxClients,
// an entry number below 10^17), and that must fit.
const MinSize = 32

// MaxClients bounds --clients (4 digits of the identity).
const MaxClients = 9999

// runIDLen is the length of a run ID: 8 hexadecimal digits.
const runIDLen = 8

// Identity names one value: the run that wrote it, the client, and the
// entry number within the client (0, 1, 2, ... in the order the client
// issued them; entry N+i is the i-th value of a batch whose first is N).
type Identity struct {
	Run    string
	Client int
	N      uint64
}

// appendValue appends the value of id, padded with '.' to size bytes.
func appendValue(buf []byte, id Identity, size int) []byte {
	start := len(buf)
	buf = append(buf, id.Run...)
	buf = append(buf, '/')
	buf = strconv.AppendInt(buf, int64(id.Client), 10)
	buf = append(buf, '/')
	buf = strconv.AppendUint(buf, id.N, 10)
	buf = append(buf, '/')
	for len(buf)-start < size {
		buf = append(buf, '.')
	}
	return buf
}

// ParseValue returns the identity a value starts with; ok is false for a
// value that no bench run wrote.
func ParseValue(v []byte) (id Identity, ok bool) {
	parts := bytes.SplitN(v, []byte{'/'}, 4)
	if len(parts) != 4 || len(parts[0]) != runIDLen {
		return Identity{}, false
	}
	c, err := strconv.Atoi(string(parts[1]))
	if err != nil || c < 0 {
		return Identity{}, false
	}
	n, err := strconv.ParseUint(string(parts[2]), 10, 64)
	if err != nil {
		return Identity{}, false
	}
	return Identity{Run: string(parts[0]), Client: c, N: n}, true
}

// bitset is a growable set of entry numbers.
type bitset []uint64

func (b *bitset) add(n uint64) (added bool) {
	w := int(n / 64)
	if w >= len(*b) {
		*b = append(*b, make([]uint64, w+1-len(*b))...)
	}
	bit := uint64(1) << (n % 64)
	if (*b)[w]&bit != 0 {
		return false
	}
	(*b)[w] |= bit
	return true
}

// Written is what a run wrote: for every client, the entry numbers the
// system acknowledged. Safe for concurrent use while the run goes on.
type Written struct {
	Run string

	mu     sync.Mutex
	acked  []bitset
	ackedN int64
}

// NewWritten returns an empty record of a run's writes, for clients clients.
func NewWritten(run string, clients int) *Written {
	return &Written{Run: run, acked: make([]bitset, clients)}
}

// Ack records that the system acknowledged entries [n, n+count) of client.
func (w *Written) Ack(client int, n uint64, count int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range uint64(count) {
		if w.acked[client].add(n + i) {
			w.ackedN++
		}
	}
}

// Clients returns the number of clients of the run.
func (w *Written) Clients() int { return len(w.acked) }

// Acked returns how many entries the system acknowledged.
func (w *Written) Acked() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ackedN
}

// Tally counts what a read-back found against what was acknowledged. Feed
// it every value (or identity) found, then call Result.
type Tally struct {
	w     *Written
	seen  []bitset
	found int64
	dup   int64
}

// NewTally returns a tally of the read-back of w.
func (w *Written) NewTally() *Tally {
	return &Tally{w: w, seen: make([]bitset, len(w.acked))}
}

// See records that the system holds the entry id; entries of other runs are
// ignored. It reports whether id belongs to this run.
func (t *Tally) See(id Identity) bool {
	if id.Run != t.w.Run || id.Client < 0 || id.Client >= len(t.seen) {
		return false
	}
	t.found++
	if !t.seen[id.Client].add(id.N) {
		t.dup++
	}
	return true
}

// Check is the result of reading back a run's writes.
type Check struct {
	Verified   bool  // false: the read-back did not run
	Found      int64 // values of this run the system holds, duplicates included
	Lost       int64 // acknowledged values not found
	Duplicated int64 // values found more than once (each extra copy counts)
	// Where the system was read, for the report: "log [from, to)" or a key
	// prefix.
	Where string
}

// Result compares what was seen with what was acknowledged.
func (t *Tally) Result(where string) Check {
	t.w.mu.Lock()
	defer t.w.mu.Unlock()
	var lost int64
	for c, acked := range t.w.acked {
		seen := t.seen[c]
		for i, word := range acked {
			if i < len(seen) {
				word &^= seen[i]
			}
			lost += int64(bits.OnesCount64(word))
		}
	}
	return Check{Verified: true, Found: t.found, Lost: lost, Duplicated: t.dup, Where: where}
}
