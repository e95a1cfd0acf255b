package main

import (
	"io"
	"sync"

	"github.com/sirupsen/logrus"
)

// dockerd files each line a managed plugin writes to stderr as level=error and each line on
// stdout as level=info (moby's plugin manager logs the two streams at those levels). The plugin
// therefore writes its errors (and worse) to stderr and every other line to stdout, so that
// dockerd's log shows an error only where the plugin reported one.

// splitOutput sends each entry of logger to stdout, or to stderr at level error and above.
func splitOutput(logger *logrus.Logger, stdout, stderr io.Writer) {
	logger.SetOutput(io.Discard)
	logger.AddHook(&levelSplit{stdout: stdout, stderr: stderr})
}

// levelSplit is the hook that writes each formatted entry to its stream, one whole line per
// write so that lines of concurrent calls never interleave.
type levelSplit struct {
	mu             sync.Mutex
	stdout, stderr io.Writer
}

func (h *levelSplit) Levels() []logrus.Level { return logrus.AllLevels }

func (h *levelSplit) Fire(e *logrus.Entry) error {
	line, err := e.Bytes()
	if err != nil {
		return err
	}
	w := h.stdout
	if e.Level <= logrus.ErrorLevel {
		w = h.stderr
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err = w.Write(line)
	return err
}
