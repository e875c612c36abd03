package serving

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gotflow/gotflow/tf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	batch    *prometheus.HistogramVec
	queue    *prometheus.GaugeVec
	versions *prometheus.GaugeVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gotflow_serving_requests_total",
			Help: "Inference requests, by model, version, front end and gRPC status code.",
		}, []string{"model", "version", "api", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gotflow_serving_request_duration_seconds",
			Help:    "Time from a request reaching the server core to its response, by model, version and front end.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18), // 50 µs .. 6.5 s
		}, []string{"model", "version", "api"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gotflow_serving_batch_size",
			Help:    "Rows in each batch the batcher ran (padding included), by model and version.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}, []string{"model", "version"}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gotflow_serving_queue_depth",
			Help: "Batches waiting in the batcher's queues, by model and version.",
		}, []string{"model", "version"}),
		versions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gotflow_serving_model_versions_available",
			Help: "Versions of each model that serve.",
		}, []string{"model"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.batch, m.queue, m.versions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// TensorFlow objects in the process: live ones should follow the
	// versions loaded; leaked ones (collected without Close, their C memory
	// never freed) should stay at zero.
	for _, c := range []struct {
		name, help string
		get        func() tf.Objects
	}{
		{"gotflow_tf_live_objects", "TensorFlow objects created and not yet closed, by kind.", tf.Live},
		{"gotflow_tf_leaked_objects", "TensorFlow objects the garbage collector found unreachable before their Close (their C memory is never freed), by kind.", tf.Leaked},
	} {
		for _, kind := range []string{"tensor", "graph", "session"} {
			get := c.get
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: c.name, Help: c.help, ConstLabels: prometheus.Labels{"kind": kind},
			}, func() float64 {
				o := get()
				switch kind {
				case "tensor":
					return float64(o.Tensors)
				case "graph":
					return float64(o.Graphs)
				}
				return float64(o.Sessions)
			}))
		}
	}
	for _, name := range s.names {
		m.versions.WithLabelValues(name).Set(0)
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func (m *metrics) request(model string, resp *Response, api string, err error, d time.Duration) {
	v := ""
	if resp != nil {
		v = strconv.FormatInt(resp.Version, 10)
	}
	m.requests.WithLabelValues(model, v, api, Code(err).String()).Inc()
	if err == nil {
		m.latency.WithLabelValues(model, v, api).Observe(d.Seconds())
	}
}

func (m *metrics) setVersions(md *model) {
	md.mu.Lock()
	n := len(md.available())
	md.mu.Unlock()
	m.versions.WithLabelValues(md.cfg.Name).Set(float64(n))
}

// forget drops an unloaded version's series.
func (m *metrics) forget(model string, version int64) {
	l := prometheus.Labels{"model": model, "version": strconv.FormatInt(version, 10)}
	m.requests.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
	m.batch.DeletePartialMatch(l)
	m.queue.DeletePartialMatch(l)
}

// Registry is the server's Prometheus registry (served at /metrics on the
// HTTP port), for callers that add their own collectors.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }
