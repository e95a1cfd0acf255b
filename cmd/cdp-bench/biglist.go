package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rados"
)

// bigPool is the bench's pool for the List of a very large pool: nothing else uses it.
const bigPool = "cdp-bench-big"

// bigList is List with a very large pool. Creating 100,000 images takes hours here, and List
// reads only the pool's rbd_directory (the keys name_<image>; see rbd.listDirectory), so the
// phase writes the directory's entries itself (name_<image> -> id and id_<id> -> <image>, as
// `rbd create` writes them, without the images' own objects) and removes them afterwards.
type bigListResult struct {
	images     int
	fill       time.Duration
	list       sample
	per        clientCounter // per List
	rawLS      sample        // `rbd ls` of the same pool
	answered   int
	firstStart time.Duration
}

func (b *bench) bigList(ctx context.Context) error {
	n := b.o.scale.bigN
	adm := &raw{conf: b.env.conf, user: "admin", keyring: b.env.adminKeyring}
	ceph := func(args ...string) (string, error) {
		return adm.run(ctx, "ceph", append([]string{"-c", b.env.conf, "--id", "admin", "--keyring", b.env.adminKeyring}, args...)...)
	}
	pools, err := ceph("osd", "pool", "ls")
	if err != nil {
		return err
	}
	if !strings.Contains("\n"+pools+"\n", "\n"+bigPool+"\n") {
		logf("creating pool %s", bigPool)
		if _, err := ceph("osd", "pool", "create", bigPool, "8", "8"); err != nil {
			return err
		}
		if _, err := adm.rbd(ctx, "pool", "init", bigPool); err != nil {
			return err
		}
	}
	io, done, err := b.adminIO(bigPool)
	if err != nil {
		return err
	}
	defer done()
	res := &bigListResult{images: n}
	scaleRes.big = res
	start := time.Now()
	const batch = 4000
	for i := 0; i < n; i += batch {
		kv := map[string][]byte{}
		for j := i; j < min(i+batch, n); j++ {
			name, id := fmt.Sprintf("bench-big-%06d", j), fmt.Sprintf("b16%09x", j)
			kv["name_"+name] = cephString(id)
			kv["id_"+id] = cephString(name)
		}
		if err := io.SetOmap("rbd_directory", kv); err != nil {
			return fmt.Errorf("write rbd_directory entries: %w", err)
		}
	}
	res.fill = time.Since(start)
	logf("biglist: wrote %d directory entries in %s", n, res.fill.Round(time.Millisecond))
	defer func() {
		if err := io.Delete("rbd_directory"); err != nil {
			logf("biglist: removing the fake directory of %s: %v", bigPool, err)
		}
	}()

	conf, err := countingConf(b.env.conf, b.o.work)
	if err != nil {
		return err
	}
	p := newPlugin(b.o.bin, b.o.work, "bench-big", "BACKEND=rbd", "CEPH_CONF="+conf, "CEPH_USER=admin",
		"CEPH_KEYRING="+b.env.adminKeyring, "RBD_POOL="+bigPool)
	if res.firstStart, err = p.start(b.o.bin); err != nil {
		return err
	}
	defer p.stop()
	sock, err := clientAsok(conf, p.pid())
	if err != nil {
		return err
	}
	if _, err := p.list(); err != nil { // warm: the pool opened, the names remembered once
		return err
	}
	runs := 10
	c0, err := readClientCounter(sock, p.pid())
	if err != nil {
		return err
	}
	for i := 0; i < runs; i++ {
		if err := timed(&res.list, func() error {
			var err error
			res.answered, err = p.list()
			return err
		}); err != nil {
			return err
		}
		if res.answered < n {
			return fmt.Errorf("List answered %d volumes, want >= %d", res.answered, n)
		}
	}
	c1, err := readClientCounter(sock, p.pid())
	if err != nil {
		return err
	}
	d := c1.sub(c0)
	res.per = clientCounter{ops: d.ops / float64(runs), reads: d.reads / float64(runs), writes: d.writes / float64(runs), cpuMS: d.cpuMS / float64(runs)}
	for i := 0; i < 3; i++ {
		var out string
		if err := timed(&res.rawLS, func() error { var err error; out, err = adm.rbd(ctx, "ls", bigPool); return err }); err != nil {
			return err
		}
		if c := strings.Count(out, "\n") + 1; c < n {
			return fmt.Errorf("rbd ls printed %d names, want >= %d", c, n)
		}
	}
	logf("biglist: List of %d: p50 %s, %.1f OSD requests, %.0f ms CPU each", res.answered, ms(res.list.p50()), res.per.ops, res.per.cpuMS)
	return nil
}

// cephString encodes a string as Ceph does: a 32-bit little-endian length, then the bytes.
func cephString(s string) []byte {
	return append(binary.LittleEndian.AppendUint32(nil, uint32(len(s))), s...)
}

// adminIO opens pool as client.admin with go-ceph (for writing objects the bench fakes).
func (b *bench) adminIO(pool string) (*rados.IOContext, func(), error) {
	conn, err := rados.NewConnWithUser("admin")
	if err != nil {
		return nil, nil, err
	}
	if err := conn.ReadConfigFile(b.env.conf); err == nil {
		err = conn.SetConfigOption("keyring", b.env.adminKeyring)
	}
	if err == nil {
		err = conn.Connect()
	}
	if err != nil {
		conn.Shutdown()
		return nil, nil, fmt.Errorf("connect as client.admin: %w", err)
	}
	io, err := conn.OpenIOContext(pool)
	if err != nil {
		conn.Shutdown()
		return nil, nil, err
	}
	return io, func() { io.Destroy(); conn.Shutdown() }, nil
}
