package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"github.com/sirupsen/logrus"
)

// In a managed plugin, MOUNT_ROOT must be config.json's propagatedMount, which dockerd makes a
// shared mount point: the volumes mounted under anything else never reach the containers. And
// STATE_DIR must be under it: elsewhere the state is lost when the plugin is upgraded or
// reinstalled, and the volumes in use are never released. The plugin warns about both at start
// (checkMountRoot) and the doctor reports them (checkMountRootFindings), from one inspection.

// mountRootState is what inspectMountRoot found.
type mountRootState struct {
	err          error // reading the mount table failed
	shared       bool  // the mount on top at MOUNT_ROOT propagates (shared:N)
	stateOutside bool  // STATE_DIR is not under MOUNT_ROOT
}

func inspectMountRoot(cfg Config) mountRootState {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(cfg.MountRoot))
	// Of mounts stacked there, the last one listed is the one on top.
	s := mountRootState{err: err, shared: err == nil && len(ms) > 0 && strings.Contains(ms[len(ms)-1].Optional, "shared:")}
	rel, err := filepath.Rel(cfg.MountRoot, cfg.StateDir)
	s.stateOutside = err != nil || rel == "." || strings.HasPrefix(rel, "..")
	return s
}

// checkMountRoot warns about MOUNT_ROOT and STATE_DIR settings that break a managed plugin. In
// CSI mode only swarm's publish targets, binds under /data/published, must propagate.
func checkMountRoot(cfg Config, log *logrus.Entry) {
	s := inspectMountRoot(cfg)
	if s.err == nil && cfg.Protocol != "csi" && !s.shared {
		log.WithField("mount_root", cfg.MountRoot).Warn("MOUNT_ROOT is not a shared mount point: in the managed plugin, containers will not see the volumes mounted under it; " +
			"there it must be config.json's propagatedMount, /mnt/volumes (the default)")
	}
	if s.stateOutside {
		log.WithFields(logrus.Fields{"state_dir": cfg.StateDir, "mount_root": cfg.MountRoot}).Warn("STATE_DIR is not under MOUNT_ROOT: " +
			"in the managed plugin, the state is then lost when the plugin is upgraded or reinstalled, and volumes in use are not released")
	}
}

// checkMountRootFindings is what checkMountRoot warns about, as the doctor's findings.
func checkMountRootFindings(cfg Config) []finding {
	s := inspectMountRoot(cfg)
	var fs []finding
	switch {
	case s.err != nil:
		fs = append(fs, finding{"mount-root", "fail", fmt.Sprintf("cannot read the mount table: %v", s.err), ""})
	case cfg.Protocol == "csi":
		// Swarm's publish targets (binds under the propagated /data/published) are what
		// containers see; the volumes' own mounts under MOUNT_ROOT need not propagate.
		fs = append(fs, finding{"mount-root", "ok", fmt.Sprintf("PROTOCOL=csi: MOUNT_ROOT %s need not be shared (swarm publishes under /data/published)", cfg.MountRoot), ""})
	case !s.shared:
		fs = append(fs, finding{"mount-root", "fail", fmt.Sprintf("MOUNT_ROOT %s is not a shared mount point: containers will not see the volumes mounted under it", cfg.MountRoot),
			"leave MOUNT_ROOT at config.json's propagatedMount (/mnt/volumes), which dockerd makes shared; outside a managed plugin, mount --bind " + cfg.MountRoot + " " + cfg.MountRoot + " && mount --make-rshared " + cfg.MountRoot})
	default:
		fs = append(fs, finding{"mount-root", "ok", fmt.Sprintf("MOUNT_ROOT %s is a shared mount point", cfg.MountRoot), ""})
	}
	if s.stateOutside {
		fs = append(fs, finding{"state-dir", "warn", fmt.Sprintf("STATE_DIR %s is not under MOUNT_ROOT %s: in a managed plugin it is lost on upgrade", cfg.StateDir, cfg.MountRoot),
			"docker plugin set ceph STATE_DIR=" + filepath.Join(cfg.MountRoot, ".state")})
	}
	return fs
}
