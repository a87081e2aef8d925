package rpc

import (
	"bufio"
	"context"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// Role is what a caller may do.
type Role int

// Roles, each allowed what the one before is and more.
const (
	RoleNone   Role = iota
	RoleReader      // Read, Tail, Status, ListMembers
	RoleWriter      // and Append
	RoleAdmin       // and everything else: Trim, membership, snapshots, master transfer
)

func (r Role) String() string {
	switch r {
	case RoleReader:
		return "reader"
	case RoleWriter:
		return "writer"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// AuthorizationKey is the metadata key of a caller's bearer token:
// "authorization: Bearer TOKEN".
const AuthorizationKey = "authorization"

// methodRoles is the least role of each client API method; a method not
// listed (a newer one) needs admin.
var methodRoles = map[string]Role{
	paxosdpb.LogService_Read_FullMethodName:         RoleReader,
	paxosdpb.LogService_Tail_FullMethodName:         RoleReader,
	paxosdpb.LogService_Status_FullMethodName:       RoleReader,
	paxosdpb.LogService_ListMembers_FullMethodName:  RoleReader,
	paxosdpb.LogService_Append_FullMethodName:       RoleWriter,
	paxosdpb.LogService_AppendStream_FullMethodName: RoleWriter,
}

// Auth is a node's --auth-tokens-file: who may call what.
type Auth struct {
	tokens map[string]Role // bearer token -> role
	certs  map[string]Role // client certificate common name -> role
}

// ParseAuthFile reads a tokens file: one "TOKEN ROLE" or "cert:NAME ROLE"
// per line (ROLE: reader, writer or admin); blank lines and lines starting
// with # are skipped.
func ParseAuthFile(path string) (*Auth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-tokens-file: %w", err)
	}
	defer f.Close()
	a := &Auth{tokens: map[string]Role{}, certs: map[string]Role{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("--auth-tokens-file %s line %d: want TOKEN ROLE or cert:NAME ROLE", path, n)
		}
		var role Role
		switch fields[1] {
		case "reader":
			role = RoleReader
		case "writer":
			role = RoleWriter
		case "admin":
			role = RoleAdmin
		default:
			return nil, fmt.Errorf("--auth-tokens-file %s line %d: role %q: use reader, writer or admin", path, n, fields[1])
		}
		if name, ok := strings.CutPrefix(fields[0], "cert:"); ok {
			if name == "" {
				return nil, fmt.Errorf("--auth-tokens-file %s line %d: cert: needs a certificate common name", path, n)
			}
			a.certs[name] = role
			continue
		}
		a.tokens[fields[0]] = role
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--auth-tokens-file %s: %w", path, err)
	}
	if len(a.tokens)+len(a.certs) == 0 {
		return nil, fmt.Errorf("--auth-tokens-file %s lists nobody: every call would be refused", path)
	}
	return a, nil
}

// Summary says how many tokens and certificate names the file lists.
func (a *Auth) Summary() string {
	return fmt.Sprintf("%d tokens, %d certificate names", len(a.tokens), len(a.certs))
}

// role finds the caller's role: its bearer token's, else its verified
// client certificate's. ok is false when it presented neither.
func (a *Auth) role(ctx context.Context) (Role, bool, error) {
	if v := metadata.ValueFromIncomingContext(ctx, AuthorizationKey); len(v) > 0 {
		tok, ok := strings.CutPrefix(v[0], "Bearer ")
		if !ok {
			return RoleNone, true, status.Error(codes.Unauthenticated, "the authorization header must be \"Bearer TOKEN\"")
		}
		for t, r := range a.tokens {
			if subtle.ConstantTimeCompare([]byte(t), []byte(tok)) == 1 {
				return r, true, nil
			}
		}
		return RoleNone, true, status.Error(codes.Unauthenticated, "unknown token: not in this node's --auth-tokens-file")
	}
	if p, ok := grpcpeer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			cn := ti.State.VerifiedChains[0][0].Subject.CommonName
			if r, ok := a.certs[cn]; ok {
				return r, true, nil
			}
			return RoleNone, true, status.Errorf(codes.Unauthenticated, "client certificate %q is not in this node's --auth-tokens-file (cert:NAME ROLE)", cn)
		}
	}
	return RoleNone, false, nil
}

// check authorizes one call of method. The peer transport is not subject
// to it: peers are guarded by the listener's TLS.
func (a *Auth) check(ctx context.Context, method string) error {
	if a == nil || strings.HasPrefix(method, "/paxosd.peer.") {
		return nil
	}
	need, ok := methodRoles[method]
	if !ok {
		need = RoleAdmin
	}
	have, given, err := a.role(ctx)
	switch {
	case err != nil:
		return err
	case !given:
		return status.Error(codes.Unauthenticated, "this node requires authentication: give a token (--token or PAXOSD_TOKEN) or a client certificate listed in its --auth-tokens-file")
	case have < need:
		return status.Errorf(codes.PermissionDenied, "%s needs role %s; the caller's role is %s", method[strings.LastIndex(method, "/")+1:], need, have)
	}
	return nil
}

// ClusterKey is the metadata key of the cluster name a client expects
// (client.Options.Cluster, the CLI's --cluster-name): a node of another
// cluster refuses the call with FailedPrecondition before acting on it.
const ClusterKey = "paxosd-cluster"

// checkCluster refuses a client API call that expects another cluster than
// this node's (cluster).
func checkCluster(ctx context.Context, method, cluster string) error {
	if strings.HasPrefix(method, "/paxosd.peer.") {
		return nil // peer batches carry the cluster ID, which the transport checks
	}
	if v := metadata.ValueFromIncomingContext(ctx, ClusterKey); len(v) > 0 && v[0] != cluster {
		return status.Errorf(codes.FailedPrecondition, "this node is in cluster %q, not %q (--cluster-name): nothing was done", cluster, v[0])
	}
	return nil
}

// ServerOptions are the interceptors of a node of cluster: every client
// API call that expects another cluster is refused, then a (nil: the node
// serves everyone) decides who may call what.
func ServerOptions(a *Auth, cluster string) []grpc.ServerOption {
	check := func(ctx context.Context, method string) error {
		if err := checkCluster(ctx, method, cluster); err != nil {
			return err
		}
		return a.check(ctx, method)
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

// forwardIdentity carries the caller's token on a request this node
// forwards to the master, which checks it again: every node has the same
// tokens file. This node authorized the call before forwarding it; a caller
// known only by its certificate reaches the master as this node, whose own
// certificate (--cert-file) the master checks against its tokens file (list
// the nodes' names there as cert:NAME admin).
func forwardIdentity(ctx context.Context) context.Context {
	if v := metadata.ValueFromIncomingContext(ctx, AuthorizationKey); len(v) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, AuthorizationKey, v[0])
	}
	return ctx
}
