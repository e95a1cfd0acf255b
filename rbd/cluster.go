package rbd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// DefaultOpTimeout bounds a single librados call when Config.OpTimeout is zero.
const DefaultOpTimeout = 30 * time.Second

// Config says how to reach the cluster.
type Config struct {
	ConfPath string // ceph.conf; empty for librados' default search
	Cluster  string // cluster name; empty for "ceph"
	User     string // cephx user without "client."; empty for "admin"
	Keyring  string // keyring path; empty for librados' default search
	// OpTimeout bounds each librados operation and the initial connection, whatever the caller's
	// context says (it is what ends a call the caller has already given up on).
	OpTimeout time.Duration
	// Log gets what no caller can be told: the undo of a call completed after its caller gave
	// up, when it fails (nil: logrus' standard logger).
	Log logrus.FieldLogger
}

func (c Config) withDefaults() Config {
	if c.Cluster == "" {
		c.Cluster = "ceph"
	}
	if c.User == "" {
		c.User = "admin"
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = DefaultOpTimeout
	}
	return c
}

// Cluster is a connection to a Ceph cluster. It is safe for concurrent use.
type Cluster struct {
	cfg  Config
	conn *rados.Conn

	// mu guards the fields below; it is never held across a call into librados that can wait on
	// the cluster.
	mu     sync.Mutex
	ioctxs map[string]*rados.IOContext // by pool + "/" + namespace
	// opening are the pools being opened, by the same key: callers of one pool wait for one open.
	opening map[string]*poolOpen
	closed  bool
	// shutdown is set once the connection is shut down: a late pool open then leaks its context
	// instead of touching the dead connection.
	shutdown bool
	// openIOContext opens a pool (conn.OpenIOContext; tests fake it).
	openIOContext func(pool string) (*rados.IOContext, error)
	// inflight counts the calls running, abandoned ones and their undo included: Close waits
	// for them, because librados aborts the process on an operation submitted after shutdown.
	inflight sync.WaitGroup
}

// Connect connects to the cluster within ctx's deadline (and within cfg.OpTimeout).
func Connect(ctx context.Context, cfg Config) (*Cluster, error) {
	cfg = cfg.withDefaults()
	what := "client." + cfg.User
	conn, err := rados.NewConnWithClusterAndUser(cfg.Cluster, "client."+cfg.User)
	if err != nil {
		return nil, opErr("connect", what, err)
	}
	if cfg.ConfPath != "" {
		err = conn.ReadConfigFile(cfg.ConfPath)
	} else {
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		conn.Shutdown()
		return nil, &OpError{Op: "connect", What: what, Kind: driver.ErrInvalid,
			Err: fmt.Errorf("cannot read the Ceph config %q: %w", cfg.ConfPath, err)}
	}
	secs := strconv.Itoa(int((cfg.OpTimeout + time.Second - 1) / time.Second))
	opts := [][2]string{
		{"rados_osd_op_timeout", secs},
		{"rados_mon_op_timeout", secs},
		{"client_mount_timeout", secs},
	}
	if cfg.Keyring != "" {
		opts = append(opts, [2]string{"keyring", cfg.Keyring})
	}
	for _, o := range opts {
		if err := conn.SetConfigOption(o[0], o[1]); err != nil {
			conn.Shutdown()
			return nil, opErr("connect", what, fmt.Errorf("set %s: %w", o[0], err))
		}
	}
	c := newCluster(cfg, conn)
	// A connect abandoned at the deadline shuts its connection down when it finally returns.
	err = c.do(ctx, "connect", what, conn.Connect, func(error) { conn.Shutdown() })
	if err != nil {
		var oe *OpError
		if errors.As(err, &oe) && oe.Kind == driver.ErrTimeout {
			oe.Err = fmt.Errorf("no monitor answered (check mon host in %s and that the monitors run): %w", cfg.ConfPath, oe.Err)
		} else if errors.As(err, &oe) && oe.Kind == driver.ErrPermission {
			oe.Err = fmt.Errorf("authentication failed (check the keyring for client.%s): %w", cfg.User, oe.Err)
		}
		if !errors.Is(err, driver.ErrTimeout) {
			conn.Shutdown()
		}
		return nil, err
	}
	return c, nil
}

func newCluster(cfg Config, conn *rados.Conn) *Cluster {
	c := &Cluster{cfg: cfg, conn: conn, ioctxs: map[string]*rados.IOContext{}, opening: map[string]*poolOpen{}}
	if conn != nil {
		c.openIOContext = conn.OpenIOContext
	}
	return c
}

// Close releases the connection. Calls still running (those their callers gave up on, and the
// undo of what they did) are waited for, at most twice the operation timeout that bounds them:
// librados aborts the process on an operation submitted after shutdown. Calls made after Close
// fail.
func (c *Cluster) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * c.cfg.OpTimeout):
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, io := range c.ioctxs {
		io.Destroy()
	}
	c.ioctxs = nil
	if c.conn != nil { // nil: a cluster of unit tests
		c.conn.Shutdown()
	}
	c.shutdown = true
}

// User is the cephx user this cluster connection authenticates as (without "client.").
func (c *Cluster) User() string { return c.cfg.User }

// call runs fn in its own goroutine and returns its result, or a timeout error as soon as ctx
// ends. fn's result travels only through a channel: an abandoned fn shares nothing with the
// caller. When the caller has given up, late (if not nil) gets fn's eventual result, to take back
// what fn did (see undoIfOK). fn is bounded by librados' own timeouts (OpTimeout).
func call[T any](ctx context.Context, c *Cluster, op, what string, fn func() (T, error), late func(T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, &OpError{Op: op, What: what, Kind: driver.ErrTimeout, Err: err}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return zero, &OpError{Op: op, What: what, Kind: driver.ErrInvalid, Err: errors.New("the cluster connection is closed")}
	}
	c.inflight.Add(1)
	c.mu.Unlock()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		c.inflight.Done()
		return r.v, opErr(op, what, r.err)
	case <-ctx.Done():
		go func() {
			defer c.inflight.Done() // after fn and its undo
			r := <-done
			if late != nil {
				late(r.v, r.err)
			}
		}()
		return zero, &OpError{Op: op, What: what, Kind: driver.ErrTimeout,
			Err: fmt.Errorf("Ceph did not answer before the deadline: %w", ctx.Err())}
	}
}

// do is call for functions without a result.
func (c *Cluster) do(ctx context.Context, op, what string, fn func() error, late func(error)) error {
	var l func(struct{}, error)
	if late != nil {
		l = func(_ struct{}, err error) { late(err) }
	}
	_, err := call(ctx, c, op, what, func() (struct{}, error) { return struct{}{}, fn() }, l)
	return err
}

// undoIfOK adapts an undo step for do: it runs only if the abandoned call succeeded. Nobody
// waits for it any more, so a failure is logged, naming what it left (op on what).
func (c *Cluster) undoIfOK(op, what string, undo func() error) func(error) {
	return func(err error) {
		if err == nil {
			c.reportLate(op, what, undo())
		}
	}
}

// reportLate logs the failed undo of a call that completed after its caller gave up.
func (c *Cluster) reportLate(op, what string, err error) {
	if err == nil {
		return
	}
	log := c.cfg.Log
	if log == nil {
		log = logrus.StandardLogger()
	}
	log.WithFields(logrus.Fields{"op": op, "image": what}).WithError(err).
		Warn("rbd: a call completed after its caller gave up, and undoing it failed: what it did stays until removed by hand")
}

// ioctx returns the IOContext for the pool and namespace, opening it on first use.
//
// Opening looks the pool up in the client's OSD map; a pool missing from it (new since the map
// was fetched, or misspelt) makes librados wait for the latest map from the monitors, with no
// timeout of its own. So the open runs in a goroutine of its own, without c.mu: the caller waits
// for it at most until ctx ends, while calls on pools already open go on. An open the caller gave
// up on completes in the background (once a monitor answers) and is kept for the next call;
// concurrent callers for one pool share one open.
func (c *Cluster) ioctx(ctx context.Context, pool, ns string) (*rados.IOContext, error) {
	if pool == "" {
		return nil, &OpError{Op: "open pool", What: "(empty)", Kind: driver.ErrInvalid, Err: errors.New("no pool given")}
	}
	key := pool + "/" + ns
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, &OpError{Op: "open pool", What: pool, Kind: driver.ErrInvalid, Err: errors.New("the cluster connection is closed")}
	}
	if io, ok := c.ioctxs[key]; ok {
		c.mu.Unlock()
		return io, nil
	}
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return nil, &OpError{Op: "open pool", What: pool, Kind: driver.ErrTimeout, Err: err}
	}
	op, ok := c.opening[key]
	if !ok {
		op = &poolOpen{done: make(chan struct{})}
		c.opening[key] = op
		c.inflight.Add(1)
		go c.openPool(key, pool, ns, op)
	}
	c.mu.Unlock()
	select {
	case <-op.done:
		return op.io, op.err
	case <-ctx.Done():
		return nil, &OpError{Op: "open pool", What: pool, Kind: driver.ErrTimeout,
			Err: fmt.Errorf("pool %q is not in this client's OSD map, and no monitor sent a newer map before the deadline "+
				"(check that the pool exists and that the monitors answer): %w", pool, ctx.Err())}
	}
}

// poolOpen is one open of a pool: done is closed once io or err is set.
type poolOpen struct {
	done chan struct{}
	io   *rados.IOContext
	err  error
}

// openPool opens a pool for ioctx and keeps the context for later calls.
func (c *Cluster) openPool(key, pool, ns string, op *poolOpen) {
	defer c.inflight.Done()
	io, err := c.openIOContext(pool)
	if err == nil && ns != "" {
		io.SetNamespace(ns)
	}
	c.mu.Lock()
	delete(c.opening, key)
	switch {
	case err != nil:
		op.err = &OpError{Op: "open pool", What: pool, Kind: kindOf(err),
			Err: fmt.Errorf("pool %q cannot be opened (does it exist, and may client.%s use it?): %w", pool, c.cfg.User, err)}
	case c.closed:
		if !c.shutdown {
			io.Destroy()
		}
		op.err = &OpError{Op: "open pool", What: pool, Kind: driver.ErrInvalid, Err: errors.New("the cluster connection is closed")}
	default:
		c.ioctxs[key] = io
		op.io = io
	}
	c.mu.Unlock()
	close(op.done)
}

// monCommand runs a monitor command under ctx and returns its JSON output.
func (c *Cluster) monCommand(ctx context.Context, op string, cmd map[string]any) ([]byte, error) {
	cmd["format"] = "json"
	args, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	return call(ctx, c, op, "mon", func() ([]byte, error) {
		out, status, err := c.conn.MonCommand(args)
		if err != nil && status != "" {
			return nil, fmt.Errorf("%w: %s", err, status)
		}
		return out, err
	}, nil)
}

// Monitors returns the monitors' v1 (legacy protocol) addresses, host:port, as the kernel rbd
// client wants them.
func (c *Cluster) Monitors(ctx context.Context) ([]string, error) {
	out, err := c.monCommand(ctx, "mon dump", map[string]any{"prefix": "mon dump"})
	if err != nil {
		return nil, err
	}
	return parseMonDump(out)
}

// parseMonDump reads the v1 addresses out of `mon dump` JSON.
func parseMonDump(out []byte) ([]string, error) {
	var dump struct {
		Mons []struct {
			PublicAddrs struct {
				Addrvec []struct {
					Type string `json:"type"`
					Addr string `json:"addr"`
				} `json:"addrvec"`
			} `json:"public_addrs"`
		} `json:"mons"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		return nil, opErr("mon dump", "mon", fmt.Errorf("unexpected output: %w", err))
	}
	var mons []string
	for _, m := range dump.Mons {
		for _, a := range m.PublicAddrs.Addrvec {
			if a.Type == "v1" {
				mons = append(mons, a.Addr)
			}
		}
	}
	if len(mons) == 0 {
		return nil, opErr("mon dump", "mon", errors.New("no monitor has a v1 address (the kernel client needs one)"))
	}
	return mons, nil
}

// ClientAddr is this connection's own address (ip:port/nonce), as it appears among an image's
// watchers and in the OSD blocklist.
func (c *Cluster) ClientAddr() (string, error) {
	addrs, err := c.conn.GetAddrs()
	if err != nil {
		return "", opErr("getaddrs", "client."+c.cfg.User, err)
	}
	return normalizeAddr(addrs), nil
}

// normalizeAddr reduces the forms Ceph prints an entity address in ("v1:1.2.3.4:0/123",
// "[v2:1.2.3.4:0/123,v1:...]", "1.2.3.4:0/123") to ip:port/nonce of its first address.
func normalizeAddr(a string) string {
	a = strings.TrimPrefix(strings.TrimSpace(a), "[")
	a = strings.TrimSuffix(a, "]")
	if i := strings.IndexByte(a, ','); i >= 0 {
		a = a[:i]
	}
	for _, p := range []string{"v1:", "v2:", "any:"} {
		a = strings.TrimPrefix(a, p)
	}
	return a
}

// Blocklist fences a client address (ip:port/nonce) for expire (0: Ceph's default, one hour): the
// OSDs then refuse its I/O, so a host that is not dead but only unreachable cannot write after
// its lock was taken over. Needs mon 'profile rbd' (or 'allow command "osd blocklist"').
func (c *Cluster) Blocklist(ctx context.Context, addr string, expire time.Duration) error {
	cmd := map[string]any{"prefix": "osd blocklist", "blocklistop": "add", "addr": normalizeAddr(addr)}
	if expire > 0 {
		// A JSON real: the monitor refuses an integer for this float field ("bad or missing
		// field 'expire'").
		cmd["expire"] = json.Number(strconv.FormatFloat(expire.Seconds(), 'f', 3, 64))
	}
	_, err := c.monCommand(ctx, "blocklist", cmd)
	return err
}

// Blocklisted reports whether addr is on the OSD blocklist.
func (c *Cluster) Blocklisted(ctx context.Context, addr string) (bool, error) {
	out, err := c.monCommand(ctx, "blocklist ls", map[string]any{"prefix": "osd blocklist ls"})
	if err != nil {
		return false, err
	}
	return blocklisted(out, addr)
}

// blocklisted reports whether `osd blocklist ls` JSON lists addr. Pacific prints two JSON
// arrays: the address blocklist, then the range blocklist.
func blocklisted(out []byte, addr string) (bool, error) {
	var entries []struct {
		Addr string `json:"addr"`
	}
	if err := json.NewDecoder(bytes.NewReader(out)).Decode(&entries); err != nil {
		return false, opErr("blocklist ls", "mon", fmt.Errorf("unexpected output: %w", err))
	}
	want := normalizeAddr(addr)
	for _, e := range entries {
		if normalizeAddr(e.Addr) == want {
			return true, nil
		}
	}
	return false, nil
}
