package ps

import (
	"fmt"
	"maps"
	"math/bits"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"

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
// your choice; the ps package starts none.
func (s *Server) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		st := s.Stats()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		l := fmt.Sprintf(`shard="%d"`, st.Shard)
		counter := func(name, help string, v uint64) {
			fmt.Fprintf(w, "# HELP gotflow_ps_%s %s\n# TYPE gotflow_ps_%s counter\ngotflow_ps_%s{%s} %d\n", name, help, name, name, l, v)
		}
		gauge := func(name, help string, v uint64) {
			fmt.Fprintf(w, "# HELP gotflow_ps_%s %s\n# TYPE gotflow_ps_%s gauge\ngotflow_ps_%s{%s} %d\n", name, help, name, name, l, v)
		}
		gauge("version", "Gradient updates applied.", st.Version)
		gauge("step", "Sync steps completed.", st.Step)
		gauge("parts", "Variable parts held.", uint64(st.Parts))
		counter("pushes_total", "Push requests decoded.", st.Pushes)
		counter("updates_total", "Gradient updates applied.", st.Updates)
		counter("assigns_total", "Assignments applied.", st.Assigns)
		counter("duplicate_pushes_total", "Retried pushes answered without applying.", st.Duplicates)
		counter("pulls_total", "Pulls served.", st.Pulls)
		counter("bytes_in_total", "Tensor payload bytes received.", st.BytesIn)
		counter("bytes_out_total", "Tensor payload bytes sent.", st.BytesOut)
		counter("snapshots_total", "Snapshots written.", st.Snapshots)
		counter("dropped_stragglers_total", "Sync pushes missing when a step was applied without them.", st.DroppedStragglers)
		fmt.Fprintf(w, "# HELP gotflow_ps_rejections_total Requests rejected, by reason.\n# TYPE gotflow_ps_rejections_total counter\n")
		reasons := make([]string, 0, len(st.Rejections))
		for r := range st.Rejections {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			fmt.Fprintf(w, "gotflow_ps_rejections_total{%s,reason=%q} %d\n", l, r, st.Rejections[r])
		}
		fmt.Fprintf(w, "# HELP gotflow_ps_staleness Staleness of applied pushes in versions.\n# TYPE gotflow_ps_staleness histogram\n")
		var cum uint64
		for i, c := range st.Staleness {
			cum += c
			if i == len(st.Staleness)-1 {
				break
			}
			le := uint64(0)
			if i > 0 {
				le = 1<<i - 1
			}
			fmt.Fprintf(w, "gotflow_ps_staleness_bucket{%s,le=\"%d\"} %d\n", l, le, cum)
		}
		fmt.Fprintf(w, "gotflow_ps_staleness_bucket{%s,le=\"+Inf\"} %d\ngotflow_ps_staleness_count{%s} %d\n", l, cum, l, cum)
	})
}
