package driver

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// docs/MANUAL.md lists, per filesystem, every mkfs option letter, sub-option and ext4 feature and
// every mount option the allowlists of fsoptions.go accept. This test fails, naming the option,
// when the allowlists gain one the manual does not list.

// manualFSRows returns the rows ("ext4", "xfs", "both") of the manual's table headed
// "| fstype | <what> |".
func manualFSRows(t *testing.T, what string) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../docs/MANUAL.md")
	if err != nil {
		t.Fatalf("read the operator's manual: %v", err)
	}
	_, table, ok := strings.Cut(string(b), "| fstype | "+what+" |\n")
	if !ok {
		t.Fatalf("docs/MANUAL.md has no table of %s", what)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		if fs, rest, ok := strings.Cut(strings.TrimPrefix(line, "| "), " |"); ok {
			rows[fs] = rest
		}
	}
	return rows
}

// listed says whether row names opt in backticks, bare or followed by a value (`opt`, `opt=N`,
// `opt[=0|1]`, `-b 1024`).
func listed(row, opt string) bool {
	return regexp.MustCompile("`" + regexp.QuoteMeta(opt) + "([` =\\[]|$)").MatchString(row)
}

func TestManualListsEveryMountOption(t *testing.T) {
	rows := manualFSRows(t, "mount-options allowed")
	check := func(row string, opts map[string]mountRule) {
		keys := make([]string, 0, len(opts))
		for k := range opts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if !listed(rows[row], k) {
				t.Errorf("mount option %s is allowed (%s) but not listed in the %q row of the manual's mount-options table", k, row, row)
			}
		}
	}
	check("both", commonMountOptions)
	for _, fs := range FSTypes {
		check(fs, mountRules[fs])
	}
}

func TestManualListsEveryMkfsOption(t *testing.T) {
	rows := manualFSRows(t, "mkfs-options allowed")
	for _, fs := range FSTypes {
		row := rows[fs]
		if row == "" {
			t.Errorf("the manual's mkfs-options table has no %s row", fs)
			continue
		}
		for l, r := range mkfsRules[fs] {
			if !listed(row, "-"+string(l)) {
				t.Errorf("mkfs option -%c is allowed for %s but not listed in the manual", l, fs)
			}
			for sub := range r.subs {
				if !listed(row, sub) {
					t.Errorf("mkfs option -%c %s is allowed for %s but not listed in the manual", l, sub, fs)
				}
			}
		}
	}
	for _, f := range ext4Features {
		f = strings.Trim(f, `\^?()`)
		if !regexp.MustCompile(`[(, ]` + f + `[,)]`).MatchString(rows["ext4"]) {
			t.Errorf("ext4 feature %s is allowed in -O but not listed in the manual", f)
		}
	}
}
