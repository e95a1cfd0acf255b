package rbd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/ceph/go-ceph/rados"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// A holder is a host as the locks and records on an image name it: NODE_NAME for people, and the
// host's identity (driver.HostID) for the plugin. Two machines can share a name; they cannot
// share an identity by accident.

// HostCookie is the cookie of the host lock a host takes: "ceph-docker-plugin/<name>/<host ID>".
// The older format, "ceph-docker-plugin/<name>", names the host alone (ParseCookie reads both).
func HostCookie(name, id string) string {
	if id == "" {
		return cookiePrefix + name
	}
	return cookiePrefix + name + "/" + id
}

// ParseCookie reads a host lock's cookie back: the holder's name and identity (id is "" for a
// lock in the older name-only format). ok is false for a cookie the plugin did not make.
// The identity is the last path element when it has the form of one, so a name may hold "/".
func ParseCookie(cookie string) (name, id string, ok bool) {
	rest, ok := strings.CutPrefix(cookie, cookiePrefix)
	if !ok {
		return "", "", false
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 && driver.ValidHostID(rest[i+1:]) {
		return rest[:i], rest[i+1:], true
	}
	return rest, "", true
}

// DescribeHolder names a holder for people: "host node-3 (host ID 1f2e3d4c5b6a)", or for an
// old lock without identity "host node-3".
func DescribeHolder(name, id string) string {
	if id == "" {
		return "host " + name
	}
	return fmt.Sprintf("host %s (host ID %s)", name, driver.ShortHostID(id))
}

// LocalClients lists the Ceph clients of this host's mappings (krbd: each mapped device's
// kernel client address, ip:port/nonce). exact is false when the mapper cannot tell its clients
// apart (rbd-fuse): then every client at this host's own IP address counts as this host's.
type LocalClients func(ctx context.Context) (addrs []string, exact bool)

// foreignWatchers returns the watchers that are not this host's: neither one of local's
// addresses, nor (when local is not exact) at selfIP, the IP address of this host's own Ceph
// connection. The connection itself is not among ws (Describe and OtherWatchers leave it out).
func foreignWatchers(ws []Watcher, local []string, exact bool, selfIP string) []Watcher {
	mine := make([]string, 0, len(local))
	for _, a := range local {
		mine = append(mine, normalizeAddr(a))
	}
	var out []Watcher
	for _, w := range ws {
		a := normalizeAddr(w.Addr)
		if slices.Contains(mine, a) || (!exact && selfIP != "" && addrIP(a) == selfIP) {
			continue
		}
		out = append(out, w)
	}
	return out
}

// addrIP is the IP address of ip:port/nonce ("" when it has none). IPv6 addresses may come
// with or without their brackets.
func addrIP(a string) string {
	a, _, _ = strings.Cut(normalizeAddr(a), "/")
	i := strings.LastIndexByte(a, ':')
	if i < 0 {
		return ""
	}
	host := strings.Trim(a[:i], "[]")
	if net.ParseIP(host) == nil {
		return ""
	}
	return host
}

// localAddrs calls local (nil: none known, not exact) with normalized addresses.
func localAddrs(ctx context.Context, local LocalClients) ([]string, bool) {
	if local == nil {
		return nil, false
	}
	addrs, exact := local(ctx)
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if a != "" {
			out = append(out, normalizeAddr(a))
		}
	}
	return out, exact
}

// WaitForeign waits, like WaitUnwatched, until no client other than this host's watches the
// image, and returns those still there when it gave up. A dead client of this host (the rbd-fuse
// of a plugin that crashed) lapses; a live one on another machine stays.
func (c *Cluster) WaitForeign(ctx context.Context, spec Spec, local LocalClients, reserve time.Duration) ([]Watcher, error) {
	self, err := c.ClientAddr()
	if err != nil {
		return nil, err
	}
	return c.waitWatchers(ctx, spec, reserve, func(ws []Watcher) []Watcher {
		addrs, exact := localAddrs(ctx, local)
		return foreignWatchers(ws, addrs, exact, addrIP(self))
	})
}

// ForeignWatchers is WaitForeign reserving TakeOverReserve with no mappings of this host known
// (every client at this connection's IP address counts as this host's), with the addresses of
// the clients still watching (cinder.Watchers).
func (c *Cluster) ForeignWatchers(ctx context.Context, spec Spec) ([]string, error) {
	ws, err := c.WaitForeign(ctx, spec, nil, TakeOverReserve)
	return addrsOf(ws), err
}

// Recording a holder's clients. The holder of a volume writes, on the image header's omap under
// holderKey, its identity and the addresses of every Ceph client it uses the image through: its
// own connection (the one that took the host lock) and its mapping's client (a kernel client, an
// rbd-fuse daemon). A host that takes the volume over from a dead holder blocklists all of them:
// a kernel client that let the exclusive lock go (an `rbd snap create` elsewhere makes it) and
// lost its watch (cut off for 30 s) appears neither as watcher nor as lock owner, yet it would ask
// for the lock back, and get it, as soon as its network returned.

// holderKey is the header omap key of the holder's record ("rbd" tools read only metadata_* and
// their own keys; the record goes with the header when the image is removed).
const holderKey = "ceph-docker-plugin.holder"

// HolderRecord is what a holder records about itself on the image header.
type HolderRecord struct {
	Host    string    `json:"host"`    // NODE_NAME
	ID      string    `json:"id"`      // host identity
	Clients []string  `json:"clients"` // ip:port/nonce of every client it uses the image through
	At      time.Time `json:"at"`
}

// RecordClients records host (name, id) as the image's holder, with this connection's address
// and the extra addresses (the mapping's client, when the mapper knows it), or when there are
// none, the image's current watchers: the holder has just checked that nobody else has the image
// open, so they are its own (rbd-fuse, whose address nothing else tells). It replaces any earlier
// record. OSD requests: the image's ID, the header's watchers when needed, and the write.
func (c *Cluster) RecordClients(ctx context.Context, spec Spec, host, id string, extra []string) (HolderRecord, error) {
	self, err := c.ClientAddr()
	if err != nil {
		return HolderRecord{}, err
	}
	imageID, err := c.ImageID(ctx, spec)
	if err != nil {
		return HolderRecord{}, err
	}
	rec := HolderRecord{Host: host, ID: id, Clients: []string{self}, At: time.Now().UTC()}
	add := func(a string) {
		if a = normalizeAddr(a); a != "" && !slices.Contains(rec.Clients, a) {
			rec.Clients = append(rec.Clients, a)
		}
	}
	for _, a := range extra {
		add(a)
	}
	if len(rec.Clients) == 1 {
		ws, err := c.otherWatchersOf(ctx, spec, imageID)
		if err != nil {
			return rec, err
		}
		for _, w := range ws {
			add(w.Addr)
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return rec, err
	}
	_, err = headerCall(ctx, c, "record holder", spec, imageID, func(io *rados.IOContext, oid string) (struct{}, error) {
		op := rados.CreateWriteOp()
		defer op.Release()
		op.AssertExists() // never make a header for an image removed meanwhile
		op.SetOmap(map[string][]byte{holderKey: b})
		return struct{}{}, op.Operate(io, oid, rados.OperationNoFlag)
	})
	return rec, err
}

// Holder reads the image's holder record; ok is false when there is none.
func (c *Cluster) Holder(ctx context.Context, spec Spec) (rec HolderRecord, ok bool, err error) {
	return c.holderOf(ctx, spec, "")
}

// holderOf is Holder of image id (read from the name when empty).
func (c *Cluster) holderOf(ctx context.Context, spec Spec, imageID string) (rec HolderRecord, ok bool, err error) {
	raw, err := headerCall(ctx, c, "read holder", spec, imageID, func(io *rados.IOContext, oid string) (map[string][]byte, error) {
		return io.GetOmapValues(oid, "", holderKey, 1)
	})
	if err != nil {
		return rec, false, err
	}
	return parseHolder(raw, spec)
}

// parseHolder reads the holder record out of the header's omap values.
func parseHolder(raw map[string][]byte, spec Spec) (rec HolderRecord, ok bool, err error) {
	b, found := raw[holderKey]
	if !found {
		return rec, false, nil
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, opErr("read holder", spec.String(), fmt.Errorf("the holder record is not JSON: %w", err))
	}
	return rec, true, nil
}

// ClearHolder removes the holder record if it is id's. Gone already is success.
func (c *Cluster) ClearHolder(ctx context.Context, spec Spec, id string) error {
	imageID, err := c.ImageID(ctx, spec)
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	rec, ok, err := c.holderOf(ctx, spec, imageID)
	if errors.Is(err, driver.ErrNotFound) || (err == nil && (!ok || rec.ID != id)) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = headerCall(ctx, c, "clear holder", spec, imageID, func(io *rados.IOContext, oid string) (struct{}, error) {
		return struct{}{}, io.RmOmapKeys(oid, []string{holderKey})
	})
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	return err
}

// recordedClients are the clients to fence for holder id: its record's, when the record is id's
// ("" fences none: an old holder without identity recorded nothing).
func recordedClients(rec HolderRecord, ok bool, id string) []string {
	if !ok || id == "" || rec.ID != id {
		return nil
	}
	return rec.Clients
}
