package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	grpcpeer "google.golang.org/grpc/peer"

	"github.com/paxosd/paxosd/event"
)

// TLSFiles are the files of a node's TLS set-up (paxosd server's flags,
// named as etcd's; docs/operations.md, "TLS and authentication").
//
// The client API and the peer transport share one listener. Clients get
// CertFile. A node dialing a peer (or forwarding to the master) asks, by
// TLS server name (SNI) PeerServerName, for the peer configuration: the
// listener then presents PeerCertFile and requires a client certificate
// that PeerTrustedCAFile verifies, and the Peer service accepts batches
// only over such a connection, from the member its certificate names
// (MemberURI). Without the peer files, peers use CertFile and
// TrustedCAFile like any client.
type TLSFiles struct {
	CertFile, KeyFile string
	// TrustedCAFile verifies the certificates of clients (when they
	// present one) and, without peer files, of the nodes this node dials
	// (without it: the system's roots).
	TrustedCAFile string
	// ClientCertAuth requires every client connection to present a
	// certificate that TrustedCAFile verifies.
	ClientCertAuth bool
	// PeerCertFile, PeerKeyFile and PeerTrustedCAFile, all three or none,
	// secure the links between nodes with mutual TLS.
	PeerCertFile, PeerKeyFile, PeerTrustedCAFile string
}

// PeerServerName is the TLS server name a node dials its peers with, which
// selects the peer configuration of the shared listener. It is a name, not
// an address: the peer's certificate is checked for MemberURI instead.
const PeerServerName = "peer.paxosd.invalid"

// MemberURI is the URI SAN a peer certificate must carry for node id:
// paxosd://member/ID.
func MemberURI(id uint64) string { return "paxosd://member/" + strconv.FormatUint(id, 10) }

func namesMember(c *x509.Certificate, id uint64) bool {
	for _, u := range c.URIs {
		if u.String() == MemberURI(id) {
			return true
		}
	}
	return false
}

func (f TLSFiles) peer() bool {
	return f.PeerCertFile != "" || f.PeerKeyFile != "" || f.PeerTrustedCAFile != ""
}

// Enabled says whether the files ask for TLS.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.peer() }

// Check says what is missing or contradictory, before anything starts.
func (f TLSFiles) Check() error {
	switch {
	case f.CertFile == "" && f.KeyFile == "" && (f.TrustedCAFile != "" || f.ClientCertAuth):
		return errors.New("--trusted-ca-file and --client-cert-auth need --cert-file and --key-file: the node serves clients TLS only with a certificate of its own")
	case (f.CertFile == "") != (f.KeyFile == ""):
		return errors.New("--cert-file and --key-file go together: give both, or neither for plaintext")
	case f.ClientCertAuth && f.TrustedCAFile == "":
		return errors.New("--client-cert-auth needs --trusted-ca-file: the CA that signs the clients' certificates")
	case f.peer() && (f.PeerCertFile == "" || f.PeerKeyFile == "" || f.PeerTrustedCAFile == ""):
		return errors.New("--peer-cert-file, --peer-key-file and --peer-trusted-ca-file go together: peers always use mutual TLS")
	}
	return nil
}

// tlsState is one loaded certificate and CA.
type tlsState struct {
	cert  *tls.Certificate
	pool  *x509.CertPool // nil: none given
	stamp string         // the files' sizes and modification times
}

// certSet is one certificate, key and CA, with the flags that name them.
type certSet struct {
	cert, key, ca    string
	keyFlags, caFlag string // the flags that name them, for errors
	cur              *tlsState
	failed           string // the stamp of files that failed to load: not retried until they change (logged once)
}

func (s *certSet) stamp() string {
	var b bytes.Buffer
	for _, f := range []string{s.cert, s.key, s.ca} {
		if fi, err := os.Stat(f); f != "" && err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (s *certSet) load() (*tlsState, error) {
	st := &tlsState{stamp: s.stamp()}
	cert, err := tls.LoadX509KeyPair(s.cert, s.key)
	if err != nil {
		return nil, fmt.Errorf("%s (%s, %s): %w", s.keyFlags, s.cert, s.key, err)
	}
	st.cert = &cert
	if s.ca != "" {
		pem, err := os.ReadFile(s.ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.caFlag, err)
		}
		st.pool = x509.NewCertPool()
		if !st.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in it", s.caFlag, s.ca)
		}
	}
	return st, nil
}

// TLSHolder holds a node's certificates and CAs and reloads them: on
// Reload (paxosd server calls it on SIGHUP) and, on the next handshake,
// when a file's size or modification time changed. Every new connection
// reads the current state; open connections keep theirs. A reload that
// fails (a half-written file) keeps the previous state and is logged.
type TLSHolder struct {
	files        TLSFiles
	log          *slog.Logger
	mu           sync.Mutex
	client, peer *certSet // nil: not configured
	checked      time.Time
}

// NewTLSHolder loads the files, or says why it cannot. Reloads are logged
// to log (nil: discarded).
func NewTLSHolder(files TLSFiles, log *slog.Logger) (*TLSHolder, error) {
	if err := files.Check(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &TLSHolder{files: files, log: log}
	if files.CertFile != "" {
		h.client = &certSet{cert: files.CertFile, key: files.KeyFile, ca: files.TrustedCAFile, keyFlags: "--cert-file and --key-file", caFlag: "--trusted-ca-file"}
	}
	if files.peer() {
		h.peer = &certSet{cert: files.PeerCertFile, key: files.PeerKeyFile, ca: files.PeerTrustedCAFile, keyFlags: "--peer-cert-file and --peer-key-file", caFlag: "--peer-trusted-ca-file"}
	}
	for _, s := range h.sets() {
		st, err := s.load()
		if err != nil {
			return nil, err
		}
		s.cur = st
	}
	return h, nil
}

func (h *TLSHolder) sets() []*certSet {
	var out []*certSet
	for _, s := range []*certSet{h.client, h.peer} {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Reload reloads the files now; a set that fails keeps its previous
// certificate and CA.
func (h *TLSHolder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checked = time.Now()
	return h.reloadLocked(false)
}

func (h *TLSHolder) reloadLocked(changedOnly bool) error {
	var errs []error
	for _, s := range h.sets() {
		stamp := s.stamp()
		if changedOnly && (stamp == s.cur.stamp || stamp == s.failed) {
			continue
		}
		st, err := s.load()
		if err != nil {
			s.failed = stamp
			h.log.Warn(event.TLSReloadFailed, event.KeyErr, err, event.KeyReason, "keeping the previous certificate")
			errs = append(errs, err)
			continue
		}
		s.cur = st
		h.log.Info(event.TLSReloaded, "cert", s.cert)
	}
	return errors.Join(errs...)
}

// current returns the current client and peer states (nil when not
// configured), reloading first what changed (looked at no more than every
// 100 ms).
func (h *TLSHolder) current() (client, peer *tlsState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.checked) >= 100*time.Millisecond {
		h.checked = time.Now()
		h.reloadLocked(true)
	}
	if h.client != nil {
		client = h.client.cur
	}
	if h.peer != nil {
		peer = h.peer.cur
	}
	return client, peer
}

// ServerConfig is the listener's TLS config: every handshake takes the
// current certificates and CAs, the peer ones for PeerServerName.
func (h *TLSHolder) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			cl, pr := h.current()
			c := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
			switch {
			case pr != nil && (hello.ServerName == PeerServerName || cl == nil):
				// Peers, and clients of a node with peer TLS only: the
				// peer certificate; only peers can answer its request.
				c.Certificates = []tls.Certificate{*pr.cert}
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pr.pool
				if hello.ServerName != PeerServerName {
					c.ClientAuth, c.ClientCAs = tls.NoClientCert, nil
				}
			default:
				c.Certificates = []tls.Certificate{*cl.cert}
				switch {
				case h.files.ClientCertAuth:
					c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, cl.pool
				case cl.pool != nil:
					c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, cl.pool
				}
			}
			return c, nil
		},
	}
}

// dialConfig is the TLS config this node dials another node with: to peer
// id with the peer files (id 0: any member, when forwarding to the master
// by address), else with the client files, for the host it dials.
func (h *TLSHolder) dialConfig(id uint64) *tls.Config {
	usePeer := h.peer != nil
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cl, pr := h.current()
			if usePeer {
				return pr.cert, nil
			}
			return cl.cert, nil
		},
		// Verified below against the CA of the moment (a reload may
		// change it), not against a pool fixed here.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the node presented no certificate")
			}
			cl, pr := h.current()
			st := cl
			if usePeer {
				st = pr
			}
			opts := x509.VerifyOptions{Roots: st.pool, Intermediates: x509.NewCertPool()}
			if !usePeer {
				opts.DNSName = cs.ServerName
			}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(opts); err != nil {
				return err
			}
			if usePeer && id != 0 && !namesMember(leaf, id) {
				return fmt.Errorf("the peer certificate of the node dialed as node %d does not name it (URI SAN %s)", id, MemberURI(id))
			}
			return nil
		},
	}
	if usePeer {
		c.ServerName = PeerServerName
	}
	return c
}

// DialConfig is the TLS config this node dials the master (forwarding) or
// a member it joins through with.
func (h *TLSHolder) DialConfig() *tls.Config { return h.dialConfig(0) }

// checkSender requires a peer batch claiming to come from node from to
// arrive over a peer mTLS connection whose certificate names that node.
func (h *TLSHolder) checkSender(ctx context.Context, from uint64) error {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok {
		return errors.New("no connection information")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || ti.State.ServerName != PeerServerName || len(ti.State.VerifiedChains) == 0 {
		return errors.New("not a peer TLS connection: peers dial with their --peer-cert-file")
	}
	if leaf := ti.State.VerifiedChains[0][0]; !namesMember(leaf, from) {
		return fmt.Errorf("its certificate (CN %q) does not name node %d (URI SAN %s)", leaf.Subject.CommonName, from, MemberURI(from))
	}
	return nil
}

// nodeTLS is what the server wires for TLS: the listener's options, the
// credentials to forward with and to dial peer id with, and the check of
// a peer batch's sender (all nil without TLS).
type nodeTLS struct {
	serverOpts  []grpc.ServerOption
	forward     credentials.TransportCredentials
	peer        func(id uint64) credentials.TransportCredentials
	checkSender func(ctx context.Context, from uint64) error
}

func tlsOptions(h *TLSHolder) nodeTLS {
	if h == nil {
		return nodeTLS{}
	}
	n := nodeTLS{
		serverOpts: []grpc.ServerOption{grpc.Creds(credentials.NewTLS(h.ServerConfig()))},
		forward:    credentials.NewTLS(h.DialConfig()),
		peer:       func(id uint64) credentials.TransportCredentials { return credentials.NewTLS(h.dialConfig(id)) },
	}
	if h.peer != nil {
		n.checkSender = h.checkSender
	}
	return n
}
