package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// Errors go to stderr (dockerd files them as level=error), every other line to stdout (filed
// as level=info), each line whole.
func TestLogLinesGoToTheStreamOfTheirLevel(t *testing.T) {
	var out, errs bytes.Buffer
	logger := logrus.New()
	logger.SetLevel(logrus.DebugLevel)
	splitOutput(logger, &out, &errs)
	log := logger.WithField("volume", "v1")
	log.Debug("d-line")
	log.Info("i-line")
	log.Warn("w-line")
	log.Error("e-line")

	for _, want := range []string{"level=debug msg=d-line volume=v1\n", "level=info msg=i-line volume=v1\n", "level=warning msg=w-line volume=v1\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout %q lacks %q", out.String(), want)
		}
	}
	if strings.Contains(out.String(), "e-line") {
		t.Errorf("an error went to stdout: %q", out.String())
	}
	if lines := strings.Split(strings.TrimSpace(errs.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "level=error msg=e-line volume=v1") {
		t.Errorf("stderr = %q, want the one error line", errs.String())
	}
}
