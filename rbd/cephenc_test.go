package rbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// sockaddr is a sockaddr_in or sockaddr_in6 after its family: the port in network order, then
// the address (after sockaddr_in6's flow info).
func sockaddr(t *testing.T, addr string) (family uint16, sa []byte, nonce uint32) {
	t.Helper()
	hostPort, n, ok := strings.Cut(addr, "/")
	host, port, err := net.SplitHostPort(hostPort)
	p, perr := strconv.ParseUint(port, 10, 16)
	v, nerr := strconv.ParseUint(n, 10, 32)
	ip := net.ParseIP(host)
	if !ok || err != nil || perr != nil || nerr != nil || ip == nil {
		t.Fatalf("bad address %q", addr)
	}
	sa = binary.BigEndian.AppendUint16(nil, uint16(p))
	if ip4 := ip.To4(); ip4 != nil {
		return 2, append(append(sa, ip4...), make([]byte, 8)...), uint32(v)
	}
	sa = append(sa, 0, 0, 0, 0) // flow info
	return 10, append(append(sa, ip.To16()...), 0, 0, 0, 0), uint32(v)
}

// addr2 encodes addr as entity_addr_t in its msgr2 form: a marker, then a versioned struct of
// type, nonce, and the sockaddr (its family little-endian).
func addr2(t *testing.T, addr string) []byte {
	family, sa, nonce := sockaddr(t, addr)
	f := binary.LittleEndian.AppendUint32(nil, 1) // type: legacy
	f = binary.LittleEndian.AppendUint32(f, nonce)
	f = binary.LittleEndian.AppendUint32(f, uint32(2+len(sa)))
	f = binary.LittleEndian.AppendUint16(f, family)
	return append([]byte{1}, versioned(append(f, sa...))...)
}

// legacyAddr encodes addr as entity_addr_t in its legacy form: a zero word, the nonce, and a
// 128-byte sockaddr_storage (its family in network order).
func legacyAddr(t *testing.T, addr string) []byte {
	family, sa, nonce := sockaddr(t, addr)
	b := binary.LittleEndian.AppendUint32(make([]byte, 4), nonce)
	ss := make([]byte, 128)
	binary.BigEndian.PutUint16(ss, family)
	copy(ss[2:], sa)
	return append(b, ss...)
}

func TestEntityAddr(t *testing.T) {
	// The recorded lock's address: the OSD encoded it as addr2 builds it, and both forms read
	// back as the address the locking client had.
	fx := loadFixture(t, "plain")
	recorded := fx.Want.Lockers[0].Addr
	if enc := addr2(t, recorded); !bytes.Contains(fx.Calls[8].Out, enc) {
		t.Fatalf("lock info %x does not hold %s encoded as %x", []byte(fx.Calls[8].Out), recorded, enc)
	}
	// A client's port is 0: an OSD's shows the port's byte order.
	osd, ipv6 := "192.168.7.9:6801/12345", "[fd00::1:2]:6800/77"
	for _, c := range []struct{ what, addr string }{{"recorded", recorded}, {"osd", osd}, {"ipv6", ipv6}} {
		for form, b := range map[string][]byte{"addr2": addr2(t, c.addr), "legacy": legacyAddr(t, c.addr)} {
			d := &cephDec{b: append(b, 0x5a)}
			if got := d.entityAddr(); got != normalizeAddr("v2:"+c.addr) || d.err != nil || d.u8() != 0x5a {
				t.Errorf("%s %s: %q (%v), want %q and the byte after it", c.what, form, got, d.err, c.addr)
			}
		}
	}

	blank := legacyAddr(t, recorded)
	copy(blank[8:10], []byte{0, 0}) // family 0: no address
	unix := addr2(t, recorded)
	unix[19] = 1 // AF_UNIX
	short := addr2(t, recorded)
	short[15] = 4 // a 4-byte sockaddr: too short for AF_INET
	marker := addr2(t, recorded)
	marker[0] = 2
	for _, c := range []struct {
		what string
		b    []byte
		want string // the address, or the error
	}{
		{"family 0", blank, "-"},
		{"AF_UNIX", unix, "unknown family"},
		{"short sockaddr", short, "unknown family"},
		{"unknown marker", marker, "unknown address encoding 2"},
		{"empty", nil, "truncated"},
		{"legacy cut short", legacyAddr(t, recorded)[:100], "truncated"},
		{"addr2 cut short", addr2(t, recorded)[:20], "truncated"},
	} {
		d := &cephDec{b: c.b}
		got := d.entityAddr()
		if (d.err == nil && got != c.want) || (d.err != nil && (got != "" || !strings.Contains(d.err.Error(), c.want))) {
			t.Errorf("%s: %q, %v; want %q", c.what, got, d.err, c.want)
		}
	}
	d := &cephDec{b: addr2(t, recorded), err: errTest}
	if got := d.entityAddr(); got != "" || d.err != errTest {
		t.Errorf("after an error: %q, %v", got, d.err)
	}
}

var errTest = errors.New("an earlier error")

func TestEntityName(t *testing.T) {
	fx := loadFixture(t, "plain")
	client := fx.Want.Lockers[0].Client
	n, err := strconv.ParseUint(strings.TrimPrefix(client, "client."), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// CEPH_ENTITY_TYPE_*; the recorded locker is a client (8).
	for typ, name := range map[uint8]string{1: "mon", 2: "mds", 4: "osd", 8: "client", 16: "mgr", 3: "unknown"} {
		d := &cephDec{b: cephEnc(nil).u8(typ).u64(n)}
		if got := d.entityName(); got != name+"."+strconv.FormatUint(n, 10) || d.err != nil {
			t.Errorf("type %d: %q, %v", typ, got, d.err)
		}
	}
	d := &cephDec{b: []byte{8, 1, 2}}
	if d.entityName(); d.err == nil {
		t.Error("a cut entity name decoded")
	}
}

func TestCephEncDecRoundTrip(t *testing.T) {
	in := cephEnc(nil).u8(7).u64(1<<40 + 3).str("héllo").str("")
	v := versioned(in)
	d := &cephDec{b: append(v, 0xaa, 0xbb, 0x01, 0x02)}
	at := d.start()
	if a, b, s, e := d.u8(), d.u64(), d.str(), d.str(); a != 7 || b != 1<<40+3 || s != "héllo" || e != "" {
		t.Errorf("read back %d %d %q %q", a, b, s, e)
	}
	d.end(at)
	if d.off != len(v) || d.u16() != 0xbbaa || d.u16() != 0x0201 || d.err != nil {
		t.Errorf("after the struct: offset %d of %d, %v", d.off, len(v), d.err)
	}
	if d.u8() != 0 || d.err == nil {
		t.Fatal("a read past the end did not fail")
	}
	first := d.err
	if d.u32() != 0 || d.u64() != 0 || d.bytes() != nil || d.str() != "" || d.err != first {
		t.Errorf("the first error does not stick: %v", d.err)
	}
	if d.end(len(d.b)); d.err != first {
		t.Errorf("end after an error: %v", d.err)
	}
	if d := (&cephDec{b: []byte{1, 2}}); d.take(-1) != nil || d.err == nil {
		t.Error("a negative take did not fail")
	}
	if d := (&cephDec{b: cephEnc(nil).str("abc")[:6]}); d.bytes() != nil || d.err == nil || !strings.Contains(d.err.Error(), "3-byte field") {
		t.Errorf("a field longer than the reply: %v", d.err)
	}
}
