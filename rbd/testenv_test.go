//go:build integration

package rbd_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/plugin/plugintest"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// The integration tests read the lab cluster's coordinates from the environment (scripts/ceph-up.sh
// writes them; `make test` exports them). A missing variable fails the test: it never skips.
type labEnv struct {
	conf, user, keyring, adminKeyring, pool string
}

func lab(t testing.TB) labEnv {
	t.Helper()
	c := plugintest.MustCeph(t)
	e := labEnv{conf: c.Conf, user: c.User, keyring: c.Keyring, adminKeyring: c.AdminKeyring, pool: c.Pool}
	if e.user == "admin" {
		t.Fatal("integration tests must run as the least-privilege user, not client.admin")
	}
	return e
}

// connect opens a connection as the least-privilege user.
func (e labEnv) connect(t testing.TB) *rbd.Cluster { return e.connectWith(t, 10*time.Second) }

// connectWith is connect with librados' own per-operation timeout set to opTimeout.
func (e labEnv) connectWith(t testing.TB, opTimeout time.Duration) *rbd.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := rbd.Connect(ctx, rbd.Config{ConfPath: e.conf, User: e.user, Keyring: e.keyring, OpTimeout: opTimeout})
	if err != nil {
		t.Fatalf("connect as client.%s: %v", e.user, err)
	}
	t.Cleanup(c.Close)
	return c
}

// admin opens a connection as client.admin, for test set-up only.
func (e labEnv) admin(t testing.TB) *rbd.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := rbd.Connect(ctx, rbd.Config{ConfPath: e.conf, User: "admin", Keyring: e.adminKeyring, OpTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("connect as client.admin: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func uniqueName(prefix string) string { return plugintest.Uniq(prefix) }

func ctxFor(t testing.TB, d time.Duration) context.Context { return plugintest.Context(t, d) }

// ceph runs the ceph CLI as client.admin (test set-up only).
func (e labEnv) ceph(t testing.TB, args ...string) string {
	t.Helper()
	out, err := plugintest.Ceph{Conf: e.conf, AdminKeyring: e.adminKeyring}.Admin("ceph", args...)
	if err != nil {
		t.Fatalf("ceph %v: %v", args, err)
	}
	return out
}

func (e labEnv) hasPool(t testing.TB, pool string) bool {
	for _, p := range strings.Fields(e.ceph(t, "osd", "pool", "ls")) {
		if p == pool {
			return true
		}
	}
	return false
}

// ensureOtherPool makes a healthy pool that the least-privilege user has no caps on.
func ensureOtherPool(t testing.TB, e labEnv) string {
	const pool = "cdp-other"
	if !e.hasPool(t, pool) {
		e.ceph(t, "osd", "pool", "create", pool, "8", "8")
		e.ceph(t, "osd", "pool", "set", pool, "size", "1", "--yes-i-really-mean-it")
		e.ceph(t, "osd", "pool", "application", "enable", pool, "rbd")
	}
	return pool
}

// blockedPool makes a pool whose placement groups map to no OSD (its CRUSH rule starts from an
// empty root), so that every I/O to it waits forever: the "Ceph does not answer" case, without
// disturbing the other tests. The pool is deleted when the test ends.
func blockedPool(t testing.TB, e labEnv) string {
	const pool, root, rule = "cdp-blocked", "cdp-empty", "cdp-nowhere"
	if e.hasPool(t, pool) {
		e.ceph(t, "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it")
	}
	e.ceph(t, "osd", "crush", "add-bucket", root, "root")
	if !strings.Contains(e.ceph(t, "osd", "crush", "rule", "ls"), rule) {
		e.ceph(t, "osd", "crush", "rule", "create-replicated", rule, root, "osd")
	}
	e.ceph(t, "osd", "pool", "create", pool, "8", "8", "replicated", rule)
	e.ceph(t, "osd", "pool", "application", "enable", pool, "rbd")
	t.Cleanup(func() { e.ceph(t, "osd", "pool", "rm", pool, pool, "--yes-i-really-really-mean-it") })
	return pool
}

// cloneOf clones snap into a new image named after prefix, removed (and the snapshot unprotected
// and removed) when the test ends.
func cloneOf(t *testing.T, c *rbd.Cluster, snap rbd.Spec, prefix string, opts rbd.CreateOptions) rbd.Spec {
	t.Helper()
	clone := rbd.Spec{Pool: snap.Pool, Image: uniqueName(prefix)}
	if err := c.Clone(ctxFor(t, 60*time.Second), snap, clone, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx := ctxFor(t, 60*time.Second)
		_ = c.Remove(cctx, clone)
		_ = c.UnprotectSnap(cctx, snap)
		_ = c.RemoveSnap(cctx, snap)
	})
	return clone
}
