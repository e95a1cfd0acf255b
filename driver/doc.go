// Package driver implements Docker's volume plugin protocol (docker.volumedriver/1.0) on top of
// small interfaces that it declares and the backends implement: Provisioner (rbd, cinder),
// Mapper (krbd, fuse), Mounter and StateStore. It imports no backend.
package driver
