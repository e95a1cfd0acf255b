package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/cinder"
	"github.com/cephdocker/ceph-docker-plugin/driver/volfs"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/krbd"
)

// The doctor checks, with the plugin's own settings, what the plugin needs from the host and the
// cluster, and reports each finding with what to do about it. An installed plugin answers it on
// its own socket, from inside the plugin (its settings, mounts and capabilities):
//
//	curl -s --unix-socket /run/docker/plugins/$(docker plugin inspect -f '{{.Id}}' ceph)/ceph.sock \
//	    http://plugin/Plugin.Doctor
//
// and `ceph-docker-plugin doctor` runs it from the command line with the settings of its
// environment (a host, a lab guest). The command exits 1 when a check failed, 0 otherwise.
// (Not `ctr task exec` into the plugin: dockerd takes the exit of any process of the plugin's
// task for the plugin's own and restarts it, measured with 28.5 to loop for as long as the
// plugin stays enabled.)

// doctorPath is where the plugin's socket answers the doctor.
const doctorPath = "/Plugin.Doctor"

// finding is the outcome of one check.
type finding struct {
	check  string
	status string // "ok", "warn", "fail" or "skip"
	detail string
	fix    string
}

// doctorEnv is what the doctor reads beside the settings: where the host's /sys is, the
// modprobe command, and the Docker socket (tests point them elsewhere).
type doctorEnv struct {
	sysfs        string
	modprobe     string
	dockerSocket string
	now          func() time.Time
}

var defaultDoctorEnv = doctorEnv{sysfs: "/sys", modprobe: "modprobe", dockerSocket: "/var/run/docker.sock", now: time.Now}

// maxClockSkew is the largest difference to the cluster's clock the doctor accepts quietly.
const maxClockSkew = 2 * time.Second

// doctorCommand is `ceph-docker-plugin doctor`: the settings from getenv, the report on out, the
// exit status returned.
func doctorCommand(ctx context.Context, getenv func(string) string, out io.Writer, env doctorEnv) int {
	cfg, err := LoadConfig(getenv)
	if h := getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		env.dockerSocket = strings.TrimPrefix(h, "unix://")
	}
	return runDoctor(ctx, cfg, err, out, env)
}

// doctorHandler answers the doctor on the plugin's socket, with the running plugin's settings:
// HTTP 200 when no check failed, 500 otherwise, the report as text either way.
func doctorHandler(cfg Config, env doctorEnv) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*cfg.CallTimeout)
		defer cancel()
		var buf strings.Builder
		code := runDoctor(ctx, cfg, nil, &buf, env)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if code != 0 {
			w.WriteHeader(http.StatusInternalServerError)
		}
		_, _ = io.WriteString(w, buf.String())
	}
}

// runDoctor runs every check with cfg (cfgErr: what was wrong with the settings), prints the
// findings to out and returns the exit status.
func runDoctor(ctx context.Context, cfg Config, cfgErr error, out io.Writer, env doctorEnv) int {
	var fs []finding
	add := func(f finding) {
		fs = append(fs, f)
		mark := map[string]string{"ok": " OK ", "warn": "WARN", "fail": "FAIL", "skip": "SKIP"}[f.status]
		fmt.Fprintf(out, "[%s] %-10s %s\n", mark, f.check, f.detail)
		if f.fix != "" {
			fmt.Fprintf(out, "       %-10s fix: %s\n", "", f.fix)
		}
	}
	if cfgErr != nil {
		add(finding{"settings", "fail", cfgErr.Error(), "docker plugin disable ceph; docker plugin set ceph KEY=VALUE ...; docker plugin enable ceph"})
		return 1
	}
	add(finding{"settings", "ok", fmt.Sprintf("BACKEND=%s MAPPER=%s pool %s, node %s", cfg.Backend, cfg.Mapper, cfg.Pool, cfg.NodeName), ""})
	add(checkKernelRBD(ctx, cfg, env))
	for _, f := range checkMountRootFindings(cfg) {
		add(f)
	}
	add(growFinding(cfg, volfs.FS{}.OnlineGrowError("ext4")))

	cctx, cancel := context.WithTimeout(ctx, cfg.CephTimeout)
	defer cancel()
	c, err := rbd.Connect(cctx, rbd.Config{ConfPath: cfg.CephConf, Cluster: cfg.CephCluster, User: cfg.CephUser,
		Keyring: cfg.CephKeyring, OpTimeout: cfg.CephTimeout})
	if err != nil {
		add(finding{"ceph", "fail", fmt.Sprintf("cannot connect as client.%s: %v", cfg.CephUser, err),
			fmt.Sprintf("check mon_host in %s, that the monitors run and this host reaches them, and the keyring of client.%s (CEPH_KEYRING)", cfg.CephConf, cfg.CephUser)})
	} else {
		defer c.Close()
		mons, _ := c.Monitors(cctx)
		add(finding{"ceph", "ok", fmt.Sprintf("connected as client.%s (monitors %s)", cfg.CephUser, strings.Join(mons, ", ")), ""})
		for _, f := range checkCeph(cctx, c, cfg, env) {
			add(f)
		}
	}
	if cfg.Backend == "cinder" {
		add(checkCinder(ctx, cfg))
	}
	add(checkDocker(ctx, env))

	failed := 0
	for _, f := range fs {
		if f.status == "fail" {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(out, "%d check(s) failed\n", failed)
		return 1
	}
	fmt.Fprintln(out, "no check failed")
	return 0
}

func checkKernelRBD(ctx context.Context, cfg Config, env doctorEnv) finding {
	if cfg.Mapper == "fuse" {
		return finding{"krbd", "warn", "MAPPER=fuse: volumes are mapped by rbd-fuse, whose I/O stops when the plugin restarts",
			"in production, use MAPPER=krbd or auto with the kernel's rbd module"}
	}
	if krbd.Available(env.sysfs) {
		return finding{"krbd", "ok", "the kernel's rbd driver is loaded", ""}
	}
	lctx, cancel := context.WithTimeout(ctx, modprobeTimeout)
	defer cancel()
	if err := krbd.Load(lctx, env.sysfs, env.modprobe); err == nil {
		return finding{"krbd", "ok", "the kernel's rbd driver was not loaded; modprobe rbd loaded it", ""}
	} else {
		status, what := "fail", "MAPPER=krbd cannot map"
		if cfg.Mapper == "auto" {
			status, what = "warn", "MAPPER=auto falls back to rbd-fuse, whose I/O stops when the plugin restarts"
		}
		return finding{"krbd", status, fmt.Sprintf("the kernel's rbd driver is not loaded and modprobe rbd failed (%v): %s", err, what),
			"install the kernel's modules package (rbd.ko, e.g. linux-image-$(uname -r) or linux-modules-extra) and run modprobe rbd on the host"}
	}
}

// doctorProbeAddr is the address the blocklist check fences for a second: TEST-NET-1
// (RFC 5737), which no Ceph client has.
const doctorProbeAddr = "192.0.2.1:0/"

func checkCeph(ctx context.Context, c *rbd.Cluster, cfg Config, env doctorEnv) []finding {
	var fs []finding
	if _, err := c.List(ctx, cfg.Pool, ""); err != nil {
		fs = append(fs, finding{"pool", "fail", fmt.Sprintf("cannot list images in pool %s: %v", cfg.Pool, err),
			fmt.Sprintf("create the pool (ceph osd pool create %s; rbd pool init %s) or give client.%s osd 'profile rbd pool=%s'", cfg.Pool, cfg.Pool, cfg.CephUser, cfg.Pool)})
	} else {
		fs = append(fs, finding{"pool", "ok", fmt.Sprintf("client.%s can read pool %s", cfg.CephUser, cfg.Pool), ""})
	}
	// Fencing a dead holder needs the right to blocklist: try it on an address no client has,
	// for one second.
	probe := fmt.Sprintf("%s%d", doctorProbeAddr, env.now().UnixNano()%1_000_000_000)
	switch err := c.Blocklist(ctx, probe, time.Second); {
	case err == nil:
		fs = append(fs, finding{"blocklist", "ok", fmt.Sprintf("client.%s may blocklist (fence) clients", cfg.CephUser), ""})
	default:
		status := "warn"
		if cfg.LockBreak {
			status = "fail"
		}
		fs = append(fs, finding{"blocklist", status, fmt.Sprintf("client.%s may not blocklist clients (%v): a takeover from a dead host (LOCK_BREAK=on) cannot fence it", cfg.CephUser, err),
			fmt.Sprintf("ceph auth caps client.%s mon 'profile rbd' osd 'profile rbd pool=%s' mgr 'profile rbd pool=%s'", cfg.CephUser, cfg.Pool, cfg.Pool)})
	}
	server, rt, err := c.ServerTime(ctx, cfg.Pool, "ceph-docker-plugin.doctor."+cfg.NodeName)
	if err != nil {
		fs = append(fs, finding{"clock", "warn", fmt.Sprintf("cannot read the cluster's clock: %v", err), ""})
	} else {
		skew := env.now().Sub(server)
		if skew < 0 {
			skew = -skew
		}
		if skew > maxClockSkew+rt {
			fs = append(fs, finding{"clock", "fail", fmt.Sprintf("this host's clock is %s off the cluster's", skew.Round(time.Millisecond)),
				"synchronise the clocks (chrony or systemd-timesyncd, against the servers Ceph's hosts use)"})
		} else {
			fs = append(fs, finding{"clock", "ok", fmt.Sprintf("within %s of the cluster's clock", (skew + rt).Round(time.Millisecond)), ""})
		}
	}
	return fs
}

func checkCinder(ctx context.Context, cfg Config) finding {
	cctx, cancel := context.WithTimeout(ctx, cfg.CallTimeout)
	defer cancel()
	p := cinder.New(cinder.Config{Auth: openstackAuth(cfg.OpenStack), Region: cfg.OpenStack.Region, CACert: cfg.OpenStack.CACert,
		Host: cfg.NodeName, CephUser: cfg.CephUser})
	vols, err := p.List(cctx)
	if err != nil {
		return finding{"cinder", "fail", fmt.Sprintf("cannot list the project's volumes through %s: %v", cfg.OpenStack.AuthURL, err),
			"check OS_AUTH_URL, the credentials (OS_USERNAME/OS_PASSWORD or the application credential), OS_PROJECT_* and OS_REGION_NAME, and that the user has a role in the project"}
	}
	return finding{"cinder", "ok", fmt.Sprintf("Keystone and Cinder answer (%d volumes listed)", len(vols)), ""}
}

// checkDocker asks the Docker engine its version, where its socket is reachable (from the host;
// not from inside the managed plugin).
func checkDocker(ctx context.Context, env doctorEnv) finding {
	if _, err := os.Stat(env.dockerSocket); err != nil {
		return finding{"docker", "skip", fmt.Sprintf("no Docker socket at %s (inside the managed plugin there is none)", env.dockerSocket),
			"run docker version on the host: 20.10 or later; swarm cluster volumes need 28.2 or later"}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", env.dockerSocket)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/version", nil)
	if err != nil {
		return finding{"docker", "fail", err.Error(), ""}
	}
	resp, err := client.Do(req)
	if err != nil {
		return finding{"docker", "fail", fmt.Sprintf("the Docker engine at %s does not answer: %v", env.dockerSocket, err), "start dockerd"}
	}
	defer resp.Body.Close()
	var v struct{ Version, APIVersion string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.Version == "" {
		return finding{"docker", "fail", fmt.Sprintf("unexpected answer from %s: %v", env.dockerSocket, errors.Join(err, fmt.Errorf("HTTP %d", resp.StatusCode))), ""}
	}
	var major, minor int
	fmt.Sscanf(v.Version, "%d.%d", &major, &minor)
	switch {
	case major < 20 || (major == 20 && minor < 10):
		return finding{"docker", "fail", fmt.Sprintf("Docker %s (API %s) is older than 20.10, the oldest engine tested", v.Version, v.APIVersion), "upgrade the Docker engine"}
	case major < 28 || (major == 28 && minor < 2):
		return finding{"docker", "ok", fmt.Sprintf("Docker %s (API %s); swarm cluster volumes (CSI) need 28.2 or later", v.Version, v.APIVersion), ""}
	}
	return finding{"docker", "ok", fmt.Sprintf("Docker %s (API %s)", v.Version, v.APIVersion), ""}
}
