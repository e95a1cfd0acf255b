package cinder

import (
	"fmt"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// holder is an attachment in the way of this mount's: another host's (or another mount's
// attempt), refused or, with LOCK_BREAK, taken over; or this mount's own attempt whose answer was
// lost, deleted.
type holder struct {
	attachmentID string
	mine         bool   // this host's own attachment or attempt: deleted, nothing fenced
	from         string // for people, after "take volume over from": "host node-3 (host ID ...)", "instance <uuid>"
	host         string // for people: the host, "the host of instance <uuid>" when Cinder does not say
	identity     string // the host ID the attachment names ("" none): the Ceph clients it recorded are fenced
}

// attachPlan is what Attach does, decided from what Cinder reported of the volume and its
// attachments: clear the holders in the way, in Cinder's order, then refuse (refusal), or serve
// this host's attachment again (reuse), or look at the attachments not completed (pending), or
// make a new attachment, read-only when readOnly.
type attachPlan struct {
	clear    []holder
	refusal  error
	reuse    string
	pending  bool
	readOnly bool
}

// Read-only claims. A host's claim on a volume is its Cinder attachment, made with mode "ro" for a
// shared read-only claim (AttachRequest.ReadOnly, or a volume whose access is readonly) and "rw"
// otherwise. Cinder lets several hosts attach a volume only when its type is multiattach, and then
// does not mind their modes: the plugin's rules decide. Any number of read-only attachments, or one
// read-write attachment, never both; a read-only attachment is never taken over (LOCK_BREAK
// fences writers only: a reader cannot write, and a writer waits for the readers to let go).

// modeRO is the attach_mode of a read-only attachment (anything else is read-write: "rw", or
// "null" for an attachment made without a mode).
const modeRO = "ro"

// claimsReadOnly says whether req on volume v is a read-only claim.
func claimsReadOnly(v volumes.Volume, req driver.AttachRequest) bool {
	return req.ReadOnly || (!req.IgnoreAccess && v.Metadata[driver.MetaAccess] == driver.AccessReadOnly)
}

// modesOf maps the attachment IDs of listed (the attachments API's detail) to their attach_mode.
func modesOf(listed []attachments.Attachment) map[string]string {
	m := make(map[string]string, len(listed))
	for _, a := range listed {
		m[a.ID] = a.AttachMode
	}
	return m
}

// planAttach decides from the volume's completed attachments and their modes (listed: the
// volume's attachments as the attachments API lists them, which alone says their mode). Another
// host's read-write attachment is refused, or with req.TakeOver taken over (which leaves this host
// none of its own either); read-only attachments of other hosts are refused to a read-write claim
// and shared by a read-only one when the volume is multiattach. This host's attachment serves
// again when it has the mode asked for, or it is the claim this host's state recorded
// (req.Claimed: served as it is, after a restart); one with the other mode is deleted. A volume
// attaching or reserved with no completed attachment left has attachments not completed, which
// planPending decides about.
func (p *Provisioner) planAttach(name string, v volumes.Volume, listed []attachments.Attachment, req driver.AttachRequest) attachPlan {
	plan := attachPlan{readOnly: claimsReadOnly(v, req)}
	mode := modesOf(listed)
	for _, a := range v.Attachments {
		if req.Claimed != "" && a.AttachmentID == req.Claimed && p.owns(a, req.Claimed) {
			plan.reuse, plan.readOnly = a.AttachmentID, mode[a.AttachmentID] == modeRO
		}
	}
	var readers, writers []volumes.Attachment
	for _, a := range v.Attachments {
		switch {
		case a.AttachmentID == plan.reuse:
		case p.owns(a, req.Claimed) && plan.reuse == "" && (mode[a.AttachmentID] == modeRO) == plan.readOnly:
			plan.reuse = a.AttachmentID
		case p.owns(a, req.Claimed):
			// Not in this host's state, and of the other mode: an attempt whose record was lost.
			plan.clear = append(plan.clear, holder{attachmentID: a.AttachmentID, mine: true})
		case mode[a.AttachmentID] == modeRO:
			readers = append(readers, a)
		default:
			writers = append(writers, a)
		}
	}
	switch {
	case len(readers) > 0 && !plan.readOnly:
		plan.refusal = fmt.Errorf("%w: volume %s is in use read-only by %s; a read-write use waits until every reader lets it go (LOCK_BREAK never takes a volume from readers): stop its containers there%s",
			driver.ErrBusyElsewhere, name, describe(readers), orReadOnly(v))
	case len(writers) > 0 && plan.readOnly && (!req.TakeOver || len(readers) > 0):
		a := writers[0]
		plan.refusal = fmt.Errorf("%w: volume %s is in use read-write by %s (container %s)%s; a read-only use waits until it lets go: stop it there, or if that host is dead, set LOCK_BREAK=on to fence it and take the volume over",
			driver.ErrBusyElsewhere, name, attachedHost(a), a.ServerID, p.sameName(a))
	case len(writers) > 0 && !req.TakeOver:
		a := writers[0]
		plan.refusal = fmt.Errorf("%w: volume %s is attached to %s (container %s)%s; stop it there, or if that host is dead, set LOCK_BREAK=on to fence it and take the volume over",
			driver.ErrBusyElsewhere, name, attachedHost(a), a.ServerID, p.sameName(a))
	case len(readers) > 0 && !v.Multiattach:
		plan.refusal = fmt.Errorf("%w: volume %s is read-only and in use by %s, but Cinder attaches a volume of type %q to one host at a time (it is not multiattach): "+
			"to read it on several hosts at once, create it with a multiattach volume type (-o volume-type=TYPE, a type whose extra spec multiattach is \"<is> True\"), or stop its container there first",
			driver.ErrBusyElsewhere, name, describe(readers), v.VolumeType)
	default:
		for _, a := range writers {
			h := attachedHost(a)
			_, id := attacher(a)
			plan.clear = append(plan.clear, holder{attachmentID: a.AttachmentID, from: h, host: h, identity: id})
		}
		if len(writers) > 0 {
			plan.reuse = ""
		}
	}
	if plan.refusal != nil {
		return plan
	}
	plan.pending = plan.reuse == "" && (v.Status == "attaching" || v.Status == "reserved")
	return plan
}

// describe names the hosts of attachments for people: "host a (container X) and host b (container Y)".
func describe(as []volumes.Attachment) string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, fmt.Sprintf("%s (container %s)", attachedHost(a), a.ServerID))
	}
	return strings.Join(out, " and ")
}

// orReadOnly adds to a refusal of a writer what lets it read instead.
func orReadOnly(v volumes.Volume) string {
	if v.Metadata[driver.MetaAccess] == driver.AccessReadOnly {
		return ""
	}
	return fmt.Sprintf(", or read it too: set the volume's access to readonly (openstack volume set --property %s=%s VOLUME)", driver.MetaAccess, driver.AccessReadOnly)
}

// planPending decides about the attachments not completed (Cinder lists them only in the
// attachments API, and says nothing of their host): this mount's own (an attempt whose answer was
// lost) is recognised by its instance UUID and deleted; another is a host attaching right now, or
// one that died doing so: refused, or with req.TakeOver taken over.
func planPending(name, status string, pending []attachments.Attachment, req driver.AttachRequest) attachPlan {
	var plan attachPlan
	for _, a := range pending {
		if a.Instance == InstanceUUID(req.MountID) {
			plan.clear = append(plan.clear, holder{attachmentID: a.ID, mine: true})
			continue
		}
		if !req.TakeOver {
			plan.refusal = fmt.Errorf("%w: volume %s is being attached elsewhere (Cinder status %s, attachment %s for instance %s, not completed); try again, or if that host died while attaching, set LOCK_BREAK=on to fence it and take the volume over",
				driver.ErrBusyElsewhere, name, status, a.ID, a.Instance)
			return plan
		}
		plan.clear = append(plan.clear, holder{attachmentID: a.ID, from: "instance " + a.Instance, host: "the host of instance " + a.Instance})
	}
	return plan
}
