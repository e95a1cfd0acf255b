package rbd

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// OpError is an rbd operation that failed.
type OpError struct {
	Op   string // e.g. "create"
	What string // pool/image[@snap], or pool for pool-wide calls
	Kind error  // one of driver's sentinels, or nil when none fits
	Err  error  // the cause
}

func (e *OpError) Error() string {
	switch {
	case e.Kind == nil:
		return fmt.Sprintf("rbd %s %s: %v", e.Op, e.What, e.Err)
	case errors.Is(e.Err, e.Kind):
		return fmt.Sprintf("rbd %s %s: %v", e.Op, e.What, e.Err)
	default:
		return fmt.Sprintf("rbd %s %s: %v: %v", e.Op, e.What, e.Kind, e.Err)
	}
}

// Unwrap lets errors.Is match both the sentinel and the cause.
func (e *OpError) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}

type errorCoder interface{ ErrorCode() int }

// kindOf maps a librados/librbd error (negative errno) to a driver sentinel.
func kindOf(err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return driver.ErrTimeout
	}
	var ec errorCoder
	if !errors.As(err, &ec) {
		return nil
	}
	switch syscall.Errno(-ec.ErrorCode()) {
	case syscall.ENOENT:
		return driver.ErrNotFound
	case syscall.EEXIST:
		return driver.ErrExists
	case syscall.EBUSY, syscall.ENOTEMPTY:
		return driver.ErrInUse
	case syscall.ETIMEDOUT:
		return driver.ErrTimeout
	case syscall.EACCES, syscall.EPERM:
		return driver.ErrPermission
	case syscall.EINVAL, syscall.EDOM, syscall.ERANGE, syscall.ENAMETOOLONG:
		return driver.ErrInvalid
	case syscall.ESHUTDOWN: // this client was blocklisted
		return driver.ErrPermission
	case syscall.ENOSPC, syscall.EDQUOT: // a full cluster, a pool quota
		return driver.ErrNoSpace
	}
	return nil
}

func opErr(op, what string, err error) error {
	if err == nil {
		return nil
	}
	var oe *OpError
	if errors.As(err, &oe) {
		return err
	}
	return &OpError{Op: op, What: what, Kind: kindOf(err), Err: err}
}
