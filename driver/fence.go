package driver

import "context"

// ClientRecorder is implemented by a Provisioner that records, with this host's claim on a
// volume, the Ceph clients this host uses the volume through: its own connection and the
// mapping's client (a kernel client keeps its address for as long as it is mapped, even after it
// let the image's exclusive lock go and lost its watch). A host that takes the volume over from
// a dead holder (LOCK_BREAK=on) fences every recorded client, not only those it can still see.
// The driver calls it after every Map; an error fails the Mount (a mapping no taker could fence
// is not used).
type ClientRecorder interface {
	RecordClients(ctx context.Context, name string, att Attachment, m Mapping) error
}

// recordClients records m's clients with the backend, if it keeps such records.
func (d *Driver) recordClients(ctx context.Context, name string, att Attachment, m Mapping) error {
	r, ok := d.prov.(ClientRecorder)
	if !ok || att.Map.ReadOnly {
		return nil
	}
	return r.RecordClients(ctx, name, att, m)
}
