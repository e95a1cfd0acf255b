package main

import (
	"net"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/csi"
	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// version is the plugin's version as CSI's GetPluginInfo reports it (set with -ldflags -X).
var version = "dev"

// listenFor opens the socket of the configured protocol: PLUGIN_SOCKET for Docker's volume
// protocol, CSI_ENDPOINT for CSI.
func listenFor(cfg Config) (net.Listener, error) {
	if cfg.Protocol == "csi" {
		ln, _, err := csi.Listen(cfg.CSIEndpoint)
		return ln, err
	}
	return listen(cfg.Socket)
}

// serveCSI serves the CSI identity, controller and node services on ln (PROTOCOL=csi): one
// process is both, as Docker's managed CSI plugins are (docker.csicontroller/1.0 on managers,
// docker.csinode/1.0 on every node, one socket).
func serveCSI(cfg Config, d *driver.Driver, node *driver.Node, capacity csi.Capacity, ln net.Listener, log *logrus.Entry, obs csi.CallObserver) error {
	srv := &csi.Server{Core: d, Node: node, Capacity: capacity, Version: version, Timeout: cfg.CallTimeout, Log: log.WithField("protocol", "csi"), Observer: obs}
	log.WithFields(logrus.Fields{"endpoint": cfg.CSIEndpoint, "pool": cfg.Pool, "node_id": node.NodeID()}).Info("serving CSI")
	return srv.Serve(ln)
}
