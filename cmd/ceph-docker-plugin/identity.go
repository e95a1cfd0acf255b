package main

import (
	"context"
	"os"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
	"github.com/cephdocker/ceph-docker-plugin/rbd/krbd"
)

// hostIdentity loads this host's identity from STATE_DIR, making it on the first start (see
// driver.HostID).
func hostIdentity(cfg Config, log *logrus.Entry) (driver.HostID, error) {
	h, note, err := driver.LoadHostID(cfg.StateDir, hardwareID("/sys/class/dmi/id/product_uuid"))
	if err != nil {
		return h, err
	}
	fields := logrus.Fields{"host_id": h.ID, "hardware_bound": h.Hardware != ""}
	if h.Previous != "" && note != "" {
		fields["previous_host_id"] = h.Previous
		log.WithFields(fields).Warn(note)
	} else if note != "" {
		log.WithFields(fields).Info(note)
	} else {
		log.WithFields(fields).Info("host identity")
	}
	return h, nil
}

// hardwareID reads the machine's SMBIOS product UUID, which hypervisors give each VM (a clone
// gets its own): "" when it cannot be read or is one of the placeholders some boards carry.
func hardwareID(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	id := strings.ToLower(strings.TrimSpace(string(b)))
	switch strings.Trim(id, "-") {
	case "", "00000000000000000000000000000000", "ffffffffffffffffffffffffffffffff":
		return ""
	}
	if strings.Trim(strings.ReplaceAll(id, "-", ""), "0") == "" || strings.Trim(strings.ReplaceAll(id, "-", ""), "f") == "" ||
		id == "03000200-0400-0500-0006-000700080009" { // a placeholder many boards ship with
		return ""
	}
	return id
}

// mapperClients lists the Ceph clients of the mapper's mappings: krbd knows each kernel client's
// address; rbd-fuse's are not known (exact false: every client at this host's IP counts as its).
func mapperClients(m driver.Mapper) rbd.LocalClients {
	_, isKRBD := m.(*krbd.KRBD)
	return func(ctx context.Context) ([]string, bool) {
		if !isKRBD {
			// rbd-fuse's mappings carry no client address: listing them (a question to every
			// daemon, once per volume the reconcile confirms) would find none.
			return nil, false
		}
		maps, err := m.List(ctx)
		var addrs []string
		for _, mp := range maps {
			if mp.Client != "" {
				addrs = append(addrs, mp.Client)
			}
		}
		return addrs, isKRBD && err == nil
	}
}
