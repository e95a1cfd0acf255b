package rbd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// cephErr imitates go-ceph's errors: a negative errno behind ErrorCode().
type cephErr int

func (e cephErr) Error() string  { return fmt.Sprintf("rbd: ret=%d", int(e)) }
func (e cephErr) ErrorCode() int { return int(e) }

func TestKindOfTranslatesErrnos(t *testing.T) {
	cases := []struct {
		err  error
		want error
	}{
		{cephErr(-int(syscall.ENOENT)), driver.ErrNotFound},
		{cephErr(-int(syscall.EEXIST)), driver.ErrExists},
		{cephErr(-int(syscall.EBUSY)), driver.ErrInUse},
		{cephErr(-int(syscall.ENOTEMPTY)), driver.ErrInUse},
		{cephErr(-int(syscall.ETIMEDOUT)), driver.ErrTimeout},
		{cephErr(-int(syscall.EACCES)), driver.ErrPermission},
		{cephErr(-int(syscall.EPERM)), driver.ErrPermission},
		{cephErr(-int(syscall.ESHUTDOWN)), driver.ErrPermission},
		{cephErr(-int(syscall.EINVAL)), driver.ErrInvalid},
		{cephErr(-int(syscall.ENOSPC)), driver.ErrNoSpace},
		{cephErr(-int(syscall.EDQUOT)), driver.ErrNoSpace},
		{fmt.Errorf("wrapped: %w", cephErr(-int(syscall.ENOENT))), driver.ErrNotFound},
		{context.DeadlineExceeded, driver.ErrTimeout},
		{cephErr(-int(syscall.EIO)), nil},
		{errors.New("plain"), nil},
	}
	for _, c := range cases {
		if got := kindOf(c.err); got != c.want {
			t.Errorf("kindOf(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestOpErrorMatchesSentinelAndCause(t *testing.T) {
	cause := cephErr(-int(syscall.ENOENT))
	err := opErr("info", "volumes/x", cause)
	if !errors.Is(err, driver.ErrNotFound) {
		t.Error("does not match driver.ErrNotFound")
	}
	var ce cephErr
	if !errors.As(err, &ce) || ce != cause {
		t.Error("does not unwrap to the cause")
	}
	if msg := err.Error(); !strings.Contains(msg, "info") || !strings.Contains(msg, "volumes/x") || !strings.Contains(msg, "not found") {
		t.Errorf("message %q does not name the op, the image and the kind", msg)
	}
	if opErr("x", "y", nil) != nil {
		t.Error("opErr(nil) != nil")
	}
	// Already an OpError: kept as is (translated once).
	if again := opErr("other", "z", err); again != err {
		t.Errorf("re-wrapped: %v", again)
	}
}

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:0/1234":                          "127.0.0.1:0/1234",
		"v1:127.0.0.1:0/1234":                       "127.0.0.1:0/1234",
		"[v2:127.0.0.1:0/1234,v1:127.0.0.1:0/1234]": "127.0.0.1:0/1234",
		" any:10.1.2.3:6800/99 ":                    "10.1.2.3:6800/99",
		"[v2:[::1]:3300/0,v1:[::1]:6789/0]":         "[::1]:3300/0",
	} {
		if got := normalizeAddr(in); got != want {
			t.Errorf("normalizeAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseFeatures(t *testing.T) {
	bits, err := ParseFeatures([]string{"layering", "exclusive-lock"})
	if err != nil || bits != 1|4 {
		t.Fatalf("bits = %d, %v", bits, err)
	}
	_, err = ParseFeatures([]string{"layering", "warp", "teleport"})
	if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "warp, teleport") || !strings.Contains(err.Error(), "known:") {
		t.Fatalf("err = %v", err)
	}
}
