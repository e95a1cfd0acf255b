package main

import (
	"fmt"

	"github.com/sirupsen/logrus"
)

// growFinding says whether this process can grow volumes while they are mounted (onlineExt4: why
// it cannot grow a mounted ext4, nil when it can). ext4 needs CAP_SYS_RESOURCE for that; xfs
// only CAP_SYS_ADMIN, which mounting needs anyway.
func growFinding(cfg Config, onlineExt4 error) finding {
	switch {
	case cfg.GrowInterval <= 0:
		return finding{"grow", "ok", "GROW_INTERVAL=off: volumes grow at their next first Mount on a host, never while mounted", ""}
	case onlineExt4 != nil:
		return finding{"grow", "warn", fmt.Sprintf("ext4 volumes cannot grow while mounted: %v; they grow at their next first Mount on a host (xfs volumes grow while mounted, within GROW_INTERVAL %s)", onlineExt4, cfg.GrowInterval),
			"install the plugin as shipped (its config.json asks for CAP_SYS_RESOURCE: docker plugin install --grant-all-permissions) on a dockerd that has CAP_SYS_RESOURCE in its bounding set (grep CapBnd /proc/$(pidof dockerd)/status: bit 24, 0x1000000)"}
	}
	return finding{"grow", "ok", fmt.Sprintf("ext4 and xfs volumes grow while mounted, within GROW_INTERVAL %s (the plugin has CAP_SYS_RESOURCE)", cfg.GrowInterval), ""}
}

// logGrowth says at start-up when a mounted ext4 cannot grow, so that an operator who resizes
// an image and sees no change finds why in the plugin's log.
func logGrowth(log logrus.FieldLogger, cfg Config, onlineExt4 error) {
	if f := growFinding(cfg, onlineExt4); f.status != "ok" {
		log.WithField("fix", f.fix).Warn(f.detail)
	}
}
