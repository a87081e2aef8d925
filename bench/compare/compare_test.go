package main

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// runApp runs the tool in-process with args and returns its error, or
// fails the test if it has not returned within deadline.
func runApp(t *testing.T, deadline time.Duration, args ...string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- newApp().Run(append([]string{"compare"}, args...)) }()
	select {
	case err := <-done:
		return err
	case <-time.After(deadline):
		t.Fatalf("compare %s: still running after %v", strings.Join(args, " "), deadline)
		return nil
	}
}

// closedPort is a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// silentServer accepts connections and never answers (it reads and
// discards what comes); its connections close with the test.
func silentServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestTimeoutBoundsConnecting: with nothing listening, or a server that
// accepts and never answers, each target gives up with an error after about
// --timeout instead of hanging (etcd's client waits for a connection for as
// long as its context lasts; ZooKeeper's requests take no context). The
// deadline is generous: the condition is "returned with an error".
func TestTimeoutBoundsConnecting(t *testing.T) {
	for _, target := range []string{"etcd", "zookeeper", "paxosd"} {
		for _, ep := range []struct{ name, addr string }{{"closed port", closedPort(t)}, {"silent server", silentServer(t)}} {
			t.Run(target+"/"+ep.name, func(t *testing.T) {
				t.Parallel()
				err := runApp(t, 60*time.Second, "--target", target, "--endpoints", ep.addr, "--timeout", "1s",
					"--clients", "1", "--duration", "1s", "--warmup", "0s", "--interval", "0")
				if err == nil {
					t.Fatalf("compare --target %s against %s (%s) succeeded", target, ep.addr, ep.name)
				}
				t.Logf("error: %v", err)
			})
		}
	}
}

// TestBadFlags: refused before anything is sent, with an error that names
// the flag; the endpoint is a closed port, so a refusal that tried to
// connect would say so instead.
func TestBadFlags(t *testing.T) {
	ep := closedPort(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--target", "etcd"}, []string{"--target etcd needs --endpoints"}},
		{[]string{"--target", "zookeeper"}, []string{"--endpoints"}},
		{[]string{"--target", "redis", "--endpoints", ep}, []string{"--target", "paxosd", "etcd", "zookeeper"}},
		{[]string{"--target", "etcd", "--endpoints", ep, "--batch", "129"}, []string{"--batch 129", "128", "etcd"}},
		{[]string{"--target", "zookeeper", "--endpoints", ep, "--inflight", "1025"}, []string{"--inflight 1025"}},
		{[]string{"--target", "paxosd", "--endpoints", ep, "--inflight", "33"}, []string{"--inflight 33", "32"}},
		{[]string{"--target", "etcd", "--endpoints", ep, "--server-pids", "0"}, []string{"--server-pids", "positive"}},
		{[]string{"--no-such-flag"}, []string{"no-such-flag", "compare --help"}},
	} {
		err := runApp(t, 30*time.Second, tc.args...)
		if err == nil {
			t.Errorf("%v: accepted", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not mention %q", tc.args, err, w)
			}
		}
	}
}
