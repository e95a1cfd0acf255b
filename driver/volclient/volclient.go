// Package volclient speaks docker.volumedriver/1.0 to a plugin's unix socket as dockerd does
// (HTTP POST, JSON bodies, the answer's "Err" as the error). The benchmarks and the integration
// tests drive the real plugin binary with it.
package volclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Client calls one plugin. Safe for concurrent use; connections are kept alive.
type Client struct {
	http *http.Client
}

// New returns a client of the plugin listening on socket; each call gives up after timeout.
func New(socket string, timeout time.Duration) *Client {
	return &Client{http: &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
			MaxIdleConnsPerHost: 64,
		},
	}}
}

// Error is an answer with a non-empty "Err": the plugin got the call and refused it.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

// Call posts req to path ("/VolumeDriver.Mount", ...) and decodes the answer into resp (nil:
// ignored). A refusal is returned as *Error; anything else is a transport or decoding error.
func (c *Client) Call(path string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	r, err := c.http.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		return fmt.Errorf("decode answer to %s: %w", path, err)
	}
	if e, ok := raw["Err"]; ok {
		var s string
		_ = json.Unmarshal(e, &s)
		if s != "" {
			return &Error{s}
		}
	}
	if resp == nil {
		return nil
	}
	b, _ := json.Marshal(raw)
	return json.Unmarshal(b, resp)
}

// CloseIdle drops the kept-alive connections: call it when the plugin restarts, so that no
// call goes out on a connection to the process that is gone.
func (c *Client) CloseIdle() { c.http.CloseIdleConnections() }
