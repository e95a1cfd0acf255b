package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// A run of some scale phases replaces their parts of the scale section and keeps the others' and
// the rest of the file.
func TestScaleSectionReplacesOnlyTheRunsParts(t *testing.T) {
	gb, ge := partMarks("getcost")
	hb, he := partMarks("hosts")
	old := "# Benchmarks\n\nhand-written text\n\n" + scaleBegin + "\n## Scale\n\n" +
		gb + "\nOLD GET COST\n" + ge + "\n\n" + hb + "\nOLD HOSTS\n" + he + "\n\n" + scaleEnd + "\n\nafter the section\n"
	defer func(saved scaleResults) { scaleRes = saved }(scaleRes)
	scaleRes = scaleResults{cost: []costRow{{build: "this tree", call: "Get (volume not in use)", calls: 10,
		per: clientCounter{ops: 2, reads: 2, cpuMS: 0.5}, lat: sample{time.Millisecond}}}}
	b := &bench{o: options{phases: []string{"getcost"}, makeTarget: "make bench"}, res: &results{start: time.Now()}}
	out := splice(old, b.scaleSection(old))
	for _, want := range []string{"hand-written text", "OLD HOSTS", "after the section", "| this tree | Get (volume not in use) | 2.00", "make bench-scale"} {
		if !strings.Contains(out, want) {
			t.Errorf("the new file lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "OLD GET COST") || strings.Count(out, scaleBegin) != 1 || strings.Count(out, gb) != 1 {
		t.Errorf("the getcost part was not replaced once:\n%s", out)
	}
	if strings.Index(out, gb) > strings.Index(out, hb) {
		t.Errorf("the parts are out of the phases' order:\n%s", out)
	}
}

// procStart reads this process's start: before now, and not long before (the test just started).
func TestProcStart(t *testing.T) {
	st := procStart(os.Getpid())
	if st.IsZero() || st.After(time.Now()) || time.Since(st) > 10*time.Minute {
		t.Fatalf("procStart = %v, now %v", st, time.Now())
	}
}

// The sections after the scale section (the docker guests' figures, written by hand from the lab
// tests) survive a rewrite of the report.
func TestKeptAfterTheScaleSection(t *testing.T) {
	doc := "# Benchmarks\n\nold\n" + scaleBegin + "\nparts\n" + scaleEnd + "\n\n## Docker guests\n\nfigures\n"
	if got := keptAfter(doc); got != "\n## Docker guests\n\nfigures\n" {
		t.Fatalf("keptAfter = %q", got)
	}
	if got := keptAfter("# Benchmarks\n" + scaleBegin + "\n" + scaleEnd + "\n"); got != "" {
		t.Fatalf("keptAfter with nothing after = %q", got)
	}
	if got := keptAfter("# Benchmarks\n"); got != "" {
		t.Fatalf("keptAfter without a scale section = %q", got)
	}
}
