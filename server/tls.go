package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TLSFiles are the files of a node's TLS set-up (paxosd server's
// --cert-file, --key-file, --trusted-ca-file, --client-cert-auth). The
// client API and the peer transport share one listener, so the listener
// has one certificate: CertFile. Peers and forwarding nodes dial with TLS
// too, verify the node they reach against TrustedCAFile and present
// CertFile as their own client certificate (so with ClientCertAuth it
// must allow client authentication as well as server authentication).
type TLSFiles struct {
	CertFile, KeyFile string
	// TrustedCAFile verifies the certificates of clients (when they
	// present one) and of the nodes this node dials; without it, the
	// system's roots verify the nodes dialed, and clients' certificates
	// are not requested.
	TrustedCAFile string
	// ClientCertAuth requires every connection to present a certificate
	// that TrustedCAFile verifies.
	ClientCertAuth bool
}

// Enabled says whether the files ask for TLS.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" }

// Check says what is missing or contradictory, before anything starts.
func (f TLSFiles) Check() error {
	switch {
	case f.CertFile == "" && f.KeyFile == "" && (f.TrustedCAFile != "" || f.ClientCertAuth):
		return errors.New("--trusted-ca-file and --client-cert-auth need --cert-file and --key-file: the node serves TLS only with a certificate of its own")
	case (f.CertFile == "") != (f.KeyFile == ""):
		return errors.New("--cert-file and --key-file go together: give both, or neither for plaintext")
	case f.ClientCertAuth && f.TrustedCAFile == "":
		return errors.New("--client-cert-auth needs --trusted-ca-file: the CA that signs the clients' certificates")
	}
	return nil
}

// tlsState is one loaded set of files.
type tlsState struct {
	cert  *tls.Certificate
	pool  *x509.CertPool // nil: none given
	stamp string         // the files' sizes and modification times
}

// TLSHolder holds a node's certificate and CA and reloads them: on Reload
// (paxosd server calls it on SIGHUP) and, on the next handshake, when a
// file's size or modification time changed. Every new connection reads
// the current state; open connections keep theirs. A reload that fails
// (a half-written file) keeps the previous state and is logged.
type TLSHolder struct {
	files   TLSFiles
	logf    func(string, ...any)
	mu      sync.Mutex
	cur     *tlsState
	checked time.Time // last look at the files' stamps
}

// NewTLSHolder loads the files, or says why it cannot.
func NewTLSHolder(files TLSFiles, logf func(string, ...any)) (*TLSHolder, error) {
	if err := files.Check(); err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	h := &TLSHolder{files: files, logf: logf}
	st, err := h.load()
	if err != nil {
		return nil, err
	}
	h.cur = st
	return h, nil
}

func (h *TLSHolder) stamp() string {
	var b bytes.Buffer
	for _, f := range []string{h.files.CertFile, h.files.KeyFile, h.files.TrustedCAFile} {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (h *TLSHolder) load() (*tlsState, error) {
	st := &tlsState{stamp: h.stamp()}
	cert, err := tls.LoadX509KeyPair(h.files.CertFile, h.files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--cert-file %s, --key-file %s: %w", h.files.CertFile, h.files.KeyFile, err)
	}
	st.cert = &cert
	if f := h.files.TrustedCAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--trusted-ca-file: %w", err)
		}
		st.pool = x509.NewCertPool()
		if !st.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--trusted-ca-file %s: no PEM certificate in it", f)
		}
	}
	return st, nil
}

// Reload reloads the files now; on an error the node keeps its previous
// certificate and CA.
func (h *TLSHolder) Reload() error {
	st, err := h.load()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checked = time.Now()
	if err != nil {
		h.logf("paxosd: TLS reload failed, keeping the previous certificate: %v", err)
		return err
	}
	h.cur = st
	h.logf("paxosd: TLS certificate and CA reloaded from %s", h.files.CertFile)
	return nil
}

// state returns the current state, reloading first if the files changed
// (looked at no more than every 100 ms).
func (h *TLSHolder) state() *tlsState {
	h.mu.Lock()
	cur, look := h.cur, time.Since(h.checked) >= 100*time.Millisecond
	if look {
		h.checked = time.Now()
	}
	h.mu.Unlock()
	if look && h.stamp() != cur.stamp {
		h.Reload()
		h.mu.Lock()
		cur = h.cur
		h.mu.Unlock()
	}
	return cur
}

// ServerConfig is the listener's TLS config: every handshake takes the
// current certificate and CA.
func (h *TLSHolder) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			st := h.state()
			c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*st.cert}, NextProtos: []string{"h2"}}
			switch {
			case h.files.ClientCertAuth:
				c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, st.pool
			case st.pool != nil:
				c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, st.pool
			}
			return c, nil
		},
	}
}

// DialConfig is the TLS config this node dials other nodes with (peers,
// and the master it forwards to): it presents the current certificate and
// verifies the other node's against the current CA (or the system roots),
// for the host it dials.
func (h *TLSHolder) DialConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return h.state().cert, nil
		},
		// Verified below against the CA of the moment (a reload may
		// change it), not against a pool fixed here.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the node presented no certificate")
			}
			opts := x509.VerifyOptions{Roots: h.state().pool, Intermediates: x509.NewCertPool(), DNSName: cs.ServerName}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		},
	}
}

// tlsOptions are the grpc.Server options and the dial credentials of a
// node with TLS on (nil, nil without).
func tlsOptions(h *TLSHolder) ([]grpc.ServerOption, credentials.TransportCredentials) {
	if h == nil {
		return nil, nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(h.ServerConfig()))}, credentials.NewTLS(h.DialConfig())
}
