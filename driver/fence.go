package driver

import "context"

// Recording a holder's clients. With its claim on a volume, a host records the Ceph clients it
// uses the volume through (Provisioner.RecordClients): its own connection and the mapping's
// client. A kernel client keeps its address for as long as it is mapped, even after it let the
// image's exclusive lock go and lost its watch; a host that takes the volume over from a dead
// holder (LOCK_BREAK=on) fences every recorded client, not only those it can still see. The
// driver records after every Map; a mapping no taker could fence is not used.

// recordClients records m's clients with the backend (read-only mappings write nothing and
// need no fencing).
func (d *Driver) recordClients(ctx context.Context, name string, att Attachment, m Mapping) error {
	if att.Map.ReadOnly {
		return nil
	}
	return d.prov.RecordClients(ctx, name, att, m)
}
