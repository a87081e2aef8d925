package gossip

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	longAddr := strings.Repeat("h", maxAPIAddrLen-6) + ":65535"
	for _, m := range []meta{
		{cluster: 1, role: RoleVoter, applied: 0, apiAddr: "127.0.0.1:7001"},
		{cluster: math.MaxUint64, role: RoleFollower, applied: math.MaxUint64, apiAddr: "[::1]:7001"},
		{cluster: 5, role: "", applied: 12345, apiAddr: "node-3.example:443"},
		{cluster: math.MaxUint64, role: RoleFollower, applied: math.MaxUint64, apiAddr: longAddr},
	} {
		buf := encodeMeta(m)
		if len(buf) > maxMetaLen || len(buf) > memberlist.MetaMaxSize {
			t.Errorf("%+v encodes to %d bytes, over %d", m, len(buf), maxMetaLen)
		}
		got, err := decodeMeta(buf)
		if err != nil || got != m {
			t.Errorf("decode(encode(%+v)) = %+v, %v", m, got, err)
		}
	}
	// A typical state is small: it rides in every alive message.
	if n := len(encodeMeta(meta{cluster: 1 << 63, role: RoleVoter, applied: 1 << 30, apiAddr: "10.0.0.1:7000"})); n > 32 {
		t.Errorf("a typical state is %d bytes", n)
	}
	// An unknown role is sent as unknown.
	if got, err := decodeMeta(encodeMeta(meta{cluster: 1, role: "master", apiAddr: "a:1"})); err != nil || got.role != "" {
		t.Errorf("role master: %+v, %v", got, err)
	}
}

func TestDecodeMetaRefusesMalformed(t *testing.T) {
	valid := encodeMeta(meta{cluster: 300, role: RoleVoter, applied: 70000, apiAddr: "127.0.0.1:7001"})
	cases := map[string][]byte{
		"nil":                 nil,
		"empty":               {},
		"version only":        {1},
		"version 0":           {0, 1, 1, 1, 3, 'a', ':', '1'},
		"unknown role in v1":  {1, 3, 1, 1, 3, 'a', ':', '1'},
		"overlong varint":     append([]byte{1, 1}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"address past end":    {1, 1, 1, 1, 9, 'a', ':', '1'},
		"address over 255":    append([]byte{1, 1, 1, 1, 0x80, 0x02}, []byte(strings.Repeat("a", 254)+":1")...),
		"address not UTF-8":   {1, 1, 1, 1, 4, 0xff, 0xfe, ':', '1'},
		"address no port":     {1, 1, 1, 1, 3, 'a', 'b', 'c'},
		"empty address":       {1, 1, 1, 1, 0},
		"v1 trailing bytes":   append(append([]byte{}, valid...), 0),
		"all 0xff":            {0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		"text":                []byte("voter 127.0.0.1:7001"),
		"huge length varint":  {1, 1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"missing applied":     {1, 1, 1},
		"cluster cut in half": {1, 1, 0x80},
	}
	for i := range len(valid) {
		cases["valid cut to "+string(rune('0'+i/10))+string(rune('0'+i%10))] = valid[:i]
	}
	for name, buf := range cases {
		m, err := decodeMeta(buf)
		if err == nil {
			t.Errorf("%s (% x): decoded to %+v", name, buf, m)
			continue
		}
		if !errors.Is(err, errMalformedMeta) {
			t.Errorf("%s: error %v does not wrap errMalformedMeta", name, err)
		}
	}
}

func TestDecodeMetaReadsLaterVersionsPrefix(t *testing.T) {
	// Version 2 may append fields and add roles: this node reads what it
	// knows.
	buf := encodeMeta(meta{cluster: 9, role: RoleFollower, applied: 4, apiAddr: "h:1"})
	buf[0] = 2
	buf = append(buf, 0xde, 0xad)
	m, err := decodeMeta(buf)
	if err != nil || m != (meta{cluster: 9, role: RoleFollower, applied: 4, apiAddr: "h:1"}) {
		t.Fatalf("version 2 with more fields: %+v, %v", m, err)
	}
	buf[1] = 7
	if m, err := decodeMeta(buf); err != nil || m.role != "" {
		t.Fatalf("version 2 with a new role: %+v, %v", m, err)
	}
}

// FuzzDecodeMeta: no input panics, and whatever decodes is within bounds
// and survives a round trip.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(meta{cluster: 42, role: RoleVoter, applied: 7, apiAddr: "127.0.0.1:7001"}))
	f.Add(encodeMeta(meta{cluster: math.MaxUint64, role: RoleFollower, applied: math.MaxUint64, apiAddr: "[::1]:1"}))
	f.Add([]byte{2, 9, 1, 1, 3, 'a', ':', '1', 0xff})
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0x80})
	f.Fuzz(func(t *testing.T, buf []byte) {
		m, err := decodeMeta(buf)
		if err != nil {
			if !errors.Is(err, errMalformedMeta) {
				t.Fatalf("error %v does not wrap errMalformedMeta", err)
			}
			return
		}
		if len(m.apiAddr) > maxAPIAddrLen {
			t.Fatalf("decoded an API address of %d bytes", len(m.apiAddr))
		}
		again := encodeMeta(m)
		if len(again) > maxMetaLen {
			t.Fatalf("re-encoded to %d bytes", len(again))
		}
		m2, err := decodeMeta(again)
		if err != nil || m2 != m {
			t.Fatalf("round trip of %+v: %+v, %v", m, m2, err)
		}
	})
}
