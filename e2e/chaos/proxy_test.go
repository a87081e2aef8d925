package chaos

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer answers every connection with what it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func dialProxy(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within d.
func roundTrip(c net.Conn, msg []byte, d time.Duration) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, msg) {
		return errors.New("echo differs")
	}
	return nil
}

// The proxy forwards, stalls (holding bytes and delivering them once
// open), delays, resets and breaks connections, as the nemesis needs.
func TestProxy(t *testing.T) {
	p, err := NewProxy(echoServer(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	c := dialProxy(t, p)
	if err := roundTrip(c, []byte("open"), 5*time.Second); err != nil {
		t.Fatalf("open link: %v", err)
	}

	// Stalled: nothing comes back, and it all does once the link opens.
	p.Set(LinkState{Block: Stall})
	if err := roundTrip(c, []byte("held"), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stalled link: want a read timeout, got %v", err)
	}
	p.Set(LinkState{})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "held" {
		t.Fatalf("after the stall: %q, %v", buf, err)
	}

	// Delayed: a round trip takes at least the delay each way.
	p.Set(LinkState{Delay: 100 * time.Millisecond})
	start := time.Now()
	if err := roundTrip(c, []byte("slow"), 5*time.Second); err != nil {
		t.Fatalf("delayed link: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("delayed link: a round trip took %v, want at least 200ms", d)
	}

	// Reset: open connections break, new ones are refused.
	p.Set(LinkState{Block: Reset})
	if err := roundTrip(c, []byte("gone"), 5*time.Second); err == nil {
		t.Fatal("reset link: the old connection still works")
	}
	c2 := dialProxy(t, p)
	if err := roundTrip(c2, []byte("refused"), 5*time.Second); err == nil {
		t.Fatal("reset link: a new connection works")
	}

	// Loss 1: the first chunk breaks the connection.
	p.Set(LinkState{Loss: 1})
	c3 := dialProxy(t, p)
	if err := roundTrip(c3, []byte("lost"), 5*time.Second); err == nil {
		t.Fatal("lossy link: the chunk got through")
	}

	p.Set(LinkState{})
	c4 := dialProxy(t, p)
	if err := roundTrip(c4, []byte("healed"), 5*time.Second); err != nil {
		t.Fatalf("healed link: %v", err)
	}
	if st := p.Stats(); st.Refused < 1 || st.Broken < 2 {
		t.Fatalf("stats %+v: want a refused connection and two broken ones", st)
	}
}
