// Package api is the client API's contract beside the generated messages
// (rpc/paxosdpb): the typed errors a server returns and a client parses,
// their reasons, and the response headers. It imports nothing of the
// server, so that the Go client (and any program linking it) does not
// either.
package api

import (
	"fmt"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/paxosd/paxosd/rpc/paxosdpb"
)

// The typed errors of the client API (docs/operations.md "Errors",
// rpc/paxosdpb/log.proto).
// Each constructor returns a gRPC status error with a detail attached by
// status.WithDetails; each parser accepts any error that carries a gRPC
// status, wrapped or not (status.FromError unwraps), and reports ok = false
// for everything else. A server returns these errors as they are; a client
// receives them back from the generated stubs and parses them here.

// WithDetails builds a status error with details. Attaching a detail fails
// only if it cannot be marshalled, which cannot happen for these messages;
// should it happen anyway, the error keeps its code and message.
func WithDetails(c codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st := status.New(c, msg)
	if ds, err := st.WithDetails(details...); err == nil {
		st = ds
	}
	return st.Err()
}

// detail returns the first detail of type T in err's status.
func Detail[T any](err error) (*status.Status, T, bool) {
	var zero T
	st, ok := status.FromError(err)
	if !ok || st == nil || err == nil {
		return nil, zero, false
	}
	for _, d := range st.Details() {
		if t, ok := d.(T); ok {
			return st, t, true
		}
	}
	return st, zero, false
}

// NotMasterError is the error of a request only the master serves, sent to a
// node that is not the master. It carries the master this node believes in.
//
// With a known master (masterID != 0) the code is FailedPrecondition: this
// node will not serve the request, nothing was proposed, and the client must
// go to masterAddr (retrying there is safe even for an append without
// client_id/seq). Unavailable is deliberately not used for that case because
// gRPC also reports Unavailable for a broken connection, where the outcome
// of an append is unknown. With no master known (masterID == 0, an election
// is under way) the code is Unavailable: back off and retry. Both carry a
// paxosdpb.NotMaster detail; AsNotMaster recognises both.
func NotMasterError(masterID uint64, addr string) error {
	d := &paxosdpb.NotMaster{MasterId: masterID, MasterAddress: addr}
	if masterID == 0 {
		return WithDetails(codes.Unavailable, "not the master: no master known, retry later", d)
	}
	return WithDetails(codes.FailedPrecondition, fmt.Sprintf("not the master: the master is node %d at %q", masterID, addr), d)
}

// AsNotMaster reports whether err is a not-the-master error (NotMasterError)
// and, if so, the master it names: id 0 and addr "" when no master is known.
func AsNotMaster(err error) (id uint64, addr string, ok bool) {
	st, d, ok := Detail[*paxosdpb.NotMaster](err)
	if !ok || (st.Code() != codes.FailedPrecondition && st.Code() != codes.Unavailable) {
		return 0, "", false
	}
	return d.GetMasterId(), d.GetMasterAddress(), true
}

// TrimmedError is the error of a read or tail that starts below the first
// index: code OutOfRange with a paxosdpb.Trimmed detail naming the first
// index, so that the client can decide where to resume (never a silent jump).
func TrimmedError(first uint64) error {
	return WithDetails(codes.OutOfRange, fmt.Sprintf("entries below index %d were trimmed", first), &paxosdpb.Trimmed{FirstIndex: first})
}

// AsTrimmed reports whether err is a TrimmedError and, if so, the first index
// it names.
func AsTrimmed(err error) (first uint64, ok bool) {
	st, d, ok := Detail[*paxosdpb.Trimmed](err)
	if !ok || st.Code() != codes.OutOfRange {
		return 0, false
	}
	return d.GetFirstIndex(), true
}

// InvalidArgument is the error of a request with a bad field: code
// InvalidArgument with a google.rpc.BadRequest detail whose one field
// violation names the field (as in the proto, e.g. "entries[3]") and says
// what is wrong with it.
func InvalidArgument(field, desc string) error {
	return WithDetails(codes.InvalidArgument, fmt.Sprintf("invalid %s: %s", field, desc), &errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}},
	})
}

// Reasons that errors carry (google.rpc.ErrorInfo, domain "paxosd") so that
// clients branch on them, not on message text.
const (
	ReasonEntryTooLarge = "ENTRY_TOO_LARGE" // InvalidArgument
	ReasonStaleSeq      = "STALE_SEQ"       // InvalidArgument
	ReasonTrimPastEnd   = "TRIM_PAST_END"   // InvalidArgument, with metadata end_index
	// ReasonOverloaded marks load shed before anything was proposed
	// (ResourceExhausted): unlike a bare ResourceExhausted, which gRPC
	// itself may report, it is safe to retry even an append without
	// client_id.
	ReasonOverloaded     = "OVERLOADED"
	ReasonTooManyClients = "TOO_MANY_CLIENTS" // ResourceExhausted
	ReasonSeqReused      = "SEQ_REUSED"       // AlreadyExists
	// ReasonOutcomeUnknown marks an append that may or may not have been
	// applied (Unavailable): OutcomeUnknownError.
	ReasonOutcomeUnknown = "OUTCOME_UNKNOWN"
	// ReasonNoSpace marks an append refused because the master's disk is
	// below --min-free-bytes (ResourceExhausted): NoSpaceError.
	ReasonNoSpace      = "NO_SPACE"
	ReasonNotConnected = "NOT_CONNECTED" // FailedPrecondition
)

// NotConnectedError is the error of a local read or tail on a follower
// that has not heard from its cluster yet (since its directory was
// created): what it holds is not the cluster's log, so it serves nothing
// rather than an empty log. FailedPrecondition with reason NOT_CONNECTED:
// read from a member, or from this node once its member answers.
func NotConnectedError(desc string) error {
	return WithDetails(codes.FailedPrecondition, desc, &errdetails.ErrorInfo{Reason: ReasonNotConnected, Domain: "paxosd"})
}

// AsNotConnected reports whether err is a NotConnectedError.
func AsNotConnected(err error) bool {
	return hasReason(err, codes.FailedPrecondition, ReasonNotConnected)
}

// OutcomeUnknownError is the error of an append that may or may not have
// been applied: it was proposed (or forwarded to the master) and then the
// node could not learn its fate (its storage failed and it stopped, the
// forward broke, the proposal was dropped when mastership changed, the
// deadline passed, the node is stopping). Code Unavailable with reason
// OUTCOME_UNKNOWN. Retrying with the same (client_id, seq) is always safe:
// the dedup table returns the original indexes if it was applied.
//
// Unavailable, because that is what gRPC itself reports when a connection
// breaks with a call in flight, the same situation seen from the client's
// side, and gRPC documents it as "not always safe to retry non-idempotent
// operations": a generic client that retries it blindly is warned, and a
// client that looks only at codes treats it as it treats a broken
// connection. Not Internal (a bug; nothing to retry), not Aborted (this
// API's code for a failed test-and-set, where nothing was applied), not
// DeadlineExceeded (which says only that the time ran out). The reason
// tells it apart from a bare Unavailable, and from NotMasterError with no
// master known, which carries a NotMaster detail and applied nothing.
func OutcomeUnknownError(desc string) error {
	return WithDetails(codes.Unavailable, "outcome unknown: the append may or may not have been applied; "+
		"retry it with the same client_id and seq to apply it at most once and learn its indexes: "+desc,
		&errdetails.ErrorInfo{Reason: ReasonOutcomeUnknown, Domain: "paxosd"})
}

// AsOutcomeUnknown reports whether err is an OutcomeUnknownError.
func AsOutcomeUnknown(err error) bool {
	return hasReason(err, codes.Unavailable, ReasonOutcomeUnknown)
}

// NoSpaceError is the error of an append refused because the free space of
// the master's data directory (free) is below its --min-free-bytes (min):
// ResourceExhausted with reason NO_SPACE and the two numbers in the
// ErrorInfo metadata ("free_bytes", "min_free_bytes"). Nothing was
// proposed. Retrying at once, or through another node (which forwards to
// the same master), meets the same disk; the message says what to do.
func NoSpaceError(node uint64, dir string, free, min uint64) error {
	msg := fmt.Sprintf("no space: node %d's data directory %s has %d bytes free, below its --min-free-bytes of %d; "+
		"nothing was appended. Free space (paxosd trim --before INDEX drops old entries; the space returns as storage "+
		"compacts), add disk, or lower --min-free-bytes on that node (restart it); reads, tails and trims still work",
		node, dir, free, min)
	return WithDetails(codes.ResourceExhausted, msg, &errdetails.ErrorInfo{Reason: ReasonNoSpace, Domain: "paxosd",
		Metadata: map[string]string{"free_bytes": strconv.FormatUint(free, 10), "min_free_bytes": strconv.FormatUint(min, 10)}})
}

// AsNoSpace reports whether err is a NoSpaceError and, if so, the free
// bytes and the threshold it names.
func AsNoSpace(err error) (free, min uint64, ok bool) {
	st, d, ok := Detail[*errdetails.ErrorInfo](err)
	if !ok || st.Code() != codes.ResourceExhausted || d.GetReason() != ReasonNoSpace {
		return 0, 0, false
	}
	free, _ = strconv.ParseUint(d.GetMetadata()["free_bytes"], 10, 64)
	min, _ = strconv.ParseUint(d.GetMetadata()["min_free_bytes"], 10, 64)
	return free, min, true
}

// endIndexKey is the ErrorInfo metadata key of TrimPastEndError's end index.
const endIndexKey = "end_index"

// InvalidArgumentReason is InvalidArgument with an ErrorInfo reason.
func InvalidArgumentReason(field, desc, reason string) error {
	return WithDetails(codes.InvalidArgument, fmt.Sprintf("invalid %s: %s", field, desc),
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}}},
		&errdetails.ErrorInfo{Reason: reason, Domain: "paxosd"})
}

// TrimPastEndError is the error of a trim whose before is past the end of
// the log as the master has applied it: InvalidArgument on "before", with
// reason TRIM_PAST_END and the end index in the ErrorInfo metadata
// ("end_index"). Nothing was trimmed.
func TrimPastEndError(before, end uint64) error {
	desc := fmt.Sprintf("%d is past the end of the log, which ends at index %d (the index the next append gets)", before, end)
	return WithDetails(codes.InvalidArgument, fmt.Sprintf("invalid before: %s", desc),
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "before", Description: desc}}},
		&errdetails.ErrorInfo{Reason: ReasonTrimPastEnd, Domain: "paxosd", Metadata: map[string]string{endIndexKey: strconv.FormatUint(end, 10)}})
}

// AsTrimPastEnd reports whether err is a TrimPastEndError and, if so, the
// end index it names.
func AsTrimPastEnd(err error) (end uint64, ok bool) {
	st, d, ok := Detail[*errdetails.ErrorInfo](err)
	if !ok || st.Code() != codes.InvalidArgument || d.GetReason() != ReasonTrimPastEnd {
		return 0, false
	}
	end, perr := strconv.ParseUint(d.GetMetadata()[endIndexKey], 10, 64)
	return end, perr == nil
}

// TooManyClientsError is the error of an exactly-once append refused
// because the dedup table is full of clients that may still retry
// (core.ErrTooManyClients): ResourceExhausted with reason TOO_MANY_CLIENTS.
// Nothing was applied. It is not load shedding: retrying at once, or on
// another node, meets the same full table, so a client surfaces it rather
// than spin on it.
func TooManyClientsError(desc string) error {
	return WithDetails(codes.ResourceExhausted, desc, &errdetails.ErrorInfo{Reason: ReasonTooManyClients, Domain: "paxosd"})
}

// AsTooManyClients reports whether err is a TooManyClientsError.
func AsTooManyClients(err error) bool {
	return hasReason(err, codes.ResourceExhausted, ReasonTooManyClients)
}

// SeqReusedError is the error of an exactly-once append whose (client_id,
// seq) was already applied with different entries (core.ErrSeqReused):
// AlreadyExists with reason SEQ_REUSED. Nothing was applied, and a retry
// gets the same answer. AlreadyExists, not FailedPrecondition: the pair
// names an append that exists already, and in this API FailedPrecondition
// means "not the master, go elsewhere", which a client that looks only at
// codes must not take this for.
func SeqReusedError(desc string) error {
	return WithDetails(codes.AlreadyExists, desc, &errdetails.ErrorInfo{Reason: ReasonSeqReused, Domain: "paxosd"})
}

// AsSeqReused reports whether err is a SeqReusedError.
func AsSeqReused(err error) bool {
	return hasReason(err, codes.AlreadyExists, ReasonSeqReused)
}

// hasReason reports whether err has code c and an ErrorInfo with reason.
func hasReason(err error, c codes.Code, reason string) bool {
	st, d, ok := Detail[*errdetails.ErrorInfo](err)
	return ok && st.Code() == c && d.GetReason() == reason
}

// Reason returns the ErrorInfo reason err carries, "" if none.
func Reason(err error) string {
	_, d, ok := Detail[*errdetails.ErrorInfo](err)
	if !ok {
		return ""
	}
	return d.GetReason()
}

// AsInvalidArgument reports whether err is an InvalidArgument error with a
// field violation and, if so, the first field it names and its description.
func AsInvalidArgument(err error) (field, desc string, ok bool) {
	st, d, ok := Detail[*errdetails.BadRequest](err)
	if !ok || st.Code() != codes.InvalidArgument || len(d.GetFieldViolations()) == 0 {
		return "", "", false
	}
	v := d.GetFieldViolations()[0]
	return v.GetField(), v.GetDescription(), true
}

// ExpectedIndexError is the error of an append whose expected_index is not
// the log's end index: code Aborted (a failed test-and-set) with a
// paxosdpb.IndexMismatch detail carrying the end index. Nothing was appended.
func ExpectedIndexError(expected, end uint64) error {
	return WithDetails(codes.Aborted, fmt.Sprintf("expected_index %d is not the end of the log (%d)", expected, end), &paxosdpb.IndexMismatch{EndIndex: end})
}

// AsExpectedIndex reports whether err is an ExpectedIndexError and, if so,
// the end index it carries.
func AsExpectedIndex(err error) (end uint64, ok bool) {
	st, d, ok := Detail[*paxosdpb.IndexMismatch](err)
	if !ok || st.Code() != codes.Aborted {
		return 0, false
	}
	return d.GetEndIndex(), true
}

// Overloaded is the error of a node that sheds load before proposing
// anything: code ResourceExhausted, meaning back off and retry, with reason
// OVERLOADED and a google.rpc.RetryInfo detail when retryAfter > 0. what
// says which resource ran out. Only a request that was not proposed may be
// refused with it: clients retry it even for an append without client_id.
func Overloaded(what string, retryAfter time.Duration) error {
	msg := fmt.Sprintf("overloaded: %s; back off and retry", what)
	info := &errdetails.ErrorInfo{Reason: ReasonOverloaded, Domain: "paxosd"}
	if retryAfter <= 0 {
		return WithDetails(codes.ResourceExhausted, msg, info)
	}
	return WithDetails(codes.ResourceExhausted, msg, info, &errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
}

// AsOverloaded reports whether err is an Overloaded error (ResourceExhausted
// with reason OVERLOADED: not TOO_MANY_CLIENTS, nor a bare
// ResourceExhausted of gRPC's own) and, if so, how long the server asked
// the client to wait (0 when it did not say).
func AsOverloaded(err error) (retryAfter time.Duration, ok bool) {
	if !hasReason(err, codes.ResourceExhausted, ReasonOverloaded) {
		return 0, false
	}
	_, d, hasDelay := Detail[*errdetails.RetryInfo](err)
	if hasDelay {
		retryAfter = d.GetRetryDelay().AsDuration()
	}
	return retryAfter, true
}

// The reasons (ErrorInfo) of a refused membership change, all
// FailedPrecondition: the change cannot take effect in the configuration as
// it is; the message says why and what to do.
const (
	ReasonChangePending       = "CHANGE_PENDING"
	ReasonMemberBehind        = "MEMBER_BEHIND"
	ReasonMemberExists        = "MEMBER_EXISTS"
	ReasonUnknownMember       = "UNKNOWN_MEMBER"
	ReasonNotFollower         = "NOT_FOLLOWER"
	ReasonLastVoter           = "LAST_VOTER"
	ReasonNoQuorum            = "NO_QUORUM"
	ReasonSlotsExhausted      = "SLOTS_EXHAUSTED"
	ReasonNoMembership        = "NO_MEMBERSHIP"
	ReasonIncarnationMismatch = "INCARNATION_MISMATCH"
	ReasonNoIncarnation       = "NO_INCARNATION"
	ReasonBadChange           = "BAD_CHANGE"
)

// ChangeRefusedError is a membership change the cluster refused (reason
// above): FailedPrecondition, nothing changed.
func ChangeRefusedError(reason, desc string) error {
	return WithDetails(codes.FailedPrecondition, desc, &errdetails.ErrorInfo{Reason: reason, Domain: "paxosd"})
}

// AsChangeRefused returns the reason of a ChangeRefusedError.
func AsChangeRefused(err error) (reason string, ok bool) {
	st, d, ok := Detail[*errdetails.ErrorInfo](err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return "", false
	}
	return d.GetReason(), true
}

// MasterHeader is the response header a node sets when it forwarded a
// request to the master: the master's address, so that a client can go
// there directly next time instead of paying for the extra hop.
const MasterHeader = "paxosd-master"
