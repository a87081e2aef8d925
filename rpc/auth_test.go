package rpc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// A tokens file with a mistake is refused with the line and what is wrong.
func TestParseAuthFileErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"tok reader extra\n", "line 1: want TOKEN ROLE"},
		{"# c\ntok root\n", `line 2: role "root"`},
		{"cert: admin\n", "line 1: cert: needs a certificate common name"},
		{"# nobody\n", "lists nobody"},
	} {
		f := filepath.Join(t.TempDir(), "tokens")
		os.WriteFile(f, []byte(tc.text), 0o600)
		if _, err := ParseAuthFile(f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.text, err, tc.want)
		}
	}
}

// Each role may call its methods and no others; an unlisted method needs
// admin; peer traffic is not checked.
func TestAuthRoleTable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(f, []byte("r reader\nw writer\na admin\n"), 0o600)
	a, err := ParseAuthFile(f)
	if err != nil {
		t.Fatal(err)
	}
	call := func(token, method string) codes.Code {
		ctx := context.Background()
		if token != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(AuthorizationKey, "Bearer "+token))
		}
		return status.Code(a.check(ctx, method))
	}
	for _, tc := range []struct {
		token, method string
		want          codes.Code
	}{
		{"", paxosdpb.LogService_Read_FullMethodName, codes.Unauthenticated},
		{"x", paxosdpb.LogService_Read_FullMethodName, codes.Unauthenticated},
		{"r", paxosdpb.LogService_Read_FullMethodName, codes.OK},
		{"r", paxosdpb.LogService_Tail_FullMethodName, codes.OK},
		{"r", paxosdpb.LogService_ListMembers_FullMethodName, codes.OK},
		{"r", paxosdpb.LogService_Append_FullMethodName, codes.PermissionDenied},
		{"w", paxosdpb.LogService_Append_FullMethodName, codes.OK},
		{"r", paxosdpb.LogService_AppendStream_FullMethodName, codes.PermissionDenied},
		{"w", paxosdpb.LogService_AppendStream_FullMethodName, codes.OK},
		{"", paxosdpb.LogService_AppendStream_FullMethodName, codes.Unauthenticated},
		{"w", paxosdpb.LogService_Trim_FullMethodName, codes.PermissionDenied},
		{"w", paxosdpb.LogService_ChangeMembers_FullMethodName, codes.PermissionDenied},
		{"w", paxosdpb.LogService_Snapshot_FullMethodName, codes.PermissionDenied},
		{"w", paxosdpb.LogService_TransferMaster_FullMethodName, codes.PermissionDenied},
		{"a", paxosdpb.LogService_Trim_FullMethodName, codes.OK},
		{"a", "/paxosd.v1.LogService/Future", codes.OK},
		{"w", "/paxosd.v1.LogService/Future", codes.PermissionDenied},
		{"", paxosdpb.Peer_Send_FullMethodName, codes.OK},
	} {
		if got := call(tc.token, tc.method); got != tc.want {
			t.Errorf("token %q, %s: %v, want %v", tc.token, tc.method, got, tc.want)
		}
	}
}
