// Package metrics exposes what the plugin does as Prometheus metrics: the calls Docker makes, by
// operation and outcome, with their latency; the volumes this host has mounted and the repairs
// pending, read from the persisted state at each scrape; whether the backend answers; and every
// fencing of a dead holder. The plugin serves it on METRICS_ADDR (off by default).
package metrics

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// States lists this host's persisted volume states (driver.StateStore's All).
type States interface {
	All() ([]driver.State, error)
}

// Recorder implements driver.Observer and serves the metrics.
type Recorder struct {
	reg      *prometheus.Registry
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	fenced   prometheus.Counter
	takeover prometheus.Counter
	backend  prometheus.Gauge
}

var _ driver.Observer = (*Recorder)(nil)

// Buckets of the call latency, in seconds: from a Get answered from memory (well under 10 ms) to
// a Mount that waits out a dead holder's watch (35 s) and the deadline of a call (CALL_TIMEOUT,
// 50 s by default).
var Buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60}

// New returns a recorder whose volume gauges read states at each scrape. backend labels the
// metrics with the backend's name ("rbd" or "cinder").
func New(states States, backend string) *Recorder {
	reg := prometheus.NewRegistry()
	labels := prometheus.Labels{"backend": backend}
	r := &Recorder{
		reg: reg,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cdp_calls_total", Help: "Docker's calls to the plugin, by operation and outcome.", ConstLabels: labels,
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cdp_call_duration_seconds", Help: "How long the plugin took to answer Docker's calls, by operation.",
			ConstLabels: labels, Buckets: Buckets,
		}, []string{"op"}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdp_fenced_clients_total", Help: "Ceph clients of dead holders fenced (blocklisted) to take their volumes over.", ConstLabels: labels,
		}),
		takeover: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cdp_takeovers_total", Help: "Volumes taken over from a dead holder (LOCK_BREAK=on).", ConstLabels: labels,
		}),
		backend: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cdp_backend_reachable", ConstLabels: labels,
			Help: "1 when the backend (Ceph, or Keystone + Cinder) answered the last request made of it, 0 when it did not answer in time, -1 before any request.",
		}),
	}
	r.backend.Set(-1)
	reg.MustRegister(r.calls, r.duration, r.fenced, r.takeover, r.backend,
		&stateCollector{states: states, labels: labels},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Outcome names an error by the sentinel it wraps: "ok", "not_found", "exists", "in_use",
// "busy_elsewhere", "invalid", "permission", "timeout", or "error" for any other failure.
func Outcome(err error) string {
	if err == nil {
		return "ok"
	}
	for _, o := range []struct {
		err  error
		name string
	}{
		{driver.ErrNotFound, "not_found"}, {driver.ErrExists, "exists"}, {driver.ErrInUse, "in_use"},
		{driver.ErrBusyElsewhere, "busy_elsewhere"}, {driver.ErrInvalid, "invalid"},
		{driver.ErrPermission, "permission"}, {driver.ErrTimeout, "timeout"},
	} {
		if errors.Is(err, o.err) {
			return o.name
		}
	}
	return "error"
}

// Call implements driver.Observer.
func (r *Recorder) Call(op string, err error, took time.Duration) {
	r.calls.WithLabelValues(op, Outcome(err)).Inc()
	r.duration.WithLabelValues(op).Observe(took.Seconds())
}

// Backend implements driver.Observer.
func (r *Recorder) Backend(answered bool) {
	if answered {
		r.backend.Set(1)
	} else {
		r.backend.Set(0)
	}
}

// Fenced implements driver.Observer.
func (r *Recorder) Fenced(_ string, clients int) {
	r.takeover.Inc()
	r.fenced.Add(float64(clients))
}

// Handler serves the metrics in Prometheus' exposition format.
func (r *Recorder) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// stateCollector reads this host's volume states at each scrape.
type stateCollector struct {
	states                          States
	labels                          prometheus.Labels
	once                            sync.Once
	mounted, uses, pending, readErr *prometheus.Desc
}

func (c *stateCollector) descs() {
	c.once.Do(func() {
		c.mounted = prometheus.NewDesc("cdp_volumes_mounted", "Volumes mapped and mounted on this host.", nil, c.labels)
		c.uses = prometheus.NewDesc("cdp_volume_uses", "Uses of this host's volumes by Docker's mount IDs (a container's mount point, and each nested use such as docker cp).", nil, c.labels)
		c.pending = prometheus.NewDesc("cdp_repairs_pending", "Volumes with an interrupted operation the plugin still has to finish (retried in the background).", nil, c.labels)
		c.readErr = prometheus.NewDesc("cdp_state_read_errors", "State records that could not be read at this scrape.", nil, c.labels)
	})
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	c.descs()
	ch <- c.mounted
	ch <- c.uses
	ch <- c.pending
	ch <- c.readErr
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.descs()
	states, err := c.states.All()
	mounted, uses, pending := 0, 0, 0
	for _, st := range states {
		if st.Op != "" {
			pending++
		}
		if n := st.TotalUses(); n > 0 {
			mounted++
			uses += n
		}
	}
	bad := 0
	if err != nil {
		bad = 1
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			bad = len(joined.Unwrap())
		}
	}
	ch <- prometheus.MustNewConstMetric(c.mounted, prometheus.GaugeValue, float64(mounted))
	ch <- prometheus.MustNewConstMetric(c.uses, prometheus.GaugeValue, float64(uses))
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(c.readErr, prometheus.GaugeValue, float64(bad))
}
