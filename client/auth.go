package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/api"
	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// callCreds sends Options.Token and Options.Cluster with every call.
type callCreds struct{ token, cluster string }

func (c callCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	md := map[string]string{}
	if c.token != "" {
		md["authorization"] = "Bearer " + c.token
	}
	if c.cluster != "" {
		md["paxosd-cluster"] = c.cluster
	}
	return md, nil
}

// RequireTransportSecurity is false: a token may travel over plaintext to
// a node without TLS (on loopback, say); use TLS anywhere else.
func (callCreds) RequireTransportSecurity() bool { return false }

// CheckMetadata refuses a token or cluster name that gRPC could not send
// as a header value (printable ASCII only): sent anyway, every call would
// fail inside gRPC with Internal, after the command had begun, and an
// append would be reported as of unknown outcome although nothing left.
func CheckMetadata(name, v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("client: the %s has byte %#02x at offset %d, which a gRPC header cannot carry (a trailing newline from a file?)", name, c, i)
		}
	}
	return nil
}

// DialOptions are the gRPC dial options that carry opt's TLS, Token and
// Cluster, for a program that dials a node itself (paxosd snapshot save).
func DialOptions(opt Options) []grpc.DialOption {
	creds := insecure.NewCredentials()
	if opt.TLS != nil {
		creds = credentials.NewTLS(opt.TLS)
	}
	opts := append(api.DialWindow(), grpc.WithTransportCredentials(creds))
	if opt.Token != "" || opt.Cluster != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(callCreds{opt.Token, opt.Cluster}))
	}
	return opts
}

// TLSConfig builds a client TLS config from PEM files: caFile verifies the
// nodes (empty: the system's roots), certFile and keyFile are the client's
// own certificate for nodes that ask for one (both or neither).
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--cert and --key go together: give both, or neither")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert %s, --key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// connError says why cc, in TRANSIENT_FAILURE, could not connect: a call
// on it fails at once with the last connection error, and sends nothing.
// A TLS mismatch gets a hint of what to change.
func (c *Client) connError(cc *grpc.ClientConn) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := paxosdpb.NewLogServiceClient(cc).Status(ctx, &paxosdpb.StatusRequest{})
	if err == nil {
		return "connection TRANSIENT_FAILURE"
	}
	msg := status.Convert(err).Message()
	switch {
	case c.opt.TLS != nil && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return msg + "; the node does not serve TLS: connect without --cacert, --cert and --key"
	case c.opt.TLS == nil && (strings.Contains(msg, "server preface") || strings.Contains(msg, "EOF")):
		return msg + "; does the node serve TLS? then give --cacert (and --cert, --key if it wants a client certificate)"
	}
	return msg
}
