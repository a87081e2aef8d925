package chaos

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Block says what a link does with the bytes it carries.
type Block int

const (
	// Open forwards bytes (subject to Delay and Loss).
	Open Block = iota
	// Stall holds bytes, as a network that silently drops packets does:
	// nothing gets through, connections stay open until keepalives give up,
	// and what was held is delivered (TCP retransmits) once the link opens.
	Stall
	// Reset closes every connection on the link and refuses new ones, as a
	// network that answers with resets does.
	Reset
)

func (b Block) String() string {
	return [...]string{"open", "stall", "reset"}[b]
}

// LinkState is what a Proxy does to the traffic of one link.
type LinkState struct {
	Block Block
	// Delay holds each chunk of bytes this long (plus up to Jitter more)
	// before forwarding it; order is kept.
	Delay, Jitter time.Duration
	// Loss is the probability that forwarding a chunk breaks its connection
	// instead (what was in flight on it is lost; gRPC reconnects).
	Loss float64
}

// ProxyStats counts what a proxy did.
type ProxyStats struct {
	Conns   uint64 // connections accepted and forwarded
	Refused uint64 // connections closed at once: link reset, or target down
	Broken  uint64 // connections broken by Loss or a Reset
	Bytes   uint64 // bytes forwarded, both ways
}

// Proxy forwards every TCP connection made to it to one target address,
// both ways, with a LinkState the harness changes at any time. One proxy
// carries one ordered pair of nodes (i dials j): paxosd's peer transport
// sends i's messages to j over connections i opens, so a proxy is one
// direction of the link, and blocking it is one-way loss.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	st      LinkState
	changed chan struct{} // closed and replaced when st changes
	conns   map[*proxyConn]struct{}
	rng     *rand.Rand
	closed  bool

	conns1, refused, broken, bytes atomic.Uint64
	wg                             sync.WaitGroup
}

// NewProxy listens on a free 127.0.0.1 port and forwards to target. seed
// drives its random choices (loss, jitter).
func NewProxy(target string, seed uint64) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, changed: make(chan struct{}), conns: map[*proxyConn]struct{}{},
		rng: rand.New(rand.NewPCG(seed, 0x5bd1e995))}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// State returns the link's current state.
func (p *Proxy) State() LinkState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// Set changes the link's state. Reset breaks every open connection at once.
func (p *Proxy) Set(st LinkState) {
	p.mu.Lock()
	p.st = st
	close(p.changed)
	p.changed = make(chan struct{})
	var cut []*proxyConn
	if st.Block == Reset {
		for c := range p.conns {
			cut = append(cut, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cut {
		c.close(true)
	}
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{Conns: p.conns1.Load(), Refused: p.refused.Load(), Broken: p.broken.Load(), Bytes: p.bytes.Load()}
}

// Close stops listening, breaks every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	var all []*proxyConn
	for c := range p.conns {
		all = append(all, c)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, c := range all {
		c.close(false)
	}
	p.wg.Wait()
}

func (p *Proxy) state() (LinkState, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st, p.changed
}

// draw returns a uniform number in [0,1) and a jitter in [0, j].
func (p *Proxy) draw(j time.Duration) (float64, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var d time.Duration
	if j > 0 {
		d = time.Duration(p.rng.Int64N(int64(j) + 1))
	}
	return p.rng.Float64(), d
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		st, _ := p.state()
		if st.Block == Reset {
			p.refused.Add(1)
			in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			p.refused.Add(1) // the target is down: the dialer sees its connection close
			in.Close()
			continue
		}
		c := &proxyConn{p: p, in: in, out: out, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.conns1.Add(1)
		p.wg.Add(4)
		go c.pipe(in, out)
		go c.pipe(out, in)
	}
}

// proxyConn is one forwarded connection.
type proxyConn struct {
	p       *Proxy
	in, out net.Conn
	once    sync.Once
	done    chan struct{}
}

// close closes both sides, once. A connection the link broke is counted
// before it closes, so whoever sees it closed sees it counted.
func (c *proxyConn) close(broken bool) {
	c.once.Do(func() {
		if broken {
			c.p.broken.Add(1)
		}
		close(c.done)
		c.in.Close()
		c.out.Close()
		c.p.mu.Lock()
		delete(c.p.conns, c)
		c.p.mu.Unlock()
	})
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe forwards src to dst: a reader goroutine queues what it reads, and
// the writer forwards each chunk when the link's state lets it.
func (c *proxyConn) pipe(src, dst net.Conn) {
	q := make(chan chunk, 64)
	go func() {
		defer c.p.wg.Done()
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{b: buf[:n], at: time.Now()}:
				case <-c.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer c.p.wg.Done()
	defer c.close(false)
	var last time.Time // release time of the previous chunk: order is kept
	for ch := range q {
		release, ok := c.wait(ch, last)
		if !ok {
			return
		}
		last = release
		if _, err := dst.Write(ch.b); err != nil {
			return
		}
		c.p.bytes.Add(uint64(len(ch.b)))
	}
}

// wait holds ch until the link lets it through: not stalled, its delay
// served. It returns false when the connection must end instead (closed,
// reset, or broken by loss).
func (c *proxyConn) wait(ch chunk, last time.Time) (time.Time, bool) {
	x, jitter := c.p.draw(c.p.State().Jitter)
	for {
		st, changed := c.p.state()
		switch st.Block {
		case Reset:
			c.close(true)
			return last, false
		case Stall:
			select {
			case <-changed:
				continue
			case <-c.done:
				return last, false
			}
		}
		release := ch.at.Add(st.Delay + min(jitter, st.Jitter))
		if release.Before(last) {
			release = last
		}
		if d := time.Until(release); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-changed:
				t.Stop()
				continue // the state changed while waiting: look again
			case <-c.done:
				t.Stop()
				return last, false
			}
		}
		if st.Loss > 0 && x < st.Loss {
			c.close(true)
			return last, false
		}
		return release, true
	}
}
