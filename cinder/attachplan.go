package cinder

import (
	"fmt"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/attachments"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// holder is an attachment in the way of this mount's: another host's (or another mount's
// attempt), refused or, with LOCK_BREAK, taken over; or this mount's own attempt whose answer was
// lost, deleted.
type holder struct {
	attachmentID string
	mine         bool   // this mount's own earlier attempt: deleted, nothing fenced
	from         string // for people, after "take volume over from": "host node-3 (host ID ...)", "instance <uuid>"
	host         string // for people: the host, "the host of instance <uuid>" when Cinder does not say
	identity     string // the host ID the attachment names ("" none): the Ceph clients it recorded are fenced
}

// attachPlan is what Attach does, decided from what Cinder reported of the volume and its
// attachments: clear the holders in the way, in Cinder's order, then refuse (refusal), or serve
// this host's attachment again (reuse), or look at the attachments not completed (pending), or
// make a new attachment.
type attachPlan struct {
	clear   []holder
	refusal error
	reuse   string
	pending bool
}

// planAttach decides from the volume's completed attachments. Another host's attachment is
// refused, or with req.TakeOver taken over (which leaves this host none of its own either); this
// host's attachment serves again. A volume attaching or reserved with no completed attachment left
// has attachments not completed, which planPending decides about.
func (p *Provisioner) planAttach(name string, v volumes.Volume, req driver.AttachRequest) attachPlan {
	var plan attachPlan
	for _, a := range v.Attachments {
		if p.owns(a, req.Claimed) {
			if plan.reuse == "" {
				plan.reuse = a.AttachmentID
			}
			continue
		}
		h := attachedHost(a)
		if !req.TakeOver {
			plan.refusal = fmt.Errorf("%w: volume %s is attached to %s (container %s)%s; stop it there, or if that host is dead, set LOCK_BREAK=on to fence it and take the volume over",
				driver.ErrBusyElsewhere, name, h, a.ServerID, p.sameName(a))
			return plan
		}
		_, id := attacher(a)
		plan.clear = append(plan.clear, holder{attachmentID: a.AttachmentID, from: h, host: h, identity: id})
	}
	if len(plan.clear) > 0 {
		plan.reuse = ""
	}
	plan.pending = plan.reuse == "" && (v.Status == "attaching" || v.Status == "reserved")
	return plan
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
