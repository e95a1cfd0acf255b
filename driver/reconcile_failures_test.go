package driver

import (
	"errors"
	"testing"
)

// A restart that finds a volume's mapping or mount lost repairs it; when a repair step fails,
// Reconcile reports it naming the step, and the state keeps the volume for the next attempt.
func TestReconcileRepairFailures(t *testing.T) {
	cases := []struct {
		name  string
		setup func(e *testEnv)
		says  func(e *testEnv) []string
	}{{
		name: "the stale mount of the lost mapping cannot be cleared",
		setup: func(e *testEnv) {
			e.mapper.lose(image("v"))
			e.mounter.failNext("Unmount", errors.New("umount: busy"))
		},
		says: func(e *testEnv) []string {
			return []string{"clear the stale mount of lost mapping /dev/fake0", "umount: busy"}
		},
	}, {
		name: "the lost mapping cannot be made again",
		setup: func(e *testEnv) {
			e.mapper.lose(image("v"))
			e.mounter.lose(e.path("v"))
			e.mapper.failNext("Map", errors.New("rbd: map failed"))
		},
		says: func(e *testEnv) []string { return []string{"map volumes/v again", "rbd: map failed"} },
	}, {
		name: "another device is mounted at the volume's path",
		setup: func(e *testEnv) {
			e.mounter.lose(e.path("v"))
			if err := e.mounter.Mount(bg, "/dev/other", e.path("v"), "ext4", ""); err != nil {
				e.t.Fatal(err)
			}
		},
		says: func(e *testEnv) []string {
			return []string{e.path("v") + " has /dev/other mounted, not the volume's device /dev/fake0", "unmount it"}
		},
	}, {
		name: "the lost mount cannot be made again",
		setup: func(e *testEnv) {
			e.mounter.lose(e.path("v"))
			e.mounter.failNext("Mount", errors.New("mount: wrong fs type"))
		},
		says: func(e *testEnv) []string { return []string{"mount: wrong fs type"} },
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestDriver(t)
			e.prov.add("v", 1<<30, "ext4")
			e.mustMount("v", "id1")
			tc.setup(e)
			d := e.restart()
			assertErr(t, d.Reconcile(bg), nil, tc.says(e)...)
			if st, ok := e.state("v"); !ok || len(st.IDs) != 1 {
				t.Errorf("state after the failed repair: %+v (found %v), want the volume kept for the next attempt", st, ok)
			}
		})
	}
}
