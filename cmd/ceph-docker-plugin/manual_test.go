package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/cinder"
	"github.com/cephdocker/ceph-docker-plugin/driver"
	"github.com/cephdocker/ceph-docker-plugin/rbd"
)

// The operator's manual documents every setting and every volume option. These tests hold it to
// the code: a setting of the Settings table or an option key the driver or a backend accepts that
// has no row in docs/MANUAL.md fails them, naming what is missing.

const manualPath = "../../docs/MANUAL.md"

func readManual(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(manualPath)
	if err != nil {
		t.Fatalf("read the operator's manual: %v", err)
	}
	return string(b)
}

// tableAfter returns the rows of the markdown table whose header row starts with header, keyed
// by their first cell with its backticks removed; each row is split into its trimmed cells.
func tableAfter(t *testing.T, doc, header string) map[string][]string {
	t.Helper()
	at := strings.Index(doc, "\n"+header)
	if at < 0 {
		t.Fatalf("%s has no table headed %q", manualPath, header)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(doc[at+1:], "\n")[2:] { // after the header and |---|
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows[strings.Trim(cells[0], "`")] = cells
	}
	return rows
}

func TestManualDocumentsEverySetting(t *testing.T) {
	rows := tableAfter(t, readManual(t), "| setting | default | meaning | example |")
	for _, s := range Settings {
		row, ok := rows[s.Name]
		switch {
		case !ok:
			t.Errorf("setting %s (default %q) has no row in the settings table of %s", s.Name, s.Default, manualPath)
		case len(row) < 4 || row[2] == "" || row[3] == "":
			t.Errorf("setting %s: its row in %s needs a default, a meaning and an example: %q", s.Name, manualPath, row)
		case s.Default != "" && !strings.Contains(row[1], "`"+s.Default+"`"):
			t.Errorf("setting %s: the manual gives its default as %s, the code as %q", s.Name, row[1], s.Default)
		case s.Default == "" && strings.Contains(row[1], "`"):
			t.Errorf("setting %s: the manual gives it a default (%s); the code has none", s.Name, row[1])
		}
	}
	for name := range rows {
		if !slices.ContainsFunc(Settings, func(s Setting) bool { return s.Name == name }) {
			t.Errorf("the manual documents a setting %s that the code does not read", name)
		}
	}
}

var allowedRE = regexp.MustCompile(`allowed are ([a-z0-9, -]+)`)

// acceptedOptions is every -o key the driver accepts with the given backend keys, as the driver
// itself lists them when it refuses an unknown one.
func acceptedOptions(t *testing.T, backendKeys []string) []string {
	t.Helper()
	_, err := driver.ParseOptions(map[string]string{"manual-test-no-such-option": "1"},
		driver.OptionDefaults{Size: 10 << 30, FSType: "ext4"}, backendKeys)
	if err == nil {
		t.Fatal("ParseOptions accepted an unknown option")
	}
	m := allowedRE.FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("the refusal of an unknown option lists no allowed keys: %v", err)
	}
	keys := strings.Split(m[1], ", ")
	for _, k := range append([]string{driver.OptSize, driver.OptFSType, driver.OptMkfsOptions, driver.OptMountOptions}, backendKeys...) {
		if !slices.Contains(keys, k) {
			t.Errorf("the refusal of an unknown option does not list %q: %v", k, err)
		}
	}
	return keys
}

func TestManualDocumentsEveryVolumeOption(t *testing.T) {
	rows := tableAfter(t, readManual(t), "| option | backend | default | meaning | example |")
	rbdKeys := acceptedOptions(t, rbd.BackendOptions())
	cinderKeys := acceptedOptions(t, cinder.New(cinder.Config{}).BackendOptions())
	backendOf := func(k string) string {
		switch inRBD, inCinder := slices.Contains(rbdKeys, k), slices.Contains(cinderKeys, k); {
		case inRBD && inCinder:
			return "both"
		case inRBD:
			return "rbd"
		default:
			return "cinder"
		}
	}
	all := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(rbdKeys), cinderKeys...))))
	for _, k := range all {
		row, ok := rows[k]
		switch {
		case !ok:
			t.Errorf("volume option %s (%s) has no row in the volume options table of %s", k, backendOf(k), manualPath)
		case len(row) < 5 || row[3] == "" || row[4] == "":
			t.Errorf("volume option %s: its row in %s needs a backend, a default, a meaning and an example: %q", k, manualPath, row)
		case row[1] != backendOf(k):
			t.Errorf("volume option %s: the manual says backend %q, the code accepts it with %s", k, row[1], backendOf(k))
		}
	}
	for k := range rows {
		if !slices.Contains(all, k) {
			t.Errorf("the manual documents a volume option %s that neither backend accepts", k)
		}
	}
}
