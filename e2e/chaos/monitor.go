package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/paxosd/paxosd/idgen"
)

// monitor polls every node's status while faults run. It counts master
// changes and checks what docs/protocol.md (§1, §4) says of ballots, as far as the
// nodes' own reports show them: a node issues only ballots it owns
// (ballot mod K is its slot; a node replaced on a wiped directory has a
// new slot and a new history), they only go up, and after a restart it
// issues only ballots above every ballot it led with before. (A ballot seen
// only while a node was a candidate may have died with it before its
// Prepare left, so only ballots a node was master with bind its later
// incarnations.)
type monitor struct {
	c *Cluster

	mu   sync.Mutex
	last int // the master last seen, -1 for none
	n    int // master changes
	// Per node: the incarnation seen last, the highest ballot seen in it,
	// and the highest ballot it was master with in earlier incarnations
	// (and in which).
	inc      []int
	cur      []uint64
	led      []uint64
	ledInc   []int
	ledNow   []uint64
	wipes    []int // the directory generation these ballots belong to
	findings []string
}

func newMonitor(c *Cluster) *monitor {
	n := c.N()
	return &monitor{c: c, last: -1, inc: make([]int, n), cur: make([]uint64, n), led: make([]uint64, n),
		ledInc: make([]int, n), ledNow: make([]uint64, n), wipes: make([]int, n)}
}

func (m *monitor) run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		master := -1
		for i := range m.c.Addrs {
			if !m.c.Up(i) {
				continue
			}
			inc := m.c.Incarnation(i)
			st, err := m.c.Status(i, 300*time.Millisecond)
			if err != nil || m.c.Incarnation(i) != inc {
				continue // no answer, or maybe from an incarnation that has ended
			}
			if st.Role == "master" {
				master = i
			}
			m.ballot(i, inc, st.Ballot, st.Role == "master")
		}
		m.mu.Lock()
		if master >= 0 && master != m.last {
			if m.last >= 0 {
				m.n++
			}
			m.last = master
		}
		m.mu.Unlock()
	}
}

// ballot checks one reported ballot b of node i's incarnation inc.
func (m *monitor) ballot(i, inc int, b uint64, master bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	slot, wipes := m.c.Directory(i)
	if wipes != m.wipes[i] {
		// A wiped and replaced node: a new directory, a new slot, a new
		// history of ballots.
		m.wipes[i], m.cur[i], m.led[i], m.ledNow[i] = wipes, 0, 0, 0
	}
	if inc != m.inc[i] {
		// A new incarnation: what the last one led with binds it.
		if m.ledNow[i] > m.led[i] {
			m.led[i], m.ledInc[i] = m.ledNow[i], m.inc[i]
		}
		m.inc[i], m.cur[i], m.ledNow[i] = inc, 0, 0
	}
	if b == 0 {
		return
	}
	bal := idgen.Ballot(b)
	switch {
	case slot >= 0 && !idgen.Owns(bal, uint64(slot), idgen.DefaultK):
		m.findf("node %d reported ballot %d, which slot %d owns, not its slot %d", i+1, b, bal.Slot(idgen.DefaultK), slot)
	case b < m.cur[i]:
		m.findf("node %d's ballot went back from %d to %d (incarnation %d)", i+1, m.cur[i], b, inc)
	case b <= m.led[i]:
		m.findf("node %d (incarnation %d, after a restart) issued ballot %d, but it had been master with ballot %d in incarnation %d: a ballot reused", i+1, inc, b, m.led[i], m.ledInc[i])
	}
	m.cur[i] = max(m.cur[i], b)
	if master {
		m.ledNow[i] = max(m.ledNow[i], b)
	}
}

func (m *monitor) findf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	for _, f := range m.findings {
		if f == s {
			return
		}
	}
	m.findings = append(m.findings, s)
}

// problems returns the findings not returned before.
func (m *monitor) problems() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.findings
	m.findings = nil
	return out
}

func (m *monitor) changes() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}
