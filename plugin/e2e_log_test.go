//go:build e2e

package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// dockerd files each line a managed plugin writes with the plugin's ID as the only field:
// its stdout at level=info, its stderr at level=error (moby plugin/manager.go makeLoggerStreams:
// a logger whose hook sets plugin=<id>, WriterLevel(InfoLevel) and WriterLevel(ErrorLevel)).
// The check after the suite (TestMain) fails on any such line at level=error whose own text is
// not an error: the plugin must log info, warnings and debug to stdout.

func dockerdLog() string { return filepath.Join(dockerLab(), "dockerd.log") }

// dockerdLogSize is where this run's part of dockerd's log starts (the lab appends to it).
func dockerdLogSize() int64 {
	fi, err := os.Stat(dockerdLog())
	if err != nil {
		return 0
	}
	return fi.Size()
}

var pluginField = regexp.MustCompile(` plugin=[0-9a-f]{64}\s*$`)

// otherPlugins are the IDs of the plugins installed before the suite other than the one under
// test (the other backend's, built by its own run of the suite): their lines are that run's
// concern. Plugins the suite installs itself are checked.
func otherPlugins() map[string]bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, dockerBin(), "plugin", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}").Output()
	ids := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if id, name, ok := strings.Cut(l, " "); ok && name != pluginName() {
			ids[id] = true
		}
	}
	return ids
}

// falseErrors returns the plugin lines at level=error, from offset on, whose plugin text is not
// itself at level error, fatal or panic (lines of the plugins in skip excepted).
func falseErrors(offset int64, skip map[string]bool) ([]string, error) {
	f, err := os.Open(dockerdLog())
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		return nil, err
	}
	var bad []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		m := pluginField.FindString(line)
		if m == "" || skip[strings.TrimSpace(strings.TrimPrefix(m, " plugin="))] {
			continue
		}
		outer := logfmt(line)
		if outer["level"] != "error" {
			continue
		}
		if !isErrorLevel(pluginLevel(outer["msg"])) {
			bad = append(bad, line)
		}
	}
	return bad, sc.Err()
}

func isErrorLevel(l string) bool { return l == "error" || l == "fatal" || l == "panic" }

// pluginLevel is the level of one line the plugin wrote: logrus text (level=...) or JSON
// ("level":...); "" when it is neither (an unstructured line, e.g. from a child process).
func pluginLevel(text string) string {
	if strings.HasPrefix(text, "{") {
		var j struct{ Level string }
		if json.Unmarshal([]byte(text), &j) == nil {
			return j.Level
		}
	}
	return logfmt(text)["level"]
}

// logfmt parses key=value pairs as logrus' text formatter writes them (values quoted with Go
// escapes when they need it).
func logfmt(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key := s[:eq]
		if strings.ContainsAny(key, " \"") {
			// Not a key: skip this word.
			if sp := strings.IndexByte(s, ' '); sp >= 0 {
				s = s[sp+1:]
				continue
			}
			break
		}
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else if sp := strings.IndexByte(s, ' '); sp >= 0 {
			val, s = s[:sp], s[sp+1:]
		} else {
			val, s = s, ""
		}
		out[key] = val
	}
	return out
}
