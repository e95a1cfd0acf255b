package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/cephdocker/ceph-docker-plugin/driver/metrics"
)

// serveMetrics serves the recorder's metrics at http://addr/metrics until the returned stop is
// called. A port that cannot be opened stops the start-up: an operator who asked for metrics
// would otherwise scrape nothing without knowing why.
func serveMetrics(addr string, rec *metrics.Recorder, log *logrus.Entry) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("METRICS_ADDR=%s: %w: choose another address or port", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", rec.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).Error("metrics endpoint stopped")
		}
	}()
	fields := logrus.Fields{"addr": ln.Addr().String()}
	if host, _, _ := net.SplitHostPort(addr); host == "" || !net.ParseIP(host).IsLoopback() {
		log.WithFields(fields).Warn("metrics served beyond loopback: they name volumes and hosts; restrict access to the port")
	}
	log.WithFields(fields).Info("serving metrics at /metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
