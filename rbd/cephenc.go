package rbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Decoding what Ceph's cls methods answer. Ceph encodes integers little-endian, a string or a
// byte buffer as a 32-bit length and the bytes, a map as a 32-bit count and the pairs, and a
// versioned struct behind a header (version, oldest compatible version, 32-bit length) that lets
// a reader skip fields newer than it knows.

// cephDec reads one encoded reply. The first error sticks: later reads return zero values, and
// err says what went wrong first.
type cephDec struct {
	b   []byte
	off int
	err error
}

func (d *cephDec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || d.off+n > len(d.b) {
		d.err = fmt.Errorf("truncated reply: %d bytes at offset %d of %d", n, d.off, len(d.b))
		return nil
	}
	out := d.b[d.off : d.off+n]
	d.off += n
	return out
}

func (d *cephDec) u8() uint8 {
	b := d.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *cephDec) u16() uint16 {
	b := d.take(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (d *cephDec) u32() uint32 {
	b := d.take(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (d *cephDec) u64() uint64 {
	b := d.take(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// bytes reads a length-prefixed buffer (a string, or a bufferlist).
func (d *cephDec) bytes() []byte {
	n := d.u32()
	if d.err == nil && int64(n) > int64(len(d.b)-d.off) {
		d.err = fmt.Errorf("truncated reply: a %d-byte field at offset %d of %d", n, d.off, len(d.b))
		return nil
	}
	return d.take(int(n))
}

func (d *cephDec) str() string { return string(d.bytes()) }

// start reads a versioned struct's header and returns where the struct ends (for end).
func (d *cephDec) start() int {
	d.u8() // version
	d.u8() // oldest version that can read it
	n := d.u32()
	if d.err == nil && int64(n) > int64(len(d.b)-d.off) {
		d.err = fmt.Errorf("truncated reply: a %d-byte struct at offset %d of %d", n, d.off, len(d.b))
		return d.off
	}
	return d.off + int(n)
}

// end skips what is left of a struct (fields newer than this reader knows).
func (d *cephDec) end(at int) {
	if d.err == nil && at < d.off {
		d.err = fmt.Errorf("struct overran its length (%d > %d)", d.off, at)
		return
	}
	if d.err == nil {
		d.off = at
	}
}

// entityAddr reads an entity_addr_t and formats it as Ceph prints it without its type:
// ip:port/nonce ([ip]:port/nonce for IPv6), the form normalizeAddr gives.
func (d *cephDec) entityAddr() string {
	const afInet, afInet6 = 2, 10
	var nonce uint32
	var family uint16
	var sa []byte // the sockaddr after its family: port (network order), then the address
	if d.err != nil || d.off >= len(d.b) {
		d.take(1)
		return ""
	}
	if d.b[d.off] == 0 { // legacy: a zero 32-bit word, the nonce, a 128-byte sockaddr_storage
		d.u32()
		nonce = d.u32()
		ss := d.take(128)
		if ss == nil {
			return ""
		}
		family, sa = binary.BigEndian.Uint16(ss), ss[2:]
	} else {
		if m := d.u8(); m != 1 {
			d.err = fmt.Errorf("unknown address encoding %d", m)
			return ""
		}
		at := d.start()
		d.u32() // type: legacy, msgr2, any
		nonce = d.u32()
		if n := d.u32(); n >= 2 {
			family = d.u16()
			sa = d.take(int(n) - 2)
		}
		d.end(at)
	}
	if d.err != nil {
		return ""
	}
	var host string
	var port uint16
	switch {
	case family == afInet && len(sa) >= 6:
		port, host = binary.BigEndian.Uint16(sa), net.IP(sa[2:6]).String()
	case family == afInet6 && len(sa) >= 22:
		port, host = binary.BigEndian.Uint16(sa), "["+net.IP(sa[6:22]).String()+"]"
	case family == 0:
		return "-"
	default:
		d.err = errors.New("an address of an unknown family")
		return ""
	}
	return host + ":" + strconv.Itoa(int(port)) + "/" + strconv.FormatUint(uint64(nonce), 10)
}

// entityName reads an entity_name_t (type, number) as Ceph prints it: client.4123.
func (d *cephDec) entityName() string {
	t := d.u8()
	n := int64(d.u64())
	names := map[uint8]string{1: "mon", 2: "mds", 4: "osd", 8: "client", 16: "mgr"}
	name, ok := names[t]
	if !ok {
		name = "unknown"
	}
	return name + "." + strconv.FormatInt(n, 10)
}

// cephEnc builds a cls method's input.
type cephEnc []byte

func (e cephEnc) u8(v uint8) cephEnc   { return append(e, v) }
func (e cephEnc) u64(v uint64) cephEnc { return binary.LittleEndian.AppendUint64(e, v) }
func (e cephEnc) str(s string) cephEnc {
	return append(binary.LittleEndian.AppendUint32(e, uint32(len(s))), s...)
}

// versioned wraps fields in a struct header (version 1, compatible with 1).
func versioned(fields cephEnc) cephEnc {
	e := cephEnc{1, 1}
	e = binary.LittleEndian.AppendUint32(e, uint32(len(fields)))
	return append(e, fields...)
}
