// Package rbd is the direct-RBD backend: Ceph access through go-ceph (librados/librbd) with a
// deadline on every call, and the errors of librbd translated once into driver's sentinels.
//
// Every exported operation takes a context. librados itself is told to give up after OpTimeout
// (rados_osd_op_timeout, rados_mon_op_timeout, client_mount_timeout), and each call runs in its own
// goroutine so that the caller gets its answer when ctx ends even if librados is still waiting:
// such an abandoned call is bounded by OpTimeout, and if it later succeeds, what it created is
// undone (a Create that the caller was told failed does not leave an image behind).
//
// Errors are *OpError values that name the operation and the image and match, with errors.Is, both
// one of driver's sentinels (ErrNotFound, ErrExists, ErrInUse, ErrBusyElsewhere, ErrInvalid,
// ErrPermission, ErrTimeout) and the underlying librados/librbd error.
//
// The Provisioner (the direct-RBD driver.Provisioner) reaches the cluster through ceph, the
// small interface it declares (a fake in unit tests). Its Attach gathers what Ceph reports about
// an image, decides what to do with decideAttach, a pure function of those facts, and acts. The
// plugin connects once, through a Connector, on first use and again after a failure; Lazy (the
// provisioner) and Guard (Cinder mode's view of Ceph) share it.
//
// Build with -tags pacific against Debian bookworm's librbd (16.2).
package rbd
