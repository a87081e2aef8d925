package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/paxosd/paxosd/client"
	"github.com/paxosd/paxosd/rpc"
	"github.com/paxosd/paxosd/server"
)

// securityFlags are paxosd server's TLS and authentication flags (named
// as etcd's; docs/operations.md, "TLS and authentication").
var securityFlags = []cli.Flag{
	&cli.StringFlag{Name: "cert-file", Usage: "serve clients TLS with this PEM certificate (clients and peers share the port: see docs/operations.md, TLS and authentication); without the --peer-* flags the node also presents it when it dials peers and the master, so give it the node's address as a SAN and server and client authentication. Reloaded on SIGHUP and when the file changes"},
	&cli.StringFlag{Name: "key-file", Usage: "the PEM private key of --cert-file"},
	&cli.StringFlag{Name: "trusted-ca-file", Usage: "PEM CA that verifies client certificates and, without the --peer-* flags, the nodes this node dials (default for the latter: the system's roots)"},
	&cli.BoolFlag{Name: "client-cert-auth", Usage: "require every client connection to present a certificate --trusted-ca-file verifies (peers too, unless the --peer-* flags give them their own mutual TLS)"},
	&cli.StringFlag{Name: "peer-cert-file", Usage: "mutual TLS between nodes: this node's PEM peer certificate, which must name it with the URI SAN paxosd://member/ID (and allow server and client authentication); peers ask for it on the shared port by TLS server name " + server.PeerServerName + ". Reloaded on SIGHUP and when the file changes"},
	&cli.StringFlag{Name: "peer-key-file", Usage: "the PEM private key of --peer-cert-file"},
	&cli.StringFlag{Name: "peer-trusted-ca-file", Usage: "PEM CA that verifies the peers' certificates (all three --peer-* flags go together)"},
	&cli.StringFlag{Name: "auth-tokens-file", Usage: "require callers to authenticate: lines of \"TOKEN ROLE\" or \"cert:NAME ROLE\" (a client certificate's common name), ROLE reader (read, tail, status, members list), writer (and append) or admin (everything); without it the node serves everyone"},
}

// tlsClientFlags are every client command's TLS and token flags.
var tlsClientFlags = []cli.Flag{
	&cli.StringFlag{Name: "cacert", EnvVars: []string{"PAXOSD_CACERT"}, Usage: "connect with TLS, verifying the nodes with this PEM CA"},
	&cli.StringFlag{Name: "cert", EnvVars: []string{"PAXOSD_CERT"}, Usage: "connect with TLS, presenting this PEM client certificate (with --key)"},
	&cli.StringFlag{Name: "key", EnvVars: []string{"PAXOSD_KEY"}, Usage: "the PEM private key of --cert"},
	&cli.StringFlag{Name: "token", EnvVars: []string{"PAXOSD_TOKEN"}, Usage: "bearer token for nodes started with --auth-tokens-file (send it over TLS off loopback)"},
	&cli.StringFlag{Name: "cluster-name", EnvVars: []string{"PAXOSD_CLUSTER"}, Usage: "the cluster's name (paxosd server --cluster) this command must reach: a node of another cluster refuses every request, and nothing is done"},
}

func init() { clientFlags = append(clientFlags, tlsClientFlags...) }

// clientSecurity fills opt's TLS and token from the client flags.
func clientSecurity(c *cli.Context, opt client.Options) (client.Options, error) {
	opt.Token, opt.Cluster = c.String("token"), c.String("cluster-name")
	if err := errors.Join(client.CheckMetadata("--token", opt.Token), client.CheckMetadata("--cluster-name", opt.Cluster)); err != nil {
		return opt, usageErr(err)
	}
	if c.String("cacert") == "" && c.String("cert") == "" && c.String("key") == "" {
		return opt, nil
	}
	cfg, err := client.TLSConfig(c.String("cacert"), c.String("cert"), c.String("key"))
	if err != nil {
		return opt, usageErr(err)
	}
	opt.TLS = cfg
	return opt, nil
}

// serverSecurity loads the server's TLS files and tokens file, and reloads
// the TLS files on SIGHUP. It returns what the start-up line says of them.
func serverSecurity(c *cli.Context, log *slog.Logger) (*server.TLSHolder, *rpc.Auth, string, error) {
	files := server.TLSFiles{CertFile: c.String("cert-file"), KeyFile: c.String("key-file"),
		TrustedCAFile: c.String("trusted-ca-file"), ClientCertAuth: c.Bool("client-cert-auth"),
		PeerCertFile: c.String("peer-cert-file"), PeerKeyFile: c.String("peer-key-file"), PeerTrustedCAFile: c.String("peer-trusted-ca-file")}
	if err := files.Check(); err != nil {
		return nil, nil, "", usageErr(err)
	}
	var auth *rpc.Auth
	authLine := "no --auth-tokens-file: serving every caller"
	if f := c.String("auth-tokens-file"); f != "" {
		var err error
		if auth, err = rpc.ParseAuthFile(f); err != nil {
			return nil, nil, "", usageErr(err)
		}
		authLine = "authentication required (" + auth.Summary() + ")"
	}
	if !files.Enabled() {
		return nil, auth, "plaintext, " + authLine, nil
	}
	h, err := server.NewTLSHolder(files, log)
	if err != nil {
		return nil, nil, "", err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			h.Reload()
		}
	}()
	tlsLine := "TLS"
	switch {
	case files.CertFile == "":
		tlsLine += " with the peer certificate only"
	case files.ClientCertAuth:
		tlsLine += " with client certificates required"
	}
	if files.PeerCertFile != "" {
		tlsLine += ", peer mutual TLS"
	}
	return h, auth, fmt.Sprintf("%s, %s", tlsLine, authLine), nil
}

// readGossipKey reads --gossip-key-file: 16, 24 or 32 bytes in base64 (nil
// without the flag).
func readGossipKey(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file %s: not base64: %w (make a key with: head -c 32 /dev/urandom | base64)", file, err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("--gossip-key-file %s: a key of %d bytes; give 16, 24 or 32 (make one with: head -c 32 /dev/urandom | base64)", file, len(key))
}
