// Command ceph-docker-plugin serves Docker's volume plugin protocol (docker.volumedriver/1.0)
// for Ceph RBD volumes. It loads and validates its settings, opens its socket first (the daemon
// gives up on a plugin that is silent for about 12 s), reconciles what a previous run left, and
// serves until SIGTERM.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/docker/go-plugins-helpers/volume"
	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/cinder"
	"github.com/cephdocker/ceph-docker-plugin/csi"
	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/metrics"
	"github.com/cephdocker/ceph-docker-plugin/driver/volfs"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/fuse"
	"github.com/cephdocker/ceph-docker-plugin/rbd/krbd"
)

func main() {
	// First of all: the secret settings leave the environment (this may re-execute the binary).
	secrets, warning, err := takeSecrets()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceph-docker-plugin:", err)
		os.Exit(1)
	}
	unsetEmpty("CEPH_KEYRING", "CEPH_CONF") // before anything connects to Ceph (doctor included)
	getenv := func(name string) string {
		if v, ok := secrets[name]; ok {
			return v
		}
		return os.Getenv(name)
	}
	if len(os.Args) > 1 && os.Args[1] == "doctor" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		code := doctorCommand(ctx, getenv, os.Stdout, defaultDoctorEnv)
		cancel()
		os.Exit(code)
	}
	if err := run(getenv, warning); err != nil {
		logrus.WithError(err).Error("ceph-docker-plugin stopped")
		fmt.Fprintln(os.Stderr, "ceph-docker-plugin:", err)
		os.Exit(1)
	}
}

// run serves until SIGTERM. getenv reads the settings, the secret ones among them (which
// takeSecrets took out of the environment); warning, if set, says why the environment could not
// be scrubbed.
func run(getenv func(string) string, warning string) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return err
	}
	splitOutput(logrus.StandardLogger(), os.Stdout, os.Stderr)
	logrus.SetLevel(cfg.LogLevel)
	if cfg.LogFormat == "json" {
		logrus.SetFormatter(&logrus.JSONFormatter{})
	}
	log := logrus.WithFields(logrus.Fields{"node": cfg.NodeName, "backend": cfg.Backend})
	if warning != "" {
		log.Warn(warning)
	}

	// Socket first.
	ln, err := listenFor(cfg)
	if err != nil {
		return err
	}
	defer ln.Close()

	checkMountRoot(cfg, log)
	mapper, err := newMapper(cfg, log)
	if err != nil {
		return err
	}
	store, err := driver.NewFileStore(cfg.StateDir)
	if err != nil {
		return err
	}
	host, err := hostIdentity(cfg, log)
	if err != nil {
		return err
	}
	local := mapperClients(mapper)
	// One connection to Ceph, made in the background: the plugin serves even while Ceph does
	// not answer yet.
	conn := rbd.NewConnector(rbd.Config{ConfPath: cfg.CephConf, Cluster: cfg.CephCluster,
		User: cfg.CephUser, Keyring: cfg.CephKeyring, OpTimeout: cfg.CephTimeout, Log: log}, log)
	conn.Wait, conn.ConnectTimeout = min(cfg.CallTimeout/2, 10*time.Second), cfg.CallTimeout
	defer conn.Close()
	var prov driver.Provisioner
	var capacity csi.Capacity // GetCapacity: only where the backend can say
	switch cfg.Backend {
	case "cinder":
		o := cfg.OpenStack
		ccfg := cinder.Config{Auth: openstackAuth(o), Region: o.Region, CACert: o.CACert, Host: cfg.NodeName, HostID: host.ID, CephUser: cfg.CephUser}
		guard := rbd.Guard{Conn: conn, Local: local}
		ccfg.Watchers = guard
		ccfg.Recorder = guard
		if cfg.LockBreak {
			ccfg.Fencer = guard
		}
		prov = cinder.New(ccfg)
	default:
		conn.Start()
		lazy := rbd.NewLazy(conn, rbd.ProvisionerConfig{
			Pool: cfg.Pool, DataPool: cfg.DataPool, Features: cfg.Features, Host: cfg.NodeName,
			HostID: host.ID, Local: local, Log: log})
		prov, capacity = lazy, lazy
	}
	dcfg := driver.Config{
		Node: cfg.NodeName, MountRoot: cfg.MountRoot,
		Defaults:     driver.OptionDefaults{Size: cfg.DefaultSize, FSType: cfg.DefaultFSType, Root: cfg.DefaultRoot},
		RemoveAction: cfg.RemoveAction, LockBreak: cfg.LockBreak, Log: log,
		// The undo of a failed Mount gets as long as the call had: dockerd waits 120 s for a
		// Mount, CALL_TIMEOUT is below 60 s, and what the undo cannot finish is retried in the
		// background.
		CleanupTimeout: cfg.CallTimeout,
		Known:          store,
		BootID:         bootID(cfg, log),
		FrontEnd:       cfg.Protocol, // driver.FrontEndVolume or FrontEndCSI (config.go)
		FS:             volfs.FS{},
	}
	if f, ok := mapper.(*fuse.Fuse); ok {
		dcfg.Refresher = f // its loop devices keep their size; krbd's follow their image by themselves
	}
	if cfg.FaultKillAt != "" {
		log.WithField("step", cfg.FaultKillAt).Warn("TEST_FAULT_KILL_AT is set: this process kills itself at that step (tests only)")
		dcfg.Fault = func(step driver.FaultStep) {
			if string(step) == cfg.FaultKillAt {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	var rec *metrics.Recorder
	if cfg.MetricsAddr != "" {
		rec = metrics.New(store, cfg.Backend)
		dcfg.Observer = rec
	}
	d := driver.New(dcfg, prov, mapper, volfs.FS{}, store)
	plugin := &driver.Plugin{D: d, Timeout: cfg.CallTimeout, Log: log}
	if rec != nil {
		plugin.Observer = rec
		stopMetrics, err := serveMetrics(cfg.MetricsAddr, rec, log)
		if err != nil {
			return err
		}
		defer stopMetrics()
	}
	serveErr := make(chan error, 1)
	var node *driver.Node
	if cfg.Protocol == "csi" {
		node = driver.NewNode(d, volfs.FS{}, store)
		var obs csi.CallObserver
		if rec != nil {
			obs = rec
		}
		go func() { serveErr <- serveCSI(cfg, d, node, capacity, ln, log, obs) }()
	} else {
		h := volume.NewHandler(plugin)
		h.HandleFunc(doctorPath, doctorHandler(cfg, defaultDoctorEnv))
		go func() { serveErr <- h.Serve(ln) }()
		log.WithFields(logrus.Fields{"socket": cfg.Socket, "pool": cfg.Pool, "mapper": fmt.Sprintf("%T", mapper)}).Info("serving")
	}

	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Minute)
	start := time.Now()
	if err := d.Reconcile(rctx); err != nil {
		log.WithError(err).Error("reconcile left volumes to repair on their next call")
	}
	if node != nil {
		// The CSI stages ride on the core's volumes: repaired once those are.
		_ = node.Reconcile(rctx) // logs what it leaves
	}
	rcancel()
	log.WithField("duration", time.Since(start).Round(time.Millisecond)).Info("reconciled")

	// What could not be undone when it failed (the backend was unreachable) is finished in the
	// background once the backend is back, not only when Docker next calls about the volume.
	bg, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	logGrowth(log, cfg, volfs.FS{}.OnlineGrowError("ext4"))
	go d.WatchGrowth(bg, cfg.GrowInterval)
	go func() {
		t := time.NewTicker(repairInterval)
		defer t.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(bg, cfg.CallTimeout)
			if err := d.RepairPending(ctx); err != nil {
				log.WithError(err).Warn("background repair: will try again")
			}
			cancel()
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.WithField("signal", s.String()).Info("stopping")
		return nil
	case err := <-serveErr:
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
}

// repairInterval is how often interrupted operations are retried in the background.
const repairInterval = 15 * time.Second

func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// bootID identifies this boot of the kernel (the same inside the plugin's container), so that
// the reconcile knows state recorded before a reboot. "" if unreadable: state is then taken as
// of this boot.
func bootID(cfg Config, log *logrus.Entry) string {
	if cfg.BootID != "" {
		log.WithField("boot", cfg.BootID).Warn("TEST_BOOT_ID is set: it stands for the kernel's boot ID (tests only)")
		return cfg.BootID
	}
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		log.WithError(err).Warn("cannot read the kernel's boot ID: after a reboot, volumes of containers that ended with it are mapped again until dockerd unmounts them")
		return ""
	}
	return strings.TrimSpace(string(b))
}

// modprobeTimeout bounds loading the rbd module at start (it takes well under a second).
const modprobeTimeout = 10 * time.Second

func newMapper(cfg Config, log *logrus.Entry) (driver.Mapper, error) {
	kind := cfg.Mapper
	if kind != "fuse" && !krbd.Available("/sys") {
		// The host usually has the module, loaded only on first use: load it, as rbd map does.
		ctx, cancel := context.WithTimeout(context.Background(), modprobeTimeout)
		err := krbd.Load(ctx, "/sys", "modprobe")
		cancel()
		switch {
		case err == nil:
			log.Info("loaded the kernel's rbd driver (modprobe rbd)")
		case kind == "auto":
			log.WithError(err).Warn("MAPPER=auto: the kernel's rbd driver is not loaded and modprobe rbd failed; using rbd-fuse + loop, whose I/O stops if the plugin restarts")
			kind = "fuse"
		default:
			return nil, fmt.Errorf("MAPPER=krbd: the kernel's rbd driver is not loaded (/sys/bus/rbd/add_single_major is missing) and loading it failed: %w: run modprobe rbd on the host, or use MAPPER=fuse", err)
		}
	}
	if kind == "auto" {
		kind = "krbd"
	}
	switch kind {
	case "krbd":
		k := krbd.New(krbd.KeyringFile{Path: cfg.CephKeyring, Cluster: cfg.CephCluster})
		k.Log = log
		return k, nil
	default:
		m := fuse.New(filepath.Join(cfg.MountRoot, ".rbd-fuse"), cfg.CephConf, cfg.CephKeyring)
		m.Cluster = cfg.CephCluster
		m.Log = log
		return m, nil
	}
}

// unsetEmpty removes the variables that are set but empty. librados reads CEPH_KEYRING and
// CEPH_CONF from the environment as its keyring and conf options: the managed plugin's settings
// put CEPH_KEYRING="" there when it is left at its default ("search the default places"), and
// librados then has no keyring at all and fails to authenticate (EACCES). The docker guest of the
// krbd lab runs the plugin with its config.json defaults, and so covers this.
func unsetEmpty(names ...string) {
	for _, n := range names {
		if v, ok := os.LookupEnv(n); ok && v == "" {
			_ = os.Unsetenv(n)
		}
	}
}
