package driver

import (
	"context"
	"errors"
	"fmt"
)

// The plugin has two front ends on one core: Docker's volume protocol (PROTOCOL=volume) and CSI
// for swarm cluster volumes (PROTOCOL=csi). Both list the same pool (or Cinder project), so
// without a record each would mount, remove or adopt the other's volumes: `docker volume rm` of a
// cluster volume reached the volume plugin and deleted the image under swarm. Each volume
// therefore records at Create the front end that made it (rbd: image metadata; Cinder: volume
// metadata), and each front end refuses the other's volumes. A volume without the record (made
// before it existed, or by hand) is served by both, as before.

// The front ends, as recorded with a volume.
const (
	FrontEndVolume = "volume" // docker.volumedriver/1.0
	FrontEndCSI    = "csi"    // CSI: swarm cluster volumes
)

// ErrOtherFrontEnd: the volume was created through the other front end, which alone serves it.
var ErrOtherFrontEnd = errors.New("belongs to the plugin's other front end")

var frontEndNames = map[string]string{
	FrontEndVolume: "Docker's volume protocol (the volume plugin, PROTOCOL=volume)",
	FrontEndCSI:    "swarm cluster volumes (the CSI plugin, PROTOCOL=csi)",
}

func frontEndName(fe string) string {
	if n, ok := frontEndNames[fe]; ok {
		return n
	}
	return fmt.Sprintf("a front end this version does not know (%q)", fe)
}

// otherFrontEnd refuses vol when it was created through the other front end. doing is what
// was refused ("mount it", "remove it", ...).
func (d *Driver) otherFrontEnd(vol Volume, doing string) error {
	mine := d.cfg.FrontEnd
	if mine == "" || vol.FrontEnd == "" || vol.FrontEnd == mine {
		return nil
	}
	todo := "use it through the volume plugin (docker run -v, --mount type=volume), or give the cluster volume another name"
	if mine == FrontEndVolume {
		todo = "manage it as a cluster volume on a swarm manager (docker volume inspect/rm there, services with --mount type=cluster)"
	}
	return fmt.Errorf("volume %s %w: it was created through %s, and this plugin serves %s, which does not %s; %s",
		vol.Name, ErrOtherFrontEnd, frontEndName(vol.FrontEnd), frontEndName(mine), doing, todo)
}

// refuseOther reads the volume and refuses it when the other front end created it. A volume
// that does not exist is left to the caller's own call to report.
func (d *Driver) refuseOther(ctx context.Context, name, doing string) error {
	if d.cfg.FrontEnd == "" {
		return nil
	}
	vol, err := d.prov.Get(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("volume %s: cannot tell which front end created it: %w", name, err)
	}
	vol.Name = name
	return d.otherFrontEnd(vol, doing)
}
