package driver

import (
	"errors"
	"testing"
	"time"
)

// countingKnown is a KnownStore that counts its saves and fails them while err is set.
type countingKnown struct {
	saves []map[string]time.Time
	err   error
}

func (k *countingKnown) LoadKnown() (map[string]time.Time, error) { return map[string]time.Time{}, nil }

func (k *countingKnown) SaveKnown(names map[string]time.Time) error {
	if k.err != nil {
		return k.err
	}
	k.saves = append(k.saves, names)
	return nil
}

// The known names are written when they change, not on every call; a failed write is logged
// and made again on the next change.
func TestKnownNamesSavedOnChange(t *testing.T) {
	k := &countingKnown{}
	e := newTestDriver(t, func(c *Config) { c.Known = k })
	e.prov.add("a", 1<<30, "ext4")
	e.prov.add("b", 1<<30, "ext4")
	e.prov.add("c", 1<<30, "ext4")
	if _, err := e.d.Get(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.Get(bg, "a"); err != nil {
		t.Fatal(err)
	}
	if len(k.saves) != 1 || len(k.saves[0]) != 1 {
		t.Fatalf("saves after two Gets of one volume: %v, want one save of one name", k.saves)
	}
	k.err = errors.New("disk full")
	if _, err := e.d.Get(bg, "b"); err != nil {
		t.Fatalf("Get with the known names unsavable: %v", err)
	}
	if len(k.saves) != 1 {
		t.Fatalf("saves %v", k.saves)
	}
	found := false
	for _, en := range e.logs.AllEntries() {
		found = found || (en.Message == "saving the names of known volumes" && en.Data["error"] != nil)
	}
	if !found {
		t.Error("the failed save was not logged")
	}
	k.err = nil
	if _, err := e.d.Get(bg, "c"); err != nil {
		t.Fatal(err)
	}
	if len(k.saves) != 2 || len(k.saves[1]) != 3 {
		t.Errorf("saves after the store recovered: %v, want the three names saved at the next change", k.saves)
	}
}
