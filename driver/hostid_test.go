package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadHostIDMakesOneAndKeepsIt(t *testing.T) {
	dir := t.TempDir()
	h, note, err := LoadHostID(dir, "hw-1")
	if err != nil || !ValidHostID(h.ID) || h.Hardware != "hw-1" || note == "" {
		t.Fatalf("first start: %+v, %q, %v", h, note, err)
	}
	again, note, err := LoadHostID(dir, "hw-1")
	if err != nil || again.ID != h.ID || note != "" {
		t.Fatalf("second start: %+v, %q, %v; want the same ID %s and no note", again, note, err, h.ID)
	}
	// Another STATE_DIR (another machine, or a plugin instance with its own): another identity.
	other, _, err := LoadHostID(t.TempDir(), "hw-1")
	if err != nil || other.ID == h.ID {
		t.Fatalf("a second STATE_DIR got %s, the first has %s", other.ID, h.ID)
	}
}

// A STATE_DIR copied to other hardware (a cloned disk) gets a new identity there; the original
// machine keeps its own.
func TestLoadHostIDOnOtherHardwareMakesANewOne(t *testing.T) {
	dir := t.TempDir()
	h, _, err := LoadHostID(dir, "hw-1")
	if err != nil {
		t.Fatal(err)
	}
	clone, note, err := LoadHostID(dir, "hw-2")
	if err != nil || clone.ID == h.ID || clone.Previous != h.ID || clone.Hardware != "hw-2" ||
		!strings.Contains(note, "other hardware") {
		t.Fatalf("on other hardware: %+v, %q, %v", clone, note, err)
	}
	// Unreadable hardware (a container without DMI): the ID stays.
	same, _, err := LoadHostID(dir, "")
	if err != nil || same.ID != clone.ID {
		t.Fatalf("without a hardware ID: %+v, %v; want %s", same, err, clone.ID)
	}
}

// An identity made where the hardware could not be read is bound to it once it can be.
func TestLoadHostIDBindsHardwareLater(t *testing.T) {
	dir := t.TempDir()
	h, _, err := LoadHostID(dir, "")
	if err != nil || h.Hardware != "" {
		t.Fatal(h, err)
	}
	bound, note, err := LoadHostID(dir, "hw-1")
	if err != nil || bound.ID != h.ID || bound.Hardware != "hw-1" || note != "" {
		t.Fatalf("binding: %+v, %q, %v", bound, note, err)
	}
	if again, _, _ := LoadHostID(dir, "hw-1"); again.ID != h.ID {
		t.Fatalf("after binding: %s, want %s", again.ID, h.ID)
	}
}

// A damaged file is an error naming the file, never silently replaced: a new identity would
// leave this host's volumes held by "another host".
func TestLoadHostIDRefusesADamagedFile(t *testing.T) {
	for _, content := range []string{"", "{", `{"ID":"not-hex"}`, `{"ID":"ABCDEF0123456789ABCDEF0123456789"}`} {
		dir := t.TempDir()
		path := filepath.Join(dir, HostIDFile)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadHostID(dir, "hw")
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "LOCK_BREAK") {
			t.Errorf("content %q: err %v, want one naming %s and what to do", content, err, path)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("content %q was rewritten to %q", content, b)
		}
	}
}

func TestValidHostID(t *testing.T) {
	for s, want := range map[string]bool{
		"0123456789abcdef0123456789abcdef":  true,
		"0123456789abcdef0123456789abcde":   false,
		"0123456789abcdef0123456789abcdefa": false,
		"0123456789abcdef0123456789abcdeg":  false,
		"":                                  false,
	} {
		if ValidHostID(s) != want {
			t.Errorf("ValidHostID(%q) = %v", s, !want)
		}
	}
}
