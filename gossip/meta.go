package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"unicode/utf8"
)

// The state a node gossips about itself travels as memberlist node
// metadata, which memberlist caps at memberlist.MetaMaxSize (512) bytes and
// repeats in every alive message and push-pull, so it is kept small:
//
//	byte     version (metaVersion)
//	byte     role: 0 unknown, 1 voter, 2 follower
//	uvarint  cluster ID
//	uvarint  applied instance
//	uvarint  length of the API address, then its bytes (at most maxAPIAddrLen)
//
// A later version may only append fields: a decoder reads the prefix it
// knows and ignores the rest, so nodes of two versions still see each other
// during a rolling upgrade. Version 1 itself allows no trailing bytes.
const metaVersion = 1

// maxAPIAddrLen bounds the API address: a DNS name of up to 253 bytes and a
// port would not fit with the other fields in a byte-length prefix, and no
// address an operator types is this long. It keeps the metadata under
// memberlist's 512-byte limit (maxMetaLen).
const maxAPIAddrLen = 255

// maxMetaLen is the largest metadata encodeMeta produces: two bytes, two
// uvarints of at most 10 bytes, a length of at most 2 bytes and the address.
const maxMetaLen = 2 + 10 + 10 + 2 + maxAPIAddrLen

// Role codes on the wire.
const (
	roleCodeUnknown  = 0
	roleCodeVoter    = 1
	roleCodeFollower = 2
)

// errMalformedMeta is wrapped by every decodeMeta error.
var errMalformedMeta = errors.New("malformed gossip metadata")

// meta is the decoded metadata of one node.
type meta struct {
	cluster uint64
	role    string
	applied uint64
	apiAddr string
}

func roleCode(role string) byte {
	switch role {
	case RoleVoter:
		return roleCodeVoter
	case RoleFollower:
		return roleCodeFollower
	}
	return roleCodeUnknown
}

// encodeMeta encodes m. An unknown role is encoded as unknown. The caller
// keeps apiAddr within maxAPIAddrLen (Config.validate does).
func encodeMeta(m meta) []byte {
	buf := make([]byte, 0, 2+2*binary.MaxVarintLen64+2+len(m.apiAddr))
	buf = append(buf, metaVersion, roleCode(m.role))
	buf = binary.AppendUvarint(buf, m.cluster)
	buf = binary.AppendUvarint(buf, m.applied)
	buf = binary.AppendUvarint(buf, uint64(len(m.apiAddr)))
	buf = append(buf, m.apiAddr...)
	return buf
}

// decodeMeta decodes metadata a peer sent. It trusts nothing in buf: every
// length is checked, and any error wraps errMalformedMeta.
func decodeMeta(buf []byte) (meta, error) {
	var m meta
	if len(buf) < 2 {
		return m, fmt.Errorf("%w: %d bytes, want at least 2", errMalformedMeta, len(buf))
	}
	version, code := buf[0], buf[1]
	if version == 0 {
		return m, fmt.Errorf("%w: version 0", errMalformedMeta)
	}
	switch code {
	case roleCodeUnknown:
	case roleCodeVoter:
		m.role = RoleVoter
	case roleCodeFollower:
		m.role = RoleFollower
	default:
		// A later version may add roles; this node does not know them.
		if version == metaVersion {
			return m, fmt.Errorf("%w: role code %d", errMalformedMeta, code)
		}
	}
	rest := buf[2:]
	var err error
	if m.cluster, rest, err = uvarint(rest, "cluster ID"); err != nil {
		return meta{}, err
	}
	if m.applied, rest, err = uvarint(rest, "applied instance"); err != nil {
		return meta{}, err
	}
	n, rest, err := uvarint(rest, "API address length")
	if err != nil {
		return meta{}, err
	}
	if n > maxAPIAddrLen || n > uint64(len(rest)) {
		return meta{}, fmt.Errorf("%w: API address of %d bytes, %d left (at most %d)", errMalformedMeta, n, len(rest), maxAPIAddrLen)
	}
	addr := rest[:n]
	rest = rest[n:]
	if !utf8.Valid(addr) {
		return meta{}, fmt.Errorf("%w: API address is not UTF-8", errMalformedMeta)
	}
	m.apiAddr = string(addr)
	if _, _, err := net.SplitHostPort(m.apiAddr); err != nil {
		return meta{}, fmt.Errorf("%w: API address %q: %v", errMalformedMeta, m.apiAddr, err)
	}
	if len(rest) > 0 && version == metaVersion {
		return meta{}, fmt.Errorf("%w: %d trailing bytes", errMalformedMeta, len(rest))
	}
	return m, nil
}

// uvarint reads one uvarint of buf, naming what it is in the error.
func uvarint(buf []byte, what string) (uint64, []byte, error) {
	v, n := binary.Uvarint(buf)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: %s: truncated or overflowing varint", errMalformedMeta, what)
	}
	return v, buf[n:], nil
}
