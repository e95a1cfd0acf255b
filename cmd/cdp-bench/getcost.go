package main

import (
	"context"
	"fmt"
	"strings"
)

// The cost of one Get, counted rather than timed: the OSD requests the plugin's Ceph client sends
// (its admin socket's objecter counters) and the plugin's CPU time (/proc/PID/stat), over many
// Gets, for the plugin built from this tree and, with -plugin-before, for an earlier build.

// costRow is what one plugin build spent on one kind of call.
type costRow struct {
	build, call string
	calls       int
	per         clientCounter // per call
	lat         sample
}

// getCost runs the Get scenarios against each build.
func (b *bench) getCost(ctx context.Context) error {
	var builds [][2]string
	if b.o.scale.binBefore != "" {
		bins, refs := strings.Split(b.o.scale.binBefore, ","), strings.Split(b.o.scale.beforeRef, ",")
		for i, bin := range bins {
			ref := "?"
			if i < len(refs) {
				ref = refs[i]
			}
			builds = append(builds, [2]string{"before (" + ref + ")", bin})
		}
	}
	builds = append(builds, [2]string{"this tree", b.o.bin})
	for i, bd := range builds {
		rows, err := b.getCostOf(ctx, fmt.Sprintf("bench-cost%d", i), bd[0], bd[1])
		scaleRes.cost = append(scaleRes.cost, rows...)
		if err != nil {
			return fmt.Errorf("%s: %w", bd[0], err)
		}
	}
	return nil
}

func (b *bench) getCostOf(ctx context.Context, node, build, bin string) ([]costRow, error) {
	conf, err := countingConf(b.env.conf, b.o.work)
	if err != nil {
		return nil, err
	}
	p := newPlugin(bin, b.o.work, node, "BACKEND=rbd", "CEPH_CONF="+conf, "CEPH_USER="+b.env.user,
		"CEPH_KEYRING="+b.env.keyring, "RBD_POOL="+b.env.pool)
	if _, err := p.start(bin); err != nil {
		return nil, err
	}
	defer p.stop()
	sock, err := clientAsok(b.env.conf, p.pid())
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s-%s", b.prefix, node)
	if err := p.create(name, map[string]string{"size": "1G"}); err != nil {
		return nil, err
	}
	defer func() { _ = p.remove(name) }()
	n := b.o.scale.costN
	measure := func(call string, fn func() error) (costRow, error) {
		for i := 0; i < 3; i++ { // warm: pools opened, caches filled
			if err := fn(); err != nil {
				return costRow{}, err
			}
		}
		row := costRow{build: build, call: call, calls: n}
		c0, err := readClientCounter(sock, p.pid())
		if err != nil {
			return row, err
		}
		for i := 0; i < n; i++ {
			if err := timed(&row.lat, fn); err != nil {
				return row, err
			}
		}
		c1, err := readClientCounter(sock, p.pid())
		if err != nil {
			return row, err
		}
		d := c1.sub(c0)
		row.per = clientCounter{ops: d.ops / float64(n), reads: d.reads / float64(n), writes: d.writes / float64(n), cpuMS: d.cpuMS / float64(n)}
		logf("getcost: %s, %s: %.2f OSD requests, %.3f ms CPU per call", build, call, row.per.ops, row.per.cpuMS)
		return row, nil
	}
	var rows []costRow
	add := func(call string, fn func() error) error {
		r, err := measure(call, fn)
		if err == nil {
			rows = append(rows, r)
		}
		return err
	}
	if err := add("Get (volume not in use)", func() error { return p.get(name) }); err != nil {
		return rows, err
	}
	missing := name + "-missing"
	if err := add("Get (no such volume: dockerd's Get before Create)", func() error {
		if err := p.get(missing); err == nil {
			return fmt.Errorf("get %s: found a volume that does not exist", missing)
		}
		return nil
	}); err != nil {
		return rows, err
	}
	if _, err := p.mount(name, "cost"); err != nil {
		return rows, err
	}
	err = add("Get (volume mounted on this host)", func() error { return p.get(name) })
	if uerr := p.unmount(name, "cost"); err == nil {
		err = uerr
	}
	if err != nil {
		return rows, err
	}
	mount, unmount, err := b.mountCost(sock, p, name, build)
	return append(rows, mount, unmount), err
}

// mountCost counts a first Mount (host lock, map, record of clients) and the Unmount that undoes
// it (last user: unmap, holder record cleared, lock released), over -cost-mount-n cycles of the
// volume already formatted; each cycle is counted around each call.
func (b *bench) mountCost(sock string, p *plugin, name, build string) (mount, unmount costRow, err error) {
	n := b.o.scale.costMountN
	mount = costRow{build: build, call: "first Mount (this host locks, maps, records its clients)", calls: n}
	unmount = costRow{build: build, call: "Unmount of the last user (unmap, record cleared, lock released)", calls: n}
	var dm, du clientCounter
	for i := 0; i < n; i++ {
		c0, err := readClientCounter(sock, p.pid())
		if err != nil {
			return mount, unmount, err
		}
		if err := timed(&mount.lat, func() error { _, err := p.mount(name, "cost"); return err }); err != nil {
			return mount, unmount, err
		}
		c1, err := readClientCounter(sock, p.pid())
		if err != nil {
			return mount, unmount, err
		}
		if err := timed(&unmount.lat, func() error { return p.unmount(name, "cost") }); err != nil {
			return mount, unmount, err
		}
		c2, err := readClientCounter(sock, p.pid())
		if err != nil {
			return mount, unmount, err
		}
		dm, du = dm.add(c1.sub(c0)), du.add(c2.sub(c1))
	}
	mount.per, unmount.per = dm.div(float64(n)), du.div(float64(n))
	logf("getcost: %s, Mount: %.2f OSD requests, Unmount: %.2f", build, mount.per.ops, unmount.per.ops)
	return mount, unmount, nil
}

// costTime is a short wall-clock figure for a cost row (the counted figures are the point; times
// on this shared machine are noisy).
func costTime(r costRow) string {
	return fmt.Sprintf("%s / %s", ms(r.lat.p50()), ms(r.lat.pct(99)))
}
