package serving

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gotflow/gotflow/savedmodel"
	"github.com/gotflow/gotflow/tf"
)

// Version states, TF Serving's names.
const (
	StateStart     = "START"
	StateLoading   = "LOADING"
	StateAvailable = "AVAILABLE"
	StateUnloading = "UNLOADING"
	StateEnd       = "END"
)

// model is one configured model and its versions.
type model struct {
	cfg ModelConfig

	mu       sync.Mutex
	versions map[int64]*version // every version seen, for status
	failed   map[int64]string   // version -> the directory stamp that failed to load
}

// version is one loaded (or loading, or gone) version of a model.
type version struct {
	model string
	n     int64
	dir   string

	// Set once loaded, read-only after.
	sm   *savedmodel.Model
	meta *Metadata
	sigs map[string]*savedmodel.Signature

	// Guarded by model.mu.
	state    string
	err      error
	inflight int
	drained  chan struct{} // closed once UNLOADING and no request holds it

	bmu      sync.Mutex
	batchers map[string]*batcher

	qmu      sync.Mutex
	queuedBy map[*batcher]int // batches waiting, per batcher
	metrics  *metrics
}

// setQueued records a batcher's queue length and sets the version's queue
// depth gauge to the sum over its batchers.
func (v *version) setQueued(b *batcher, n int) {
	v.qmu.Lock()
	defer v.qmu.Unlock()
	if v.queuedBy == nil {
		v.queuedBy = map[*batcher]int{}
	}
	v.queuedBy[b] = n
	total := 0
	for _, q := range v.queuedBy {
		total += q
	}
	if v.metrics != nil {
		v.metrics.queue.WithLabelValues(v.model, strconv.FormatInt(v.n, 10)).Set(float64(total))
	}
}

func newModel(cfg ModelConfig) *model {
	return &model{cfg: cfg, versions: map[int64]*version{}, failed: map[int64]string{}}
}

// available returns the versions that serve, newest first. m.mu is held.
func (m *model) available() []*version {
	var out []*version
	for _, v := range m.versions {
		if v.state == StateAvailable {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n > out[j].n })
	return out
}

// acquire picks the version a request names and holds it until release.
func (m *model) acquire(n int64, label string) (*version, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var v *version
	switch {
	case label != "":
		want, ok := m.cfg.Labels[label]
		if !ok {
			return nil, InvalidArgument("Unrecognized servable version label: %s", label)
		}
		if v = m.versions[want]; v == nil || v.state != StateAvailable {
			return nil, NotFound("Servable not found for request: Specific(%s, %d) (label %q)", m.cfg.Name, want, label)
		}
	case n > 0:
		if v = m.versions[n]; v == nil || v.state != StateAvailable {
			return nil, NotFound("Servable not found for request: Specific(%s, %d)", m.cfg.Name, n)
		}
	case n < 0:
		return nil, InvalidArgument("version %d: versions are positive", n)
	default:
		av := m.available()
		if len(av) == 0 {
			return nil, NotFound("Servable not found for request: Latest(%s)", m.cfg.Name)
		}
		v = av[0]
	}
	v.inflight++
	return v, nil
}

func (m *model) release(v *version) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v.inflight--
	if v.inflight == 0 && v.state == StateUnloading && v.drained != nil {
		close(v.drained)
		v.drained = nil
	}
}

// status returns the versions' states (one version, or all with n == 0).
func (m *model) status(n int64, label string) ([]VersionStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if label != "" {
		want, ok := m.cfg.Labels[label]
		if !ok {
			return nil, InvalidArgument("Unrecognized servable version label: %s", label)
		}
		n = want
	}
	var out []VersionStatus
	for _, v := range m.versions {
		if n == 0 || v.n == n {
			out = append(out, VersionStatus{Version: v.n, State: v.state, Err: v.err})
		}
	}
	if len(out) == 0 {
		if n != 0 {
			return nil, NotFound("Could not find version %d of model %s", n, m.cfg.Name)
		}
		return nil, NotFound("Could not find any versions of model %s", m.cfg.Name)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version > out[j].Version })
	return out, nil
}

// scan lists the numbered version directories under the base path.
func scanVersions(base string) (map[int64]string, error) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	out := map[int64]string{}
	for _, e := range ents {
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || n <= 0 || !e.IsDir() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		out[n] = filepath.Join(base, e.Name())
	}
	return out, nil
}

// desired is the versions the policy serves out of those on disk.
func (p VersionPolicy) desired(onDisk map[int64]string) []int64 {
	var all []int64
	for n := range onDisk {
		all = append(all, n)
	}
	slices.Sort(all)
	switch {
	case p.All:
		return all
	case len(p.Specific) > 0:
		var out []int64
		for _, n := range all {
			if slices.Contains(p.Specific, n) {
				out = append(out, n)
			}
		}
		return out
	}
	k := max(p.Latest, 1)
	if len(all) > k {
		all = all[len(all)-k:]
	}
	return all
}

// dirStamp summarises a version directory's files (names, sizes, times),
// so that a version that failed to load is tried again once it changes
// (a copy that was still in progress, say).
func dirStamp(dir string) string {
	h := fnv.New64a()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if info, err := d.Info(); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", p, info.Size(), info.ModTime().UnixNano())
		}
		return nil
	})
	return strconv.FormatUint(h.Sum64(), 16)
}

// sync brings the model's versions in line with its base path and policy:
// new desired versions are loaded; once one of the desired versions
// serves, the versions no longer desired stop taking requests, drain and
// are closed. A version that fails to load is logged and recorded, and
// the versions serving before stay up.
func (s *Server) syncModel(ctx context.Context, m *model) {
	onDisk, err := scanVersions(m.cfg.BasePath)
	if err != nil {
		s.logModelOnce(m, "cannot read base path", err)
		return
	}
	want := m.cfg.Policy.desired(onDisk)
	for _, n := range want {
		m.mu.Lock()
		v := m.versions[n]
		busy := v != nil && (v.state == StateAvailable || v.state == StateLoading || v.state == StateUnloading)
		failedStamp, failed := m.failed[n]
		m.mu.Unlock()
		if busy {
			continue
		}
		stamp := dirStamp(onDisk[n])
		if failed && failedStamp == stamp {
			continue
		}
		if err := s.load(ctx, m, n, onDisk[n]); err != nil {
			if ctx.Err() != nil {
				// Cut short, not broken: the next scan tries again.
				m.mu.Lock()
				delete(m.versions, n)
				m.mu.Unlock()
				return
			}
			m.mu.Lock()
			m.failed[n] = stamp
			m.mu.Unlock()
			s.log.Error("version failed to load; the versions serving before stay up", "model", m.cfg.Name, "version", n, "dir", onDisk[n], "err", err)
		}
	}
	m.mu.Lock()
	anyWanted := false
	for _, n := range want {
		if v := m.versions[n]; v != nil && v.state == StateAvailable {
			anyWanted = true
		}
	}
	var retire []*version
	if anyWanted {
		for _, v := range m.versions {
			if v.state == StateAvailable && !slices.Contains(want, v.n) {
				v.retireLocked()
				retire = append(retire, v)
			}
		}
	}
	m.mu.Unlock()
	for _, v := range retire {
		s.log.Info("unloading version", "model", m.cfg.Name, "version", v.n)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.unload(m, v)
		}()
	}
	s.metrics.setVersions(m)
}

// retireLocked stops the version taking requests: it is UNLOADING, and
// drained is closed once the requests holding it have returned. The
// model's mu is held.
func (v *version) retireLocked() {
	v.state = StateUnloading
	v.drained = make(chan struct{})
	if v.inflight == 0 {
		close(v.drained)
		v.drained = nil
	}
}

// unload waits for the version's requests to finish, then frees it.
func (s *Server) unload(m *model, v *version) error {
	m.mu.Lock()
	ch := v.drained
	m.mu.Unlock()
	if ch != nil {
		<-ch
	}
	v.stopBatchers()
	err := v.sm.Close()
	m.mu.Lock()
	v.state = StateEnd
	v.sm = nil
	m.mu.Unlock()
	s.metrics.forget(m.cfg.Name, v.n)
	if err != nil {
		s.log.Warn("closing version", "model", m.cfg.Name, "version", v.n, "err", err)
		return fmt.Errorf("serving: close model %s version %d: %w", m.cfg.Name, v.n, err)
	}
	s.log.Info("version unloaded", "model", m.cfg.Name, "version", v.n)
	return nil
}

// load loads one version and makes it available.
func (s *Server) load(ctx context.Context, m *model, n int64, dir string) error {
	v := &version{model: m.cfg.Name, n: n, dir: dir, state: StateLoading, batchers: map[string]*batcher{}, metrics: s.metrics}
	m.mu.Lock()
	m.versions[n] = v
	m.mu.Unlock()
	start := time.Now()
	err := s.open(ctx, v)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		v.state, v.err = StateEnd, err
		return err
	}
	v.state = StateAvailable
	delete(m.failed, n)
	s.log.Info("version available", "model", m.cfg.Name, "version", n, "dir", dir, "load_seconds", time.Since(start).Seconds())
	return nil
}

// open loads the SavedModel and reads its signatures.
func (s *Server) open(ctx context.Context, v *version) error {
	opts := []savedmodel.Option{savedmodel.WithRawTensorNames(), savedmodel.WithTags(s.cfg.Tags...)}
	var so []tf.SessionOption
	if s.cfg.IntraOpThreads > 0 {
		so = append(so, tf.WithIntraOpThreads(s.cfg.IntraOpThreads))
	}
	if s.cfg.InterOpThreads > 0 {
		so = append(so, tf.WithInterOpThreads(s.cfg.InterOpThreads))
	}
	if len(so) > 0 {
		opts = append(opts, savedmodel.WithSessionOptions(so...))
	}
	sm, err := savedmodel.Load(ctx, v.dir, opts...)
	if err != nil {
		return err
	}
	mg := sm.MetaGraph()
	if mg == nil {
		sm.Close()
		return errors.New("serving: not a SavedModel")
	}
	v.sm = sm
	v.sigs = map[string]*savedmodel.Signature{}
	v.meta = &Metadata{Model: v.model, Version: v.n, SignatureDefs: mg.Def().GetSignatureDef(), Signatures: map[string]Signature{}}
	for _, key := range mg.SignatureKeys() {
		sig, err := mg.Signature(key)
		if err != nil {
			continue
		}
		ms := Signature{Key: key, Method: sig.MethodName}
		dense := true
		for _, list := range []struct {
			from []savedmodel.SignatureTensor
			to   *[]TensorInfo
		}{{sig.Inputs, &ms.Inputs}, {sig.Outputs, &ms.Outputs}} {
			for _, t := range list.from {
				if t.Name == "" || t.Name[0] == '<' {
					dense = false
				}
				*list.to = append(*list.to, TensorInfo{Name: t.Alias, DType: t.DType, Shape: slices.Clone(t.Shape)})
			}
		}
		ms.Servable = dense
		v.meta.Signatures[key] = ms
		if dense {
			v.sigs[key] = sig
		}
	}
	return nil
}

func (v *version) stopBatchers() {
	v.bmu.Lock()
	bs := v.batchers
	v.batchers = nil // no new batchers: requests still arriving run alone
	v.bmu.Unlock()
	for _, b := range bs {
		b.stop()
	}
}
