module github.com/cephdocker/ceph-docker-plugin

go 1.26.8

require (
	github.com/ceph/go-ceph v0.41.0 // indirect
	github.com/docker/go-plugins-helpers v0.0.0-20240701071450-45e2431495c8 // indirect
	github.com/gophercloud/gophercloud/v2 v2.15.0 // indirect
	github.com/moby/sys/mountinfo v0.7.3 // indirect
	github.com/sirupsen/logrus v1.10.2 // indirect
	golang.org/x/sys v0.49.0 // indirect
	gopkg.in/ini.v1 v1.67.3 // indirect
)
