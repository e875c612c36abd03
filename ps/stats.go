package ps

import (
	"maps"
	"math/bits"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gotflow/gotflow/ps/pspb"
)

// stalenessBuckets is the number of staleness histogram buckets: bucket 0
// counts staleness 0, bucket i>0 staleness in [2^(i-1), 2^i), the last one
// everything above.
const stalenessBuckets = 12

type serverStats struct {
	pushes, updates, assigns, duplicates, pulls atomic.Uint64
	bytesIn, bytesOut, snapshots                atomic.Uint64
	droppedStragglers                           atomic.Uint64
	staleness                                   []atomic.Uint64
	stalenessSum                                atomic.Uint64
	rejMu                                       sync.Mutex
	rejections                                  map[string]uint64
}

func (st *serverStats) reject(reason string) {
	st.rejMu.Lock()
	if st.rejections == nil {
		st.rejections = map[string]uint64{}
	}
	st.rejections[reason]++
	st.rejMu.Unlock()
}

func (st *serverStats) observeStaleness(s uint64) {
	b := bits.Len64(s)
	if b >= stalenessBuckets {
		b = stalenessBuckets - 1
	}
	st.staleness[b].Add(1)
	st.stalenessSum.Add(s)
}

// Stats are the counters of one shard.
type Stats struct {
	Shard, NumShards  int
	Mode              string
	Version           uint64 // gradient updates applied
	Step              uint64 // Sync steps completed
	Parts             int
	Pushes            uint64 // push requests received and decoded
	Updates           uint64 // gradient updates applied (Sync: steps)
	Assigns           uint64
	Duplicates        uint64 // retried pushes answered without applying
	Pulls             uint64
	Rejections        map[string]uint64 // by reason: wrong_shape, non_finite, stale, ...
	Staleness         []uint64          // histogram: 0, 1, 2-3, 4-7, ...
	BytesIn, BytesOut uint64            // tensor payload bytes
	Snapshots         uint64
	DroppedStragglers uint64
	// Positions are the workers' last applied input positions, by worker
	// ID (Client.Push with AtPosition).
	Positions map[string][]byte
}

func (s *Server) statsProto() *pspb.StatsResponse {
	st := &s.stats
	r := &pspb.StatsResponse{
		Info:              s.info(),
		Pushes:            st.pushes.Load(),
		Updates:           st.updates.Load(),
		Assigns:           st.assigns.Load(),
		Duplicates:        st.duplicates.Load(),
		Pulls:             st.pulls.Load(),
		BytesIn:           st.bytesIn.Load(),
		BytesOut:          st.bytesOut.Load(),
		Snapshots:         st.snapshots.Load(),
		DroppedStragglers: st.droppedStragglers.Load(),
		Rejections:        map[string]uint64{},
		Positions:         s.positionsCopy(),
	}
	s.mu.RLock()
	r.Info.Parts = uint32(len(s.order))
	s.mu.RUnlock()
	for i := range st.staleness {
		r.StalenessBuckets = append(r.StalenessBuckets, st.staleness[i].Load())
	}
	st.rejMu.Lock()
	for k, v := range st.rejections {
		r.Rejections[k] = v
	}
	st.rejMu.Unlock()
	return r
}

func statsFromProto(r *pspb.StatsResponse) Stats {
	rej := map[string]uint64{}
	for k, v := range r.GetRejections() {
		rej[k] = v
	}
	return Stats{
		Shard: int(r.GetInfo().GetShard()), NumShards: int(r.GetInfo().GetNumShards()), Mode: r.GetInfo().GetMode(),
		Version: r.GetInfo().GetVersion(), Step: r.GetInfo().GetStep(), Parts: int(r.GetInfo().GetParts()),
		Pushes: r.GetPushes(), Updates: r.GetUpdates(), Assigns: r.GetAssigns(), Duplicates: r.GetDuplicates(),
		Pulls: r.GetPulls(), Rejections: rej, Staleness: append([]uint64(nil), r.GetStalenessBuckets()...),
		BytesIn: r.GetBytesIn(), BytesOut: r.GetBytesOut(), Snapshots: r.GetSnapshots(), DroppedStragglers: r.GetDroppedStragglers(),
		Positions: maps.Clone(r.GetPositions()),
	}
}

// Stats returns the shard's counters.
func (s *Server) Stats() Stats { return statsFromProto(s.statsProto()) }

// MetricsHandler serves the shard's counters in the Prometheus text format
// (gotflow_ps_* metrics with a shard label). Mount it on an HTTP server of
// your choice; the ps package starts none. To add them to a registry of
// your own, register Collector instead.
func (s *Server) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector())
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Collector returns a Prometheus collector of the shard's counters, read
// when scraped.
func (s *Server) Collector() prometheus.Collector { return &statsCollector{s: s} }

type statsCollector struct{ s *Server }

type metricDesc struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	get  func(st *Stats) uint64
}

var (
	psMetrics = []metricDesc{
		{psDesc("version", "Gradient updates applied."), prometheus.GaugeValue, func(st *Stats) uint64 { return st.Version }},
		{psDesc("step", "Sync steps completed."), prometheus.GaugeValue, func(st *Stats) uint64 { return st.Step }},
		{psDesc("parts", "Variable parts held."), prometheus.GaugeValue, func(st *Stats) uint64 { return uint64(st.Parts) }},
		{psDesc("pushes_total", "Push requests decoded."), prometheus.CounterValue, func(st *Stats) uint64 { return st.Pushes }},
		{psDesc("updates_total", "Gradient updates applied."), prometheus.CounterValue, func(st *Stats) uint64 { return st.Updates }},
		{psDesc("assigns_total", "Assignments applied."), prometheus.CounterValue, func(st *Stats) uint64 { return st.Assigns }},
		{psDesc("duplicate_pushes_total", "Retried pushes answered without applying."), prometheus.CounterValue, func(st *Stats) uint64 { return st.Duplicates }},
		{psDesc("pulls_total", "Pulls served."), prometheus.CounterValue, func(st *Stats) uint64 { return st.Pulls }},
		{psDesc("bytes_in_total", "Tensor payload bytes received."), prometheus.CounterValue, func(st *Stats) uint64 { return st.BytesIn }},
		{psDesc("bytes_out_total", "Tensor payload bytes sent."), prometheus.CounterValue, func(st *Stats) uint64 { return st.BytesOut }},
		{psDesc("snapshots_total", "Snapshots written."), prometheus.CounterValue, func(st *Stats) uint64 { return st.Snapshots }},
		{psDesc("dropped_stragglers_total", "Sync pushes missing when a step was applied without them."), prometheus.CounterValue, func(st *Stats) uint64 { return st.DroppedStragglers }},
	}
	rejectionsDesc = prometheus.NewDesc("gotflow_ps_rejections_total", "Requests rejected, by reason.", []string{"shard", "reason"}, nil)
	stalenessDesc  = prometheus.NewDesc("gotflow_ps_staleness", "Staleness of applied pushes in versions.", []string{"shard"}, nil)
)

func psDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("gotflow_ps_"+name, help, []string{"shard"}, nil)
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range psMetrics {
		ch <- m.desc
	}
	ch <- rejectionsDesc
	ch <- stalenessDesc
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	shard := strconv.Itoa(st.Shard)
	for _, m := range psMetrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, float64(m.get(&st)), shard)
	}
	for reason, n := range st.Rejections {
		ch <- prometheus.MustNewConstMetric(rejectionsDesc, prometheus.CounterValue, float64(n), shard, reason)
	}
	// Bucket i > 0 counts staleness in [2^(i-1), 2^i): its upper bound is
	// 2^i - 1; the last bucket is +Inf.
	buckets := map[float64]uint64{}
	var cum uint64
	for i, n := range st.Staleness {
		cum += n
		if i < len(st.Staleness)-1 {
			buckets[float64(uint64(1)<<i-1)] = cum
		}
	}
	ch <- prometheus.MustNewConstHistogram(stalenessDesc, cum, float64(c.s.stats.stalenessSum.Load()), buckets, shard)
}
