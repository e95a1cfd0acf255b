package driver

import (
	"time"
)

// rememberKnown persists the known names when they changed. A failure costs only the
// answers from memory after a restart, so it is logged, not returned.
func (d *Driver) rememberKnown() {
	if d.cfg.Known == nil {
		return
	}
	d.knownMu.Lock()
	defer d.knownMu.Unlock()
	names := map[string]time.Time{}
	d.known.Range(func(k, v any) bool {
		names[k.(string)] = v.(VolumeInfo).CreatedAt
		return true
	})
	if len(names) == len(d.knownSaved) {
		same := true
		for n := range names {
			if _, ok := d.knownSaved[n]; !ok {
				same = false
				break
			}
		}
		if same {
			return
		}
	}
	if err := d.cfg.Known.SaveKnown(names); err != nil {
		d.log.WithError(err).Warn("saving the names of known volumes")
		return
	}
	d.knownSaved = names
}
