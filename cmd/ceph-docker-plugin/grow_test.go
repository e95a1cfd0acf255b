package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// The doctor and the start-up log say when a mounted ext4 cannot grow, why, and what to do.
func TestGrowFinding(t *testing.T) {
	noCap := errors.New("the kernel grows a mounted ext4 only for a process with CAP_SYS_RESOURCE")
	cases := []struct {
		interval time.Duration
		online   error
		status   string
		want     []string
	}{
		{30 * time.Second, nil, "ok", []string{"ext4 and xfs volumes grow while mounted", "30s"}},
		{30 * time.Second, noCap, "warn", []string{"ext4 volumes cannot grow while mounted", "CAP_SYS_RESOURCE", "next first Mount", "xfs volumes grow while mounted"}},
		{0, noCap, "ok", []string{"GROW_INTERVAL=off", "next first Mount"}},
	}
	for _, c := range cases {
		f := growFinding(Config{GrowInterval: c.interval}, c.online)
		if f.check != "grow" || f.status != c.status {
			t.Errorf("interval %s, online %v: %s %s, want grow %s", c.interval, c.online, f.check, f.status, c.status)
		}
		for _, w := range c.want {
			if !strings.Contains(f.detail, w) {
				t.Errorf("interval %s, online %v: %q lacks %q", c.interval, c.online, f.detail, w)
			}
		}
		if (c.status == "warn") != strings.Contains(f.fix, "bounding set") {
			t.Errorf("interval %s, online %v: fix %q", c.interval, c.online, f.fix)
		}

		l, hook := test.NewNullLogger()
		logGrowth(l, Config{GrowInterval: c.interval}, c.online)
		switch e := hook.LastEntry(); {
		case c.status == "ok" && e != nil:
			t.Errorf("interval %s, online %v: logged %q", c.interval, c.online, e.Message)
		case c.status == "warn" && (e == nil || e.Level != logrus.WarnLevel || e.Message != f.detail || e.Data["fix"] != f.fix):
			t.Errorf("interval %s, online %v: logged %+v, want a warning with the finding and its fix", c.interval, c.online, e)
		}
	}
}
