package driver

import "errors"

// Sentinel errors shared by the backends (rbd, cinder) and the mappers. Backends translate their
// native errors into these once, at their edge, and wrap them with %w so that the message keeps the
// cause while callers can test with errors.Is.
var (
	// ErrNotFound: the volume, image, snapshot or mapping does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a volume or image of that name already exists.
	ErrExists = errors.New("already exists")
	// ErrInUse: the volume is in use on this host (mounted, open, has snapshots or children).
	ErrInUse = errors.New("in use")
	// ErrBusyElsewhere: another client or host holds the volume (watcher, lock owner, attachment).
	ErrBusyElsewhere = errors.New("held by another client")
	// ErrInvalid: a bad name, option or argument.
	ErrInvalid = errors.New("invalid argument")
	// ErrPermission: the backend refused the credentials or their capabilities.
	ErrPermission = errors.New("permission denied")
	// ErrTimeout: the backend did not answer within the call's deadline.
	ErrTimeout = errors.New("timed out")
	// ErrNoSpace: the backend is out of space or over a quota (a full pool, a Cinder quota).
	ErrNoSpace = errors.New("out of space or over quota")
)
