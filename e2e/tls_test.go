package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/e2e/internal/testca"
)

// tlsClient is a Go client of c over TLS, trusting ca, with the client
// certificate (cert, key) when given.
func tlsClient(t *testing.T, addrs []string, ca, cert, key string) *client.Client {
	t.Helper()
	cfg, err := client.TLSConfig(ca, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(addrs, client.Options{CallTimeout: 2 * time.Second, Retries: 30, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// waitMaster waits, through cl, for a node of c that reports itself master.
func waitMaster(t *testing.T, c *cluster, cl *client.Client) int {
	t.Helper()
	m := -1
	waitFor(t, "a master", func() bool {
		for i, a := range c.addrs {
			if st, err := cl.Status(context.Background(), a); err == nil && st.Role == "master" {
				m = i
				return true
			}
		}
		return false
	})
	return m
}

// A cluster with TLS and client certificates required serves appends and
// reads over TLS, to the Go client and the CLI (flags and environment),
// through a node that forwards to the master over TLS.
func TestTLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	ca := testca.New(t, dir, "paxosd")
	cert, key := ca.Issue("node", "node")
	ccert, ckey := ca.Issue("client", "client")
	c := newCluster(t, 3, "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca.File, "--client-cert-auth")
	cl := tlsClient(t, c.addrs, ca.File, ccert, ckey)
	m := waitMaster(t, c, cl)
	other := c.addrs[(m+1)%3] // not the master: it forwards
	fwd := tlsClient(t, []string{other}, ca.File, ccert, ckey)
	if _, err := fwd.Append(context.Background(), []byte("over-tls")); err != nil {
		t.Fatalf("append through node %s (forwarding to the master over TLS): %v", other, err)
	}
	out, errb, code := runCLI(t, "", "append", "--endpoints", other, "--cacert", ca.File, "--cert", ccert, "--key", ckey, "cli-flags")
	if code != 0 {
		t.Fatalf("paxosd append with --cacert --cert --key: exit %d: %s%s", code, out, errb)
	}
	cmd := []string{"read", "--endpoints", strings.Join(c.addrs, ","), "--from", "0"}
	t.Setenv("PAXOSD_CACERT", ca.File)
	t.Setenv("PAXOSD_CERT", ccert)
	t.Setenv("PAXOSD_KEY", ckey)
	out, errb, code = runCLI(t, "", cmd...)
	if code != 0 || !strings.Contains(out, "over-tls") || !strings.Contains(out, "cli-flags") {
		t.Fatalf("paxosd read with PAXOSD_CACERT, _CERT, _KEY: exit %d: %q %s", code, out, errb)
	}
	// paxosd bench takes the same flags (here from the environment).
	if out, errb, code := runCLI(t, "", "bench", "--endpoints", strings.Join(c.addrs, ","), "--clients", "2", "--total", "20", "--warmup", "0s", "--interval", "0"); code != 0 {
		t.Fatalf("paxosd bench over TLS: exit %d: %s%s", code, out, errb)
	}
	// Without a client certificate the handshake fails: nothing is served.
	nocert := tlsClient(t, c.addrs[:1], ca.File, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nocert.Status(ctx, c.addrs[0]); err == nil {
		t.Fatal("a client without a certificate got an answer from a node with --client-cert-auth")
	}
}

// A plaintext client of a TLS node, and a TLS client of a plaintext node,
// get an error that says so, within the timeout, rather than a hang.
func TestTLSMismatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	ca := testca.New(t, dir, "paxosd")
	cert, key := ca.Issue("node", "node")
	tlsNode := newCluster(t, 1, "--cert-file", cert, "--key-file", key)
	plainNode := newCluster(t, 1)
	waitMaster(t, tlsNode, tlsClient(t, tlsNode.addrs, ca.File, "", ""))
	waitMaster(t, plainNode, plainNode.client(t))

	for _, tc := range []struct {
		what string
		args []string
		want string
	}{
		{"plaintext client, TLS node", []string{"--endpoints", tlsNode.addrs[0]}, "--cacert"},
		{"TLS client, plaintext node", []string{"--endpoints", plainNode.addrs[0], "--cacert", ca.File}, "TLS"},
	} {
		start := time.Now()
		out, errb, code := runCLI(t, "", append([]string{"append", "--timeout", "3s"}, append(tc.args, "x")...)...)
		took := time.Since(start)
		if code == 0 || !strings.Contains(errb, tc.want) {
			t.Errorf("%s: exit %d after %v, stdout %q, stderr %q: want an error that mentions %q", tc.what, code, took, out, errb, tc.want)
		}
		t.Logf("%s: exit %d after %v: %s", tc.what, code, took.Round(time.Millisecond), strings.TrimSpace(errb))
	}
	if got := readLocal(t, plainNode.addrs[0]); len(got) != 0 {
		t.Errorf("the plaintext node's log is %q: want nothing appended", got)
	}
}

// A node reloads its certificate on SIGHUP: a new connection sees the new
// one, without a restart.
func TestTLSReload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	ca := testca.New(t, dir, "paxosd")
	cert, key := ca.Issue("node", "before")
	c := newCluster(t, 1, "--cert-file", cert, "--key-file", key)
	waitMaster(t, c, tlsClient(t, c.addrs, ca.File, "", ""))
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	served := func() string {
		conn, err := tls.Dial("tcp", c.addrs[0], &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("TLS handshake with the node: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "before" {
		t.Fatalf("the node serves %q, want before", got)
	}
	ca.Issue("node", "after") // same files, new certificate
	c.procs[0].Process.Signal(syscall.SIGHUP)
	waitFor(t, "the node to serve the new certificate", func() bool { return served() == "after" })
	// And it still serves the API over TLS.
	if _, err := tlsClient(t, c.addrs, ca.File, "", "").Append(context.Background(), []byte("after-reload")); err != nil {
		t.Fatalf("append after the reload: %v", err)
	}
}

// Peers with mutual TLS (their own CA, certificates naming the member by
// URI SAN) choose entries while clients use another CA; a node whose peer
// certificate names another member is refused by the others, in both
// directions.
func TestPeerTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes")
	}
	dir := t.TempDir()
	ca := testca.New(t, dir, "clients")
	pca := testca.New(t, dir, "peers")
	cert, key := ca.Issue("node", "node")
	c := newStoppedCluster(t, 3, "--cert-file", cert, "--key-file", key, "--peer-trusted-ca-file", pca.File)
	for i := range 3 {
		id := i + 1
		if i == 2 {
			id = 2 // node 3 holds a certificate naming member 2
		}
		pc, pk := pca.Issue(fmt.Sprintf("peer%d", i+1), fmt.Sprintf("node%d", i+1), fmt.Sprintf("paxosd://member/%d", id))
		c.flags[i] = []string{"--peer-cert-file", pc, "--peer-key-file", pk}
		c.start(i)
	}
	cl := tlsClient(t, c.addrs[:2], ca.File, "", "")
	waitMaster(t, c, cl)
	if _, err := cl.Append(context.Background(), []byte("peers-over-mtls")); err != nil {
		t.Fatalf("append with peer mutual TLS (nodes 1 and 2): %v", err)
	}
	logs := func(i int) string { b, _ := os.ReadFile(c.logPath(i)); return string(b) }
	waitFor(t, "nodes 1 or 2 to refuse node 3's batches", func() bool {
		for _, l := range strings.Split(logs(0)+logs(1), "\n") {
			if strings.Contains(l, `msg="batch rejected"`) && strings.Contains(l, " peer=3 ") && strings.Contains(l, `does not name node 3`) {
				return true
			}
		}
		return false
	})
	// Node 3 accepts no batch either: nothing reached its log.
	st, err := tlsClient(t, c.addrs[2:], ca.File, "", "").Status(context.Background(), c.addrs[2])
	if err != nil {
		t.Fatal(err)
	}
	if st.EndIndex != 0 {
		t.Errorf("node 3, with a certificate naming node 2, has entries up to index %d: want none", st.EndIndex)
	}
}
