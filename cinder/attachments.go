package cinder

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/driver/undo"
)

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// InstanceUUID derives the attachment's instance UUID from Docker's mount ID (64 hex digits,
// not a UUID): a name-based (version 5 style) UUID, the same for the same ID on every host.
func InstanceUUID(mountID string) string {
	if uuidRE.MatchString(mountID) {
		return strings.ToLower(mountID)
	}
	h := sha1.Sum([]byte("ceph-docker-plugin:" + mountID))
	h[6] = (h[6] & 0x0f) | 0x50
	h[8] = (h[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// mountpoint is what the attachment records as its mount point: Cinder's attachments API leaves
// host_name empty, so the host is kept here, with its identity and Docker's full mount ID:
// "docker:<host>/<host ID>/<mount id>". The older format, "docker:<host>/<mount id>", names the
// host alone.
func mountpoint(host, id, mountID string) string {
	if id == "" {
		return "docker:" + host + "/" + mountID
	}
	return "docker:" + host + "/" + id + "/" + mountID
}

// attacher reads the host (name and identity, "" for an attachment made without one) back from an
// attachment (the name from host_name when Cinder set it).
func attacher(a volumes.Attachment) (host, id string) {
	host = "(unknown host)"
	if rest, ok := strings.CutPrefix(a.Device, "docker:"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) >= 2 {
			host = parts[0]
		}
		if len(parts) == 3 && driver.ValidHostID(parts[1]) {
			id = parts[1]
		}
	}
	if a.HostName != "" {
		host = a.HostName
	}
	return host, id
}

// attachedHost names an attachment's host for people: "host node-3 (host ID 1f2e3d4c5b6a)".
func attachedHost(a volumes.Attachment) string {
	host, id := attacher(a)
	if id == "" {
		return "host " + host
	}
	return fmt.Sprintf("host %s (host ID %s)", host, driver.ShortHostID(id))
}

// owns says whether attachment a is this host's: made under this host's identity, or made under
// this host's name alone (the older name-only format) and named by this host's own state
// (claimed: the attachment ID its state recorded). A name is not enough: two machines can share
// one.
func (p *Provisioner) owns(a volumes.Attachment, claimed string) bool {
	host, id := attacher(a)
	switch {
	case id != "":
		return p.cfg.HostID != "" && id == p.cfg.HostID
	case host != p.cfg.Host:
		return false
	}
	return p.cfg.HostID == "" || (claimed != "" && a.AttachmentID == claimed)
}

// sameName adds to a refusal naming another host's attachment what to do when that host has
// this host's NODE_NAME.
func (p *Provisioner) sameName(a volumes.Attachment) string {
	host, _ := attacher(a)
	if host != p.cfg.Host {
		return ""
	}
	return fmt.Sprintf(" (it has this host's NODE_NAME, not its identity %s: another machine named %s, or this host before it lost its STATE_DIR/%s)",
		driver.ShortHostID(p.cfg.HostID), host, driver.HostIDFile)
}

// Attach implements driver.Provisioner: it records this host and container as a Cinder
// attachment and returns the RBD image to map.
func (p *Provisioner) Attach(ctx context.Context, name string, req driver.AttachRequest) (driver.Attachment, error) {
	f, err := p.locate(ctx, name)
	if err != nil {
		return driver.Attachment{}, err
	}
	var listed []attachments.Attachment
	if len(f.v.Attachments) > 0 {
		// Their modes: the volume's view of its attachments does not say.
		if listed, err = p.listAttachments(ctx, f.c, f.v.ID); err != nil {
			return driver.Attachment{}, apiError("list attachments of", name, err)
		}
	}
	plan := p.planAttach(name, f.v, listed, req)
	if plan.refusal != nil {
		return driver.Attachment{}, plan.refusal
	}
	fenced, err := p.clear(ctx, f.c, name, f.v.ID, plan.clear, false)
	if err != nil {
		return driver.Attachment{Fenced: fenced}, err
	}
	if plan.pending {
		pending, err := p.pendingAttachments(ctx, f.c, f.v.ID)
		if err != nil {
			return driver.Attachment{Fenced: fenced}, apiError("list attachments of", name, err)
		}
		pplan := planPending(name, f.v.Status, pending, req)
		gone, err := p.clear(ctx, f.c, name, f.v.ID, pplan.clear, pplan.refusal == nil)
		fenced = append(fenced, gone...)
		if err == nil {
			err = pplan.refusal
		}
		if err != nil {
			return driver.Attachment{Fenced: fenced}, err
		}
	}
	if plan.reuse != "" {
		return p.attachAgain(ctx, f.c, name, plan.reuse)
	}
	return p.attachNew(ctx, f, name, req, plan.readOnly, fenced)
}

// clear deletes the attachments in the way, in order: this mount's own attempt as it is, another
// host's once its Ceph clients are fenced (a holder that is only unreachable must not write once
// the volume is someone else's). Then, when it took one over or wait is set, it waits for the
// volume to be available: Cinder makes it so once the last attachment is gone.
func (p *Provisioner) clear(ctx context.Context, c *gophercloud.ServiceClient, name, volumeID string, holders []holder, wait bool) ([]string, error) {
	var fenced, from, hosts []string
	for _, h := range holders {
		if h.mine {
			if err := p.deleteAttachment(ctx, c, name, h.attachmentID); err != nil {
				return fenced, err
			}
			continue
		}
		gone, err := p.takeOver(ctx, c, name, h)
		fenced = append(fenced, gone...)
		if err != nil {
			return fenced, fmt.Errorf("take volume %s over from %s: %w", name, h.from, err)
		}
		from, hosts = append(from, h.from), append(hosts, h.host)
	}
	if len(from) == 0 && !wait {
		return fenced, nil
	}
	if _, err := p.waitStatus(ctx, c, volumeID, "available"); err != nil {
		if len(from) == 0 {
			return fenced, fmt.Errorf("cinder attach %s: %w", name, err)
		}
		return fenced, fmt.Errorf("take volume %s over from %s: after deleting the attachment of %s: %w",
			name, strings.Join(from, " and "), strings.Join(hosts, " and "), err)
	}
	return fenced, nil
}

// attachAgain serves this host's attachment again (the plugin restarted), in its own mode.
func (p *Provisioner) attachAgain(ctx context.Context, c *gophercloud.ServiceClient, name, id string) (driver.Attachment, error) {
	got, err := attachments.Get(ctx, c, id).Extract()
	if err != nil {
		return driver.Attachment{}, apiError("get attachment", name, err)
	}
	spec, mons, err := parseConnection(got.ConnectionInfo)
	if err != nil {
		return driver.Attachment{}, fmt.Errorf("cinder attach %s: %w", name, err)
	}
	ro := got.AttachMode == modeRO
	if !ro {
		// (Other readers' mappings watch the image of a read-only attachment; nobody writes
		// through one, whoever holds it.)
		if err := p.checkIdentity(ctx, name, spec); err != nil {
			return driver.Attachment{}, err
		}
	}
	return driver.Attachment{ID: got.ID,
		Map: driver.MapRequest{ImageSpec: spec, ReadOnly: ro, Monitors: mons, User: p.cfg.CephUser}}, nil
}

// attachNew reserves an attachment for this host and mount (read-only with ro), makes sure no
// other host or client holds the volume in a way that conflicts, and completes the attachment; a
// failure after the reservation deletes it.
func (p *Provisioner) attachNew(ctx context.Context, f found, name string, req driver.AttachRequest, ro bool, fenced []string) (_ driver.Attachment, err error) {
	c, v := f.c, f.v
	mode := "rw"
	if ro {
		mode = modeRO
	}
	// The mode goes in the connector too: Cinder builds the connection info (its access_mode)
	// from the connector before it records the attachment's mode.
	connector := map[string]any{
		"host": p.cfg.Host, "platform": "x86_64", "os_type": "linux", "multipath": false,
		"do_local_attach": false, "mountpoint": mountpoint(p.cfg.Host, p.cfg.HostID, req.MountID), "mode": mode,
	}
	a, err := attachments.Create(ctx, c, attachments.CreateOpts{
		VolumeUUID: v.ID, InstanceUUID: InstanceUUID(req.MountID), Connector: connector, Mode: mode,
	}).Extract()
	if err != nil {
		if gophercloud.ResponseCodeIs(err, http.StatusBadRequest) || gophercloud.ResponseCodeIs(err, http.StatusConflict) {
			return driver.Attachment{}, fmt.Errorf("%w: Cinder refused to attach volume %s (attached meanwhile by another host?): %v",
				driver.ErrBusyElsewhere, name, err)
		}
		return driver.Attachment{}, apiError("attach", name, err)
	}
	var tx undo.Stack
	tx.Push("delete attachment "+a.ID, func(ctx context.Context) error { return p.deleteAttachment(ctx, c, name, a.ID) })
	defer tx.OnError(ctx, &err, nil)
	spec, mons, err := parseConnection(a.ConnectionInfo)
	if err != nil {
		return driver.Attachment{}, fmt.Errorf("cinder attach %s: %w", name, err)
	}
	if err := p.checkAlone(ctx, c, name, v, a.ID, ro, spec); err != nil {
		return driver.Attachment{}, err
	}
	if err := attachments.Complete(ctx, c, a.ID).ExtractErr(); err != nil {
		return driver.Attachment{}, apiError("complete attachment", name, err)
	}
	vol := toVolume(v, f.project) // as found before attaching: options, not status
	return driver.Attachment{
		ID: a.ID, Fenced: fenced, Volume: &vol,
		Map: driver.MapRequest{ImageSpec: spec, ReadOnly: ro, Monitors: mons, User: p.cfg.CephUser},
	}, nil
}

// checkAlone makes sure, with this host's attachment mine reserved (read-only with ro), that no
// other host attached the volume meanwhile in a way that conflicts with it, and that no Ceph
// client maps its image without an attachment.
func (p *Provisioner) checkAlone(ctx context.Context, c *gophercloud.ServiceClient, name string, v volumes.Volume, mine string, ro bool, spec driver.ImageSpec) error {
	shared := false
	if v.Multiattach {
		// Cinder reserves a multiattach volume again as soon as a first attachment is completed,
		// before its host has mapped the image (so before the watcher check below can see it),
		// but never while another reservation is pending: a host that finds a conflicting
		// attachment after reserving its own is the later one, and gives way. Of a reader and a
		// writer, or of two writers, exactly one wins; readers share.
		others, err := p.otherAttachments(ctx, c, v.ID, mine)
		if err != nil {
			return apiError("list attachments of", name, err)
		}
		if err := p.conflict(ctx, c, name, v.ID, others, ro); err != nil {
			return err
		}
		shared = len(others) > 0
	}
	if p.cfg.Watchers == nil || shared {
		// (The other readers' mappings watch the image: they have their attachments.)
		return nil
	}
	// With the attachment reserved (no other host can attach meanwhile), make sure no client
	// maps the image without one.
	live, err := p.cfg.Watchers.LiveWatchers(ctx, spec)
	if err != nil {
		return err
	}
	if len(live) > 0 {
		return fmt.Errorf("%w: volume %s: its RBD image %s is open by Ceph client(s) %s that have no Cinder attachment (mapped by hand, or by a host whose attachment was deleted); unmap it there first",
			driver.ErrBusyElsewhere, name, spec, strings.Join(live, ", "))
	}
	return nil
}

// conflict refuses a claim (read-only with ro) beside the other attachments of a multiattach
// volume: a read-write claim beside any, a read-only one beside a read-write one.
func (p *Provisioner) conflict(ctx context.Context, c *gophercloud.ServiceClient, name, volumeID string, others []attachments.Attachment, ro bool) error {
	var readers, writers []attachments.Attachment
	for _, a := range others {
		if a.AttachMode == modeRO {
			readers = append(readers, a)
		} else {
			writers = append(writers, a)
		}
	}
	switch {
	case len(writers) > 0 && ro:
		return fmt.Errorf("%w: volume %s (a multiattach volume) is attached read-write to %s; a read-only use waits until it lets go: stop its container there first",
			driver.ErrBusyElsewhere, name, p.describeOthers(ctx, c, volumeID, writers[:1]))
	case len(writers) > 0:
		return fmt.Errorf("%w: volume %s (a multiattach volume) is attached to %s; this plugin attaches a volume to one host at a time: stop its container there first",
			driver.ErrBusyElsewhere, name, p.describeOthers(ctx, c, volumeID, writers[:1]))
	case len(readers) > 0 && !ro:
		return fmt.Errorf("%w: volume %s (a multiattach volume) is attached read-only to %s; a read-write use waits until every reader lets it go: stop its containers there first",
			driver.ErrBusyElsewhere, name, p.describeOthers(ctx, c, volumeID, readers))
	}
	return nil
}

// checkIdentity makes sure that a volume attached under this host's identity is not open on
// another machine: an attachment that names this host's identity, but whose RBD image a client
// that is not this host's keeps open, is another machine's (one using a copy of this host's
// STATE_DIR, as on a cloned disk).
func (p *Provisioner) checkIdentity(ctx context.Context, name string, spec driver.ImageSpec) error {
	if p.cfg.Watchers == nil || p.cfg.HostID == "" {
		return nil
	}
	live, err := p.cfg.Watchers.ForeignWatchers(ctx, spec)
	if err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	if len(live) == 0 {
		return nil
	}
	return fmt.Errorf("%w: volume %s is attached under this host's identity (host %s, host ID %s), but Ceph client(s) %s, not this host's, keep its RBD image %s open: another machine uses this host's identity (a copy of its STATE_DIR, as on a cloned disk) or maps the image by hand. On that machine, stop the plugin, remove %s from its STATE_DIR and start it again (it then makes an identity of its own); this host leaves the volume alone meanwhile",
		driver.ErrBusyElsewhere, name, p.cfg.Host, driver.ShortHostID(p.cfg.HostID), strings.Join(live, ", "), spec, driver.HostIDFile)
}

// RecordClients implements driver.Provisioner through Config.Recorder.
func (p *Provisioner) RecordClients(ctx context.Context, name string, att driver.Attachment, m driver.Mapping) error {
	if p.cfg.Recorder == nil || p.cfg.HostID == "" {
		return nil
	}
	spec := att.Map.ImageSpec
	if spec.Image == "" {
		spec = m.ImageSpec
	}
	var clients []string
	if m.Client != "" {
		clients = append(clients, m.Client)
	}
	if err := p.cfg.Recorder.RecordClients(ctx, spec, p.cfg.Host, p.cfg.HostID, clients); err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	return nil
}

// takeOver fences the Ceph clients of a dead host's attachment (blocklist, lock break) and
// deletes the attachment. Fencing comes first: a holder that is only unreachable must not write
// once the volume is someone else's.
func (p *Provisioner) takeOver(ctx context.Context, c *gophercloud.ServiceClient, name string, h holder) ([]string, error) {
	if p.cfg.Fencer == nil {
		return nil, fmt.Errorf("%w: this plugin has no Ceph access to fence %s with", driver.ErrInvalid, h.host)
	}
	got, err := attachments.Get(ctx, c, h.attachmentID).Extract()
	if err != nil {
		return nil, apiError("get attachment", name, err)
	}
	var fenced []string
	if spec, _, err := parseConnection(got.ConnectionInfo); err == nil {
		if fenced, err = p.cfg.Fencer.Fence(ctx, spec, h.identity); err != nil {
			return fenced, err
		}
	} else if len(got.ConnectionInfo) > 0 {
		return nil, fmt.Errorf("cannot tell which RBD image %s maps, so cannot fence it: %w", h.host, err)
	}
	return fenced, p.deleteAttachment(ctx, c, name, got.ID)
}

// pendingAttachments lists a volume's attachments that are not completed (reserved, attaching).
func (p *Provisioner) pendingAttachments(ctx context.Context, c *gophercloud.ServiceClient, volumeID string) ([]attachments.Attachment, error) {
	as, err := p.listAttachments(ctx, c, volumeID)
	return slices.DeleteFunc(as, func(a attachments.Attachment) bool { return a.Status == "attached" }), err
}

// listAttachments lists a volume's attachments that are not detached (completed or not), with
// their modes.
func (p *Provisioner) listAttachments(ctx context.Context, c *gophercloud.ServiceClient, volumeID string) ([]attachments.Attachment, error) {
	var out []attachments.Attachment
	err := attachments.List(c, attachments.ListOpts{VolumeID: volumeID}).EachPage(ctx, func(_ context.Context, page pagination.Page) (bool, error) {
		as, err := attachments.ExtractAttachments(page)
		for _, a := range as {
			if a.Status != "detached" {
				out = append(out, a)
			}
		}
		return true, err
	})
	return out, err
}

// otherAttachments lists the volume's attachments other than mine (of any host, completed or not).
func (p *Provisioner) otherAttachments(ctx context.Context, c *gophercloud.ServiceClient, volumeID, mine string) ([]attachments.Attachment, error) {
	as, err := p.listAttachments(ctx, c, volumeID)
	return slices.DeleteFunc(as, func(a attachments.Attachment) bool { return a.ID == mine }), err
}

// describeOthers names the hosts of attachments for people, from the volume's view of its
// completed ones: "host b (container X) and another host (attachment A for instance I, attaching)".
func (p *Provisioner) describeOthers(ctx context.Context, c *gophercloud.ServiceClient, volumeID string, as []attachments.Attachment) string {
	var view []volumes.Attachment
	if v, err := volumes.Get(ctx, c, volumeID).Extract(); err == nil {
		view = v.Attachments
	}
	out := make([]string, 0, len(as))
	for _, a := range as {
		i := slices.IndexFunc(view, func(va volumes.Attachment) bool { return va.AttachmentID == a.ID })
		if i >= 0 {
			out = append(out, fmt.Sprintf("%s (container %s)", attachedHost(view[i]), view[i].ServerID))
		} else {
			out = append(out, fmt.Sprintf("another host (attachment %s for instance %s, %s)", a.ID, a.Instance, a.Status))
		}
	}
	return strings.Join(out, " and ")
}

// deleteAttachment deletes one attachment; one already gone is fine.
func (p *Provisioner) deleteAttachment(ctx context.Context, c *gophercloud.ServiceClient, name, id string) error {
	err := attachments.Delete(ctx, c, id).ExtractErr()
	if err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return apiError("delete attachment "+id+" of", name, err)
	}
	return nil
}

// Detach implements driver.Provisioner: it deletes this host's attachment(s) of the volume.
func (p *Provisioner) Detach(ctx context.Context, name string, att driver.Attachment) error {
	f, err := p.locate(ctx, name)
	if errors.Is(err, driver.ErrNotFound) {
		return nil // the volume is gone, and its attachments with it
	}
	if err != nil {
		return err
	}
	c, v := f.c, f.v
	ids := []string{}
	if att.MountID != "" && (v.Status == "attaching" || v.Status == "reserved") {
		// An attempt whose answer never came may have left an attachment that was not
		// completed: it is found by the mount's instance UUID.
		pending, err := p.pendingAttachments(ctx, c, v.ID)
		if err != nil {
			return apiError("list attachments of", name, err)
		}
		for _, a := range pending {
			if a.Instance == InstanceUUID(att.MountID) {
				ids = append(ids, a.ID)
			}
		}
	}
	if att.ID != "" {
		ids = append(ids, att.ID)
	} else {
		// Not recorded (a crash between attach and its record): this host's attachments.
		for _, a := range v.Attachments {
			if p.owns(a, "") {
				ids = append(ids, a.AttachmentID)
			}
		}
	}
	if len(ids) > 0 && p.cfg.Recorder != nil && p.cfg.HostID != "" && att.Map.Image != "" && !att.Map.ReadOnly {
		// Best effort: a record left behind is fenced only by a host taking the volume over
		// from this identity. (A read-only claim records nothing.)
		_ = p.cfg.Recorder.ClearClients(ctx, att.Map.ImageSpec, p.cfg.HostID)
	}
	for _, id := range ids {
		if err := p.deleteAttachment(ctx, c, name, id); err != nil {
			return err
		}
	}
	return nil
}
