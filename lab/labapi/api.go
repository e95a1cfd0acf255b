// Package labapi holds the request and reply types of the krbd lab's guest agent (lab/agent),
// shared by the agent and the host-side lab tests.
package labapi

import "time"

// Error is a reply that carries only an error ("" on success).
type Error struct {
	Err string `json:"err,omitempty"`
}

// ExecRequest runs a command in the guest.
type ExecRequest struct {
	Argv      []string `json:"argv"`
	Env       []string `json:"env,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
}

// ExecResult is a finished command. Code is -1 when it did not exit by itself (Err says why).
type ExecResult struct {
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Code   int    `json:"code"`
	Err    string `json:"err,omitempty"`
	MS     int64  `json:"ms"` // wall time in the guest
}

// FileRequest writes a file in the guest, created with Mode (default 0600).
type FileRequest struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode,omitempty"`
	Data []byte `json:"data"`
}

// PluginStart starts the plugin binary with exactly Env (plus PATH).
type PluginStart struct {
	Binary string   `json:"binary"`
	Env    []string `json:"env"`
}

// PluginInfo names the plugin process started or killed.
type PluginInfo struct {
	PID int `json:"pid"`
}

// KRBDMap maps (or unmaps) an image with the plugin's krbd mapper.
type KRBDMap struct {
	Pool     string   `json:"pool"`
	Image    string   `json:"image"`
	ReadOnly bool     `json:"ro,omitempty"`
	Monitors []string `json:"monitors,omitempty"`
	User     string   `json:"user,omitempty"`
	Keyring  string   `json:"keyring,omitempty"`
}

// WriterStart starts the background writer. Mode "append": fixed-size records appended to Path,
// each fsynced. Mode "files": new files Path/f-NNNNNN of Size random bytes, each file and the
// directory fsynced before the file is listed in Fsynced.
type WriterStart struct {
	Mode       string `json:"mode"`
	Path       string `json:"path"`
	Size       int    `json:"size"`
	IntervalMS int    `json:"interval_ms"`
}

// FileSum is one file the writer fsynced, with its SHA-256.
type FileSum struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// WriterStatus is what the writer has done so far.
type WriterStatus struct {
	Running bool      `json:"running"`
	Count   int       `json:"count"` // writes completed and fsynced
	LastOK  time.Time `json:"last_ok"`
	// MaxGapMS is the longest time between two completed writes.
	MaxGapMS int64     `json:"max_gap_ms"`
	Errors   int       `json:"errors"`
	FirstErr string    `json:"first_err,omitempty"`
	ErrAt    time.Time `json:"err_at"`
	Fsynced  []FileSum `json:"fsynced,omitempty"`
}
