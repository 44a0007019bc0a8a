// Package agent is the daemon's core: it turns a validated configuration
// and the health verdicts into the desired IPVS table, plans the difference
// with the kernel's table and applies it, then keeps it true (resync, reload,
// health changes) until it is told to stop.
package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
	"github.com/ipvs-agent/ipvs-agent/health"
)

// HealthChecker runs the health checks; *health.Scheduler is the real one.
type HealthChecker interface {
	Set(checks []health.Check)
	Run(ctx context.Context) error
}

// Notifier tells the service manager about the daemon's state
// ("READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1", "STATUS=...").
type Notifier interface {
	Notify(state string)
	// WatchdogInterval is how often the manager wants WATCHDOG=1, or 0.
	WatchdogInterval() time.Duration
}

// Options wire an Agent to the world.
type Options struct {
	Logger *slog.Logger
	// Kernels are IPVS handles, each used by one goroutine only. The first
	// reads; all of them write, in parallel lanes of whole services, which
	// keeps the kernel busy during a large apply. At least one.
	Kernels []kernel.IPVS
	// Health runs the checks. Nil: New makes a health.Scheduler whose
	// verdicts feed this agent.
	Health HealthChecker
	// Notifier, optional.
	Notifier Notifier
	// Load reads and validates a configuration file (config.Load).
	Load func(path string) (*config.Config, error)
	// Now is the clock (tests).
	Now func() time.Time
}

// Agent is the running daemon. Its state is owned by the goroutine running
// Run; other goroutines only see it through View.
type Agent struct {
	log     *slog.Logger
	kernels []kernel.IPVS
	health  HealthChecker
	notify  Notifier
	load    func(string) (*config.Config, error)
	now     func() time.Time

	cfg       *config.Config
	owned     map[model.ServiceKey]bool
	observed  model.Table // the kernel's table as last read, kept current as ops apply
	statuses  map[string]health.Status
	drains    map[plan.DestRef]draining
	conflicts map[model.ServiceKey]bool // already reported for this configuration
	quorum    map[string]bool           // virtual servers below quorum, as last logged

	checkIDs map[string]health.Spec // the health checks currently configured

	pendingMu sync.Mutex
	pending   map[string]health.Status
	healthC   chan struct{}

	view atomic.Pointer[View]
}

// View is a read-only snapshot of the agent's state after a reconcile: the
// seam for a status socket and metrics.
type View struct {
	ConfigPath    string
	Desired       model.Table
	Statuses      map[string]health.Status
	Healthy       map[string]int  // virtual server name -> healthy real servers
	QuorumLost    map[string]bool // virtual servers below their quorum
	Conflicts     []model.ServiceKey
	LastReconcile time.Time
	LastResult    ReconcileResult
}

// ReconcileResult summarises one reconcile.
type ReconcileResult struct {
	Reason string
	Writes int
	Errors int
}

// New makes an agent for a validated configuration.
func New(cfg *config.Config, opts Options) (*Agent, error) {
	if len(opts.Kernels) == 0 {
		return nil, errors.New("agent: no kernel handle")
	}
	a := &Agent{
		log:       opts.Logger,
		kernels:   opts.Kernels,
		health:    opts.Health,
		notify:    opts.Notifier,
		load:      opts.Load,
		now:       opts.Now,
		cfg:       cfg,
		statuses:  map[string]health.Status{},
		drains:    map[plan.DestRef]draining{},
		conflicts: map[model.ServiceKey]bool{},
		quorum:    map[string]bool{},
		pending:   map[string]health.Status{},
		healthC:   make(chan struct{}, 1),
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.load == nil {
		a.load = config.Load
	}
	if a.health == nil {
		// MaxInFlight and Budget are fixed at start: a reload does not
		// resize the pool.
		a.health = health.NewScheduler(health.Options{Logger: a.log, OnChange: a.OnHealth,
			MaxInFlight: cfg.MaxChecksInFlight, Budget: float64(cfg.CheckBudget)})
	}
	a.setChecks() // verdicts are accepted for these from now on
	owned, err := loadOwned(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	a.owned = owned
	return a, nil
}

// OnHealth takes a health verdict; safe to call from any goroutine. The
// main loop applies pending verdicts together, so a burst of transitions
// costs one reconcile.
func (a *Agent) OnHealth(st health.Status) {
	a.pendingMu.Lock()
	a.pending[st.ID] = st
	a.pendingMu.Unlock()
	select {
	case a.healthC <- struct{}{}:
	default:
	}
}

// View returns the latest snapshot (nil before the first reconcile).
func (a *Agent) View() *View { return a.view.Load() }

// Run reconciles, signals readiness, then keeps the kernel true until ctx
// ends: every resync interval it re-reads the kernel and repairs drift, on a
// value from reload it reloads the configuration file, and on health
// changes it rewrites weights. On return the kernel state is left in place
// (traffic keeps flowing across restarts) unless cleanup_on_exit is set.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}) error {
	if err := a.reconcile("start", true); err != nil {
		return err
	}
	a.log.Info("ready", "virtual_servers", len(a.cfg.VirtualServers), "owned", len(a.owned))
	a.notifyf("READY=1")
	a.notifyStatus()

	hctx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	a.health.Set(a.checks()) // New recorded their IDs
	// Parsing and the first apply leave most of the heap's peak as
	// garbage (tens of MiB at 1,000 x 10): hand it back to the OS now
	// rather than carry it as RSS for the daemon's life.
	debug.FreeOSMemory()
	go func() {
		defer close(healthDone)
		if err := a.health.Run(hctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("health checks stopped", "err", err)
		}
	}()
	defer func() { stopHealth(); <-healthDone }()

	resync := time.NewTicker(a.cfg.ResyncInterval)
	defer resync.Stop()
	var watchdog <-chan time.Time
	if a.notify != nil {
		if iv := a.notify.WatchdogInterval(); iv > 0 {
			t := time.NewTicker(iv / 2)
			defer t.Stop()
			watchdog = t.C
		}
	}
	for {
		// Stop and reload first: Go's select picks among ready cases at
		// random, and at 10,000 checks verdict batches are ready almost
		// always, each costing a reconcile; a reload waited behind them
		// for tens of seconds.
		select {
		case <-ctx.Done():
			return a.shutdown()
		case <-reload:
			a.reload()
			resync.Reset(a.cfg.ResyncInterval)
			continue
		default:
		}
		select {
		case <-ctx.Done():
			return a.shutdown()
		case <-reload:
			a.reload()
			resync.Reset(a.cfg.ResyncInterval)
		case <-resync.C:
			if err := a.reconcile("resync", true); err != nil {
				a.log.Error("resync failed", "err", err)
			}
		case <-a.healthC:
			a.takeVerdicts()
			if err := a.reconcile("health", false); err != nil {
				a.log.Error("applying health verdicts failed", "err", err)
			}
		case <-watchdog:
			// Petted from the main loop on purpose: a loop stuck in the
			// kernel stops the pets and systemd restarts the agent.
			a.notifyf("WATCHDOG=1")
		}
	}
}

func (a *Agent) takeVerdicts() {
	a.pendingMu.Lock()
	p := a.pending
	a.pending = make(map[string]health.Status, len(p))
	a.pendingMu.Unlock()
	for id, st := range p {
		// A verdict can arrive just after a reload removed its check: it
		// must not come back to life if that ID is configured again later.
		if _, ok := a.checkIDs[id]; ok {
			a.statuses[id] = st
		}
	}
}

// setChecks lists the health checks the configuration asks for and forgets
// the verdicts of checks that went away or changed: a changed check starts
// over without a verdict, so the kernel's weight is kept until its first
// result instead of following the old check's verdict.
func (a *Agent) setChecks() []health.Check {
	checks := a.checks()
	ids := make(map[string]health.Spec, len(checks))
	for _, c := range checks {
		ids[c.ID] = c.Spec
	}
	for id := range a.statuses {
		old, had := a.checkIDs[id]
		cur, has := ids[id]
		if !has || !had || !old.Equal(cur) {
			delete(a.statuses, id)
		}
	}
	a.checkIDs = ids
	return checks
}

// checks lists the health checks the configuration asks for.
func (a *Agent) checks() []health.Check {
	var out []health.Check
	for i := range a.cfg.VirtualServers {
		vs := &a.cfg.VirtualServers[i]
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			if rs.Check == nil {
				continue
			}
			out = append(out, health.Check{
				ID:      checkID(vs, rs),
				Service: vs.Name,
				Target:  rs.Dest.Key.AddrPort(),
				Spec:    *rs.Check,
			})
		}
	}
	return out
}

// reload re-reads the configuration file. A file with any problem changes
// nothing: the old configuration keeps running and every problem is logged.
func (a *Agent) reload() {
	a.notifyf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec())
	defer a.notifyf("READY=1")
	// Parsing is most of a no-change reload's cost at scale (BurntSushi/toml
	// decodes 1,000 x 10 in ~1 s in the test VM): an unchanged file is not
	// parsed again, but the kernel is still re-read and repaired.
	if src, err := os.ReadFile(a.cfg.Path); err == nil && sha256.Sum256(src) == a.cfg.Digest {
		a.log.Info("config unchanged", "config", a.cfg.Path)
		if err := a.reconcile("reload", true); err != nil {
			a.log.Error("reconcile after reload failed", "err", err)
		}
		a.notifyStatus()
		return
	}
	cfg, err := a.load(a.cfg.Path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				a.log.Error("config problem", "problem", p.String())
			}
		}
		a.log.Error("reload failed", "err", err, "config", a.cfg.Path, "problems", len(ps))
		return
	}
	if cfg.StateFile != a.cfg.StateFile {
		// Moving the ownership record while running would forget what is
		// ours; it takes a restart.
		a.log.Warn("state_file changed: takes effect at the next start", "old", a.cfg.StateFile, "new", cfg.StateFile)
		cfg.StateFile = a.cfg.StateFile
	}
	a.startDrains(a.cfg, cfg)
	a.cfg = cfg
	a.conflicts = map[model.ServiceKey]bool{}
	a.health.Set(a.setChecks())
	if err := a.reconcile("reload", true); err != nil {
		a.log.Error("reconcile after reload failed", "err", err)
	}
	a.notifyStatus()
	debug.FreeOSMemory() // the old and new configurations' garbage, as at start
}

// startDrains notes the real servers that left the configuration while
// their virtual server stayed: they are drained rather than cut off.
func (a *Agent) startDrains(old, cur *config.Config) {
	now := a.now()
	stay := make(map[model.ServiceKey]map[model.DestKey]bool, len(cur.VirtualServers))
	for _, vs := range cur.VirtualServers {
		m := make(map[model.DestKey]bool, len(vs.RealServers))
		for _, rs := range vs.RealServers {
			m[rs.Dest.Key] = true
		}
		stay[vs.Service.Key] = m
	}
	for _, vs := range old.VirtualServers {
		kept := stay[vs.Service.Key]
		if kept == nil {
			continue
		}
		for _, rs := range vs.RealServers {
			ref := plan.DestRef{Service: vs.Service.Key, Dest: rs.Dest.Key}
			if kept[rs.Dest.Key] || a.observed[ref.Service] == nil {
				continue
			}
			if d, ok := a.observed[ref.Service].Dests[ref.Dest]; ok {
				if _, already := a.drains[ref]; !already {
					a.drains[ref] = draining{dest: d, since: now}
				}
			}
		}
	}
}

// pruneDrains ends the drains whose real server has no active connection
// left, has gone, or has drained for longer than its drain timeout.
func (a *Agent) pruneDrains() {
	timeouts := make(map[model.ServiceKey]time.Duration, len(a.cfg.VirtualServers))
	for _, vs := range a.cfg.VirtualServers {
		timeouts[vs.Service.Key] = vs.DrainTimeout
	}
	now := a.now()
	for ref, dr := range a.drains {
		v := a.observed[ref.Service]
		var d model.Destination
		ok := v != nil
		if ok {
			d, ok = v.Dests[ref.Dest]
		}
		switch {
		case !ok:
			delete(a.drains, ref)
		case d.ActiveConns == 0:
			delete(a.drains, ref)
		case now.Sub(dr.since) >= timeouts[ref.Service]:
			a.log.Info("drain timeout: removing real server with connections left", "service", ref.Service.String(), "real_server", ref.Dest.String(), "active", d.ActiveConns)
			delete(a.drains, ref)
		}
	}
}

// observe reads the kernel's table: one dump of the services, then the
// destinations of the services this agent manages (owned or adoptable)
// only, so the cost follows the agent's size, not the kernel's. The
// destination dumps are spread over the kernel handles like writes are.
func (a *Agent) observe() (model.Table, error) {
	svcs, err := a.kernels[0].Services()
	if err != nil {
		return nil, err
	}
	adopt := map[model.ServiceKey]bool{}
	for _, vs := range a.cfg.VirtualServers {
		if vs.Adopt {
			adopt[vs.Service.Key] = true
		}
	}
	t := make(model.Table, len(svcs))
	var mine []*model.VirtualServer
	for _, s := range svcs {
		v := &model.VirtualServer{Service: s}
		t[s.Key] = v
		if a.owned[s.Key] || adopt[s.Key] {
			mine = append(mine, v)
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for lane, k := range a.kernels {
		wg.Add(1)
		go func(lane int, k kernel.IPVS) {
			defer wg.Done()
			for i := lane; i < len(mine); i += len(a.kernels) {
				v := mine[i]
				ds, err := k.Destinations(v.Key)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				v.Dests = make(map[model.DestKey]model.Destination, len(ds))
				for _, d := range ds {
					v.Dests[d.Key] = d
				}
			}
		}(lane, k)
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// reconcile makes the kernel match the desired state. With full it first
// re-reads the kernel (start, reload, resync); otherwise it plans against
// the table as last read and kept current, which makes a health change cost
// its own writes and no reads.
func (a *Agent) reconcile(reason string, full bool) error {
	start := a.now()
	if full || a.observed == nil {
		obs, err := a.observe()
		if err != nil {
			a.log.Error("reconciled", "reason", reason, "writes", 0, "errors", 1, "err", err)
			return fmt.Errorf("read kernel IPVS table: %w", err)
		}
		a.observed = obs
		a.pruneDrains()
	}
	d := buildDesired(a.cfg, a.statuses, a.drains)
	a.logQuorum(d)
	res := plan.Plan(plan.Input{Desired: d.table, Observed: a.observed, Owned: a.owned, Adopt: d.adopt, KeepWeight: d.keepWeight})
	for _, key := range res.Conflicts {
		if !a.conflicts[key] {
			a.conflicts[key] = true
			a.log.Error("virtual server exists in the kernel and is not ours: left untouched (set adopt = true to take it over)",
				"virtual_server", d.names[key], "service", key.String())
		}
	}

	// Record ownership of what is about to be created before creating it:
	// after a crash mid-apply the next start then knows those services are
	// its own and finishes the job instead of calling them foreign.
	intent := make(map[model.ServiceKey]bool, len(a.owned)+len(res.Owned))
	for k := range a.owned {
		intent[k] = true
	}
	for k := range res.Owned {
		intent[k] = true
	}
	if !sameKeys(intent, a.owned) {
		if err := saveOwned(a.cfg.StateFile, intent); err != nil {
			a.log.Error("reconciled", "reason", reason, "writes", 0, "errors", 1, "err", err)
			return err
		}
	}

	failed := a.apply(reason, res.Ops, d.names)

	final := res.Owned
	for _, f := range failed {
		switch {
		case f.op.Kind == plan.DeleteService:
			final[f.op.Service.Key] = true // still there, still ours
		case f.op.Kind == plan.AddService && !a.owned[f.op.Service.Key]:
			delete(final, f.op.Service.Key) // never created by us
		}
	}
	if !sameKeys(final, intent) {
		if err := saveOwned(a.cfg.StateFile, final); err != nil {
			a.log.Error("save state file", "err", err)
		}
	}
	a.owned = final

	r := ReconcileResult{Reason: reason, Writes: len(res.Ops), Errors: len(failed)}
	if reason != "resync" || r.Writes > 0 || r.Errors > 0 {
		a.log.Info("reconciled", "reason", reason, "writes", r.Writes, "errors", r.Errors,
			"conflicts", len(res.Conflicts), "virtual_servers", len(d.table), "duration", a.now().Sub(start).Round(time.Microsecond).String())
	}
	a.publish(d, res.Conflicts, r)
	return nil
}

// logQuorum logs each virtual server that falls below its quorum or
// regains it, once per change.
func (a *Agent) logQuorum(d desired) {
	for name := range d.quorumLost {
		if !a.quorum[name] {
			a.log.Warn("virtual server below quorum", "virtual_server", name, "healthy", d.healthy[name])
		}
	}
	for name := range a.quorum {
		if !d.quorumLost[name] {
			a.log.Info("virtual server quorum restored", "virtual_server", name, "healthy", d.healthy[name])
		}
	}
	a.quorum = d.quorumLost
}

func (a *Agent) publish(d desired, conflicts []model.ServiceKey, r ReconcileResult) {
	st := make(map[string]health.Status, len(a.statuses))
	for k, v := range a.statuses {
		st[k] = v
	}
	a.view.Store(&View{
		ConfigPath: a.cfg.Path, Desired: d.table, Statuses: st, Healthy: d.healthy, QuorumLost: d.quorumLost,
		Conflicts: conflicts, LastReconcile: a.now(), LastResult: r,
	})
}

// shutdown leaves the kernel as it is, so traffic flows while the agent
// restarts or is upgraded, unless cleanup_on_exit asks to remove what it owns.
func (a *Agent) shutdown() error {
	a.notifyf("STOPPING=1")
	if !a.cfg.CleanupOnExit {
		a.log.Info("stopping; kernel state left in place", "owned", len(a.owned))
		return nil
	}
	var errs []error
	keys := make([]model.ServiceKey, 0, len(a.owned))
	for k := range a.owned {
		keys = append(keys, k)
	}
	model.SortServiceKeys(keys)
	for _, k := range keys {
		if err := a.kernels[0].DeleteService(k); err != nil && !errors.Is(err, kernel.ErrNoService) {
			errs = append(errs, err)
			continue
		}
		delete(a.owned, k)
	}
	if err := saveOwned(a.cfg.StateFile, a.owned); err != nil {
		errs = append(errs, err)
	}
	a.log.Info("stopping; removed owned virtual servers (cleanup_on_exit)", "removed", len(keys)-len(a.owned), "errors", len(errs))
	return errors.Join(errs...)
}

func (a *Agent) notifyf(format string, args ...any) {
	if a.notify != nil {
		a.notify.Notify(fmt.Sprintf(format, args...))
	}
}

func (a *Agent) notifyStatus() {
	a.notifyf("STATUS=%d virtual servers, %d owned", len(a.cfg.VirtualServers), len(a.owned))
}
