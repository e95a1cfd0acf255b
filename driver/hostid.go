package driver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A host's identity as the holder of volumes. NODE_NAME is only what people read: two machines
// cloned from one image have the same hostname, and two plugins configured alike have the same
// NODE_NAME. The identity is a random ID made on the plugin's first start and kept in STATE_DIR
// (under the propagated mount, so it survives plugin upgrades and restarts, like the mount state
// it goes with). It is bound to the machine's hardware ID (the SMBIOS product UUID, which a
// hypervisor gives each VM, clones included) when that can be read: a STATE_DIR copied to
// another machine (a cloned disk) gets a new ID there instead of passing for the original.
// /etc/machine-id is not used: cloned images share it unless they were prepared for cloning,
// and a managed plugin cannot see it.

// HostIDFile is the identity's file in STATE_DIR.
const HostIDFile = "host-id"

// HostID is the content of HostIDFile.
type HostID struct {
	ID       string    // 32 lowercase hex digits, random
	Hardware string    `json:",omitempty"` // the hardware ID it was made on; "" when unreadable
	Created  time.Time // when it was made
	// Previous is the ID this file held before a hardware change made a new one (a copied
	// STATE_DIR), for the operator: locks under it are another machine's to this host.
	Previous string `json:",omitempty"`
}

// Short is the ID's first 12 digits, as messages show it.
func (h HostID) Short() string { return ShortHostID(h.ID) }

// ShortHostID abbreviates a host ID for messages.
func ShortHostID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// ValidHostID says whether s has the form of a host ID (32 lowercase hex digits).
func ValidHostID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

// LoadHostID reads this host's identity from dir, making it on first start. hardware is this
// machine's hardware ID ("" when it cannot be read). note says what happened besides a plain
// read ("" then): a new identity, or a new one because the file was made on other hardware.
// A damaged file is an error, not replaced: replacing it would orphan this host's locks.
func LoadHostID(dir, hardware string) (h HostID, note string, err error) {
	path := filepath.Join(dir, HostIDFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		h, err = newHostID(hardware, "")
		if err != nil {
			return h, "", err
		}
		return h, "made a new host identity (first start with this STATE_DIR)", saveHostID(path, h)
	case err != nil:
		return h, "", fmt.Errorf("read the host identity %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &h); err != nil || !ValidHostID(h.ID) {
		return h, "", fmt.Errorf("the host identity %s is damaged (%q); restore it from a backup of this host, or remove it to make a new identity (volumes this host holds then look held by another host: take them over with LOCK_BREAK=on once nothing maps them)", path, strings.TrimSpace(string(b)))
	}
	switch {
	case hardware == "" || h.Hardware == hardware:
		return h, "", nil
	case h.Hardware == "":
		// Made where the hardware ID could not be read (or without it recorded):
		// bind it now.
		h.Hardware = hardware
		return h, "", saveHostID(path, h)
	}
	old := h
	h, err = newHostID(hardware, old.ID)
	if err != nil {
		return h, "", err
	}
	note = fmt.Sprintf("%s was made on other hardware (%s, this machine is %s): a copy of another machine's STATE_DIR (a cloned disk?); made a new host identity, so that volumes held under %s are not taken for this host's",
		path, old.Hardware, hardware, old.Short())
	return h, note, saveHostID(path, h)
}

func newHostID(hardware, previous string) (HostID, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return HostID{}, fmt.Errorf("make a host identity: %w", err)
	}
	return HostID{ID: hex.EncodeToString(b[:]), Hardware: hardware, Created: time.Now().UTC(), Previous: previous}, nil
}

// saveHostID writes h atomically and durably.
func saveHostID(path string, h HostID) error {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save the host identity: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".host-id.*.tmp")
	if err != nil {
		return fmt.Errorf("save the host identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(append(b, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("save the host identity: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save the host identity: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
