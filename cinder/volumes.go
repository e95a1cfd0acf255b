package cinder

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/snapshots"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

// found is a volume and the client of the project it lives in.
type found struct {
	c       *gophercloud.ServiceClient
	v       volumes.Volume
	project string
}

// locate finds the one volume named name: in the configured project, else in the other
// projects the credentials can use. A name found in several projects is an error naming them.
func (p *Provisioner) locate(ctx context.Context, name string) (found, error) {
	c, err := p.client(ctx, "")
	if err != nil {
		return found{}, err
	}
	v, err := p.find(ctx, c, name)
	if err == nil {
		p.mu.Lock()
		home := p.home
		p.mu.Unlock()
		return found{c, v, home}, nil
	}
	if !errors.Is(err, driver.ErrNotFound) {
		return found{}, err
	}
	notFound := err
	var hits []found
	for _, pid := range p.otherProjects(ctx) {
		pc, err := p.client(ctx, pid)
		if errors.Is(err, driver.ErrPermission) {
			continue // listed but not usable (the role was just removed)
		}
		if err != nil {
			return found{}, err
		}
		v, err := p.find(ctx, pc, name)
		if errors.Is(err, driver.ErrNotFound) {
			continue
		}
		if err != nil {
			return found{}, err
		}
		hits = append(hits, found{pc, v, pid})
	}
	switch len(hits) {
	case 0:
		return found{}, notFound
	case 1:
		return hits[0], nil
	}
	where := make([]string, 0, len(hits))
	for _, h := range hits {
		where = append(where, fmt.Sprintf("%s in project %s", h.v.ID, h.project))
	}
	return found{}, fmt.Errorf("%w: %d Cinder volumes are named %q (%s): rename or delete all but one",
		driver.ErrInvalid, len(hits), name, strings.Join(where, ", "))
}

// find returns the one volume named name in the project.
func (p *Provisioner) find(ctx context.Context, c *gophercloud.ServiceClient, name string) (volumes.Volume, error) {
	var found []volumes.Volume
	err := volumes.List(c, volumes.ListOpts{Name: name}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		vs, err := volumes.ExtractVolumes(page)
		for _, v := range vs {
			if v.Name == name { // the filter is exact in Cinder, but be sure
				found = append(found, v)
			}
		}
		return true, err
	})
	if err != nil {
		return volumes.Volume{}, apiError("list", name, err)
	}
	switch len(found) {
	case 0:
		return volumes.Volume{}, fmt.Errorf("cinder: %w: no volume named %q", driver.ErrNotFound, name)
	case 1:
		return found[0], nil
	}
	ids := make([]string, 0, len(found))
	for _, v := range found {
		ids = append(ids, v.ID)
	}
	return volumes.Volume{}, fmt.Errorf("%w: %d Cinder volumes are named %q (%s): rename or delete all but one",
		driver.ErrInvalid, len(found), name, strings.Join(ids, ", "))
}

// createSize is the size in GiB to ask Cinder for: -o size, rounded up; without it, a volume made
// from a snapshot or another volume gets its source's size (Cinder requires a size, and the
// default would grow, or refuse to shrink, the copy).
func (p *Provisioner) createSize(ctx context.Context, c *gophercloud.ServiceClient, opts driver.Options) (int, error) {
	size := int(math.Ceil(float64(opts.Size) / (1 << 30)))
	if opts.SizeGiven {
		return size, nil
	}
	if id := opts.Backend[OptSnapshotID]; id != "" {
		s, err := snapshots.Get(ctx, c, id).Extract()
		if err != nil {
			return 0, apiError("read snapshot", id+" (option "+OptSnapshotID+")", err)
		}
		return s.Size, nil
	}
	if id := opts.Backend[OptSourceVolumeID]; id != "" {
		v, err := volumes.Get(ctx, c, id).Extract()
		if err != nil {
			return 0, apiError("read volume", id+" (option "+OptSourceVolumeID+")", err)
		}
		return v.Size, nil
	}
	return size, nil
}

// Create implements driver.Provisioner.
func (p *Provisioner) Create(ctx context.Context, name string, opts driver.Options) (err error) {
	c, err := p.client(ctx, opts.Backend[OptProjectID])
	if err != nil {
		return err
	}
	if f, err := p.locate(ctx, name); err == nil {
		return fmt.Errorf("cinder create %s: %w (volume %s in project %s)", name, driver.ErrExists, f.v.ID, f.project)
	} else if !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	sourceID := opts.Backend[OptSourceVolumeID]
	if src, ok := opts.Backend[OptFromVolume]; ok {
		if c, opts, sourceID, err = p.fromVolume(ctx, c, src, opts); err != nil {
			return fmt.Errorf("cinder create %s: %w", name, err)
		}
	}
	meta := driver.StoredMeta(opts)
	meta[metaManaged] = managedBy
	if src, ok := opts.Backend[OptFromVolume]; ok {
		meta[metaFromVolume] = src
	}
	size, err := p.createSize(ctx, c, opts)
	if err != nil {
		return fmt.Errorf("cinder create %s: %w", name, err)
	}
	co := volumes.CreateOpts{
		Name: name, Size: size, Metadata: meta,
		VolumeType: opts.Backend[OptVolumeType], AvailabilityZone: opts.Backend[OptAvailabilityZone],
		SnapshotID: opts.Backend[OptSnapshotID], SourceVolID: sourceID,
		Description: "Docker volume " + name + " (ceph-docker-plugin)",
	}
	v, err := volumes.Create(ctx, c, co, nil).Extract()
	if err != nil {
		return apiError("create", name, err)
	}
	var tx undo.Stack
	tx.Push("delete volume "+v.ID, func(ctx context.Context) error { return p.deleteCreated(ctx, c, name, v.ID) })
	if _, err = p.waitStatus(ctx, c, v.ID, "available"); err != nil {
		err = fmt.Errorf("cinder create %s: %w", name, err)
	}
	tx.OnError(ctx, &err, nil)
	return err
}

// copyStatuses are the statuses of a volume Cinder makes a copy of (SRC_VOL_PROCEED_STATUS):
// a volume in use is copied too (Cinder's RBD driver snapshots its image and clones it).
var copyStatuses = []string{"available", "in-use"}

// fromVolume resolves -o from-volume=src of a Create: the source volume by its name (in the
// configured project, else in the one other project that has it), the client of the project the
// copy is made in (the source's: Cinder copies within a project), the options of the copy
// (driver.Options.CopyOf: the source's stored options for those not given, its size without
// -o size) and the source's ID.
func (p *Provisioner) fromVolume(ctx context.Context, c *gophercloud.ServiceClient, src string, opts driver.Options) (*gophercloud.ServiceClient, driver.Options, string, error) {
	if err := driver.ValidateName(src); err != nil {
		return c, opts, "", fmt.Errorf("from-volume: %w", err)
	}
	for _, k := range []string{OptSnapshotID, OptSourceVolumeID} {
		if _, ok := opts.Backend[k]; ok {
			return c, opts, "", fmt.Errorf("%w: give %s or %s, not both", driver.ErrInvalid, OptFromVolume, k)
		}
	}
	f, err := p.locate(ctx, src)
	if err != nil {
		return c, opts, "", fmt.Errorf("from-volume %s: %w", src, err)
	}
	if pid, ok := opts.Backend[OptProjectID]; ok && pid != f.project {
		return c, opts, "", fmt.Errorf("%w: from-volume %s is in project %s, and Cinder copies a volume within its project: leave -o %s out, or give %s",
			driver.ErrInvalid, src, f.project, OptProjectID, f.project)
	}
	if !slices.Contains(copyStatuses, f.v.Status) {
		return c, opts, "", fmt.Errorf("%w: from-volume %s (%s) is %q; Cinder copies a volume that is %s: try again once it is",
			driver.ErrInUse, src, f.v.ID, f.v.Status, strings.Join(copyStatuses, " or "))
	}
	copyOpts, err := opts.CopyOf(toVolume(f.v, f.project))
	if err != nil {
		return c, opts, "", err
	}
	return f.c, copyOpts, f.v.ID, nil
}

// deleteCreated is the undo of a Create that failed after Cinder accepted it: it deletes the
// volume and waits for it to be gone, so that the name is free again when Create returns. Cinder
// refuses to delete a volume that is still creating once it is scheduled to a backend (as it
// usually is by the time a Create runs into its deadline): then it waits for the creation to end
// and deletes it again.
func (p *Provisioner) deleteCreated(ctx context.Context, c *gophercloud.ServiceClient, name, id string) error {
	err := volumes.Delete(ctx, c, id, volumes.DeleteOpts{}).ExtractErr()
	if gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
		status := "creating"
		v, perr := p.poll(ctx, c, id, func(v *volumes.Volume, err error) (bool, error) {
			switch {
			case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
				return true, nil
			case err != nil && ctx.Err() != nil:
				return false, errPollEnded // the read the deadline cut short
			case err != nil:
				return false, apiError("get", name, err)
			}
			status = v.Status
			return v.Status != "creating", nil
		})
		if errors.Is(perr, errPollEnded) {
			return fmt.Errorf("%w: volume %s (%s) still %q at the cleanup deadline; delete it once it is available: openstack volume delete %s",
				driver.ErrTimeout, name, id, status, id)
		}
		if perr != nil || v == nil {
			return perr
		}
		err = volumes.Delete(ctx, c, id, volumes.DeleteOpts{}).ExtractErr()
	}
	if err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return apiError("delete", name, err)
	}
	return p.waitGone(ctx, c, name, id)
}

func toVolume(v volumes.Volume, project string) driver.Volume {
	vol := driver.Volume{
		Name: v.Name, Size: uint64(v.Size) << 30, CreatedAt: v.CreatedAt,
		Status: map[string]any{"cinder-id": v.ID, "cinder-status": v.Status, "volume-type": v.VolumeType,
			"availability-zone": v.AvailabilityZone},
	}
	vol.SetStored(func(k string) string { return v.Metadata[k] })
	if project != "" {
		vol.Status["project-id"] = project
	}
	if v.SnapshotID != "" {
		vol.Status[OptSnapshotID] = v.SnapshotID
	}
	if v.SourceVolID != "" {
		vol.Status[OptSourceVolumeID] = v.SourceVolID
	}
	if src := v.Metadata[metaFromVolume]; src != "" {
		vol.Status[OptFromVolume] = src
	}
	vol.Holder = holders(v, nil)
	return vol
}

// holders names the hosts the volume is attached to, with their containers, and says which read
// it (mode: attach_mode by attachment ID; nil when not known).
func holders(v volumes.Volume, mode map[string]string) string {
	out := make([]string, 0, len(v.Attachments))
	for _, a := range v.Attachments {
		ro := ""
		if mode[a.AttachmentID] == modeRO {
			ro = ", read-only"
		}
		out = append(out, fmt.Sprintf("%s (container %s%s)", attachedHost(a), a.ServerID, ro))
	}
	return strings.Join(out, ", ")
}

// Get implements driver.Provisioner.
func (p *Provisioner) Get(ctx context.Context, name string) (driver.Volume, error) {
	f, err := p.locate(ctx, name)
	if err != nil {
		return driver.Volume{}, err
	}
	vol := toVolume(f.v, f.project)
	if len(f.v.Attachments) > 0 {
		// Which holders read it: the attachments API alone says. (Best effort: without it the
		// holders are named all the same.)
		if listed, err := p.listAttachments(ctx, f.c, f.v.ID); err == nil {
			vol.Holder = holders(f.v, modesOf(listed))
		}
	}
	return vol, nil
}

// Differences implements driver.Provisioner: it compares the project-id, volume-type,
// availability-zone, snapshot-id, source-volume-id and from-volume options of an idempotent Create.
func (p *Provisioner) Differences(ctx context.Context, vol driver.Volume, opts driver.Options) ([]string, error) {
	var diffs []string
	for _, k := range []string{OptProjectID, OptAvailabilityZone, OptSnapshotID, OptSourceVolumeID, OptFromVolume} {
		v, ok := opts.Backend[k]
		if !ok {
			continue
		}
		if have, _ := vol.Status[k].(string); have != v {
			if have == "" {
				have = "none"
			}
			diffs = append(diffs, fmt.Sprintf("%s %s (it has %s)", k, v, have))
		}
	}
	if v, ok := opts.Backend[OptVolumeType]; ok {
		have, _ := vol.Status[OptVolumeType].(string)
		if have != v && !p.typeNamed(ctx, v, have) {
			diffs = append(diffs, fmt.Sprintf("%s %s (it has %s)", OptVolumeType, v, have))
		}
	}
	return diffs, nil
}

// typeNamed reports whether the volume type with ID id is named name (Cinder takes a type's
// name or ID, and reports a volume's type by name). False when the type cannot be read.
func (p *Provisioner) typeNamed(ctx context.Context, id, name string) bool {
	c, err := p.client(ctx, "")
	if err != nil {
		return false
	}
	t, err := volumetypes.Get(ctx, c, id).Extract()
	return err == nil && t.Name == name
}

// RoundSize implements driver.Provisioner: Cinder sizes volumes in whole GiB.
func (p *Provisioner) RoundSize(size uint64) uint64 {
	const gib = 1 << 30
	return (size + gib - 1) / gib * gib
}

// List implements driver.Provisioner: every volume of the configured project whose name is a
// valid Docker volume name, and the plugin's volumes in the other projects, read page by page.
func (p *Provisioner) List(ctx context.Context) ([]driver.Volume, error) {
	c, err := p.client(ctx, "")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []driver.Volume
	list := func(c *gophercloud.ServiceClient, project string, opts volumes.ListOpts) error {
		err := volumes.List(c, opts).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
			vs, err := volumes.ExtractVolumes(page)
			for _, v := range vs {
				if driver.ValidateName(v.Name) == nil && !seen[v.Name] {
					seen[v.Name] = true
					out = append(out, toVolume(v, project))
				}
			}
			return true, err
		})
		return apiError("list", "volumes of project "+project, err)
	}
	p.mu.Lock()
	home := p.home
	p.mu.Unlock()
	if err := list(c, home, volumes.ListOpts{Limit: 1000}); err != nil {
		return nil, err
	}
	for _, pid := range p.otherProjects(ctx) {
		pc, err := p.client(ctx, pid)
		if errors.Is(err, driver.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := list(pc, pid, volumes.ListOpts{Limit: 1000, Metadata: map[string]string{metaManaged: managedBy}}); err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove implements driver.Provisioner.
func (p *Provisioner) Remove(ctx context.Context, name string, action driver.RemoveAction) error {
	f, err := p.locate(ctx, name)
	if err != nil {
		return err
	}
	c, v := f.c, f.v
	if len(v.Attachments) > 0 {
		return fmt.Errorf("%w: volume %s is attached to %s; stop its containers there first", driver.ErrInUse, name, toVolume(v, "").Holder)
	}
	if v.Status == "in-use" || v.Status == "reserved" || v.Status == "attaching" {
		// Uncompleted attachments: a host attaching right now, or one that died doing so (its
		// plugin deletes the attachment when it comes back).
		return fmt.Errorf("%w: volume %s is being attached (Cinder status %s, attachment not completed); try again, or if no host is attaching it, delete the attachment: openstack volume attachment list --volume-id %s",
			driver.ErrInUse, name, v.Status, v.ID)
	}
	switch action {
	case driver.RemoveKeep:
		kept := driver.KeptName(name, time.Now())
		desc := fmt.Sprintf("Docker volume %s (ceph-docker-plugin), removed from Docker at %s with REMOVE_ACTION=keep; rename it back to use it again",
			name, time.Now().UTC().Format(time.RFC3339))
		if _, err := volumes.Update(ctx, c, v.ID, volumes.UpdateOpts{Name: &kept, Description: &desc}).Extract(); err != nil {
			return apiError("rename (REMOVE_ACTION=keep) to "+kept, name, err)
		}
		return nil
	case driver.RemoveTrash:
		return fmt.Errorf("%w: REMOVE_ACTION=trash needs BACKEND=rbd (Cinder has no trash); use delete or keep", driver.ErrInvalid)
	}
	if err := volumes.Delete(ctx, c, v.ID, volumes.DeleteOpts{}).ExtractErr(); err != nil {
		return apiError("delete", name, err)
	}
	// Deletion is asynchronous: wait for it, so that the name is free when Remove returns.
	return p.waitGone(ctx, c, name, v.ID)
}
