package driver

import (
	"slices"
	"testing"
)

// Every declared step boundary is reached by a plain lifecycle (Docker's calls and the CSI
// node's), and every step the code reaches is declared: a step the crash tests name can fire.
func TestFaultStepsAreReached(t *testing.T) {
	var seen []FaultStep
	e := newTestDriver(t, func(c *Config) {
		inner := c.Fault
		c.Fault = func(step FaultStep) {
			seen = append(seen, step)
			inner(step)
		}
	})
	n := newTestNode(t, e)
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	must("Create", e.d.Create(bg, "v", map[string]string{"size": "1G"}))
	e.mustMount("v", "id1")
	must("Unmount", e.d.Unmount(bg, "v", "id1"))
	must("Stage", n.Stage(bg, "v", StageRequest{StagingPath: stg}))
	must("Publish", n.Publish(bg, "v", PublishRequest{StagingPath: stg, Target: tgt1}))
	must("Unpublish", n.Unpublish(bg, "v", tgt1)) // the last target: the stage is released
	must("Stage", n.Stage(bg, "v", StageRequest{StagingPath: "/csi/staging/v2"}))
	must("Unstage", n.Unstage(bg, "v", "/csi/staging/v2"))
	must("Remove", e.d.Remove(bg, "v"))

	for _, s := range seen {
		if !slices.Contains(FaultSteps, s) {
			t.Errorf("step %q is reached but not declared in FaultSteps", s)
		}
	}
	for _, s := range FaultSteps {
		if !slices.Contains(seen, s) {
			t.Errorf("declared step %q is never reached (reached: %q)", s, seen)
		}
	}
	if len(FaultSteps) != len(uniqueSteps(FaultSteps)) {
		t.Errorf("FaultSteps lists a step twice: %q", FaultSteps)
	}
}

func uniqueSteps(s []FaultStep) []FaultStep {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}
