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
	"maps"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
	"github.com/ipvs-agent/ipvs-agent/agent/settings"
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
	// Settings reads and writes the kernel's IPVS settings ([agent.kernel]).
	// Nil: the agent leaves them alone.
	Settings settings.Kernel
	// Notifier, optional.
	Notifier Notifier
	// Load reads and validates a configuration file (config.Load).
	Load func(path string) (*config.Config, error)
	// Now is the clock (tests).
	Now func() time.Time
	// Observer, optional, hears of every reconcile and reload (metrics).
	Observer Observer
}

// Agent is the running daemon. Its state is owned by the goroutine running
// Run; other goroutines only see it through View.
type Agent struct {
	log     *slog.Logger
	kernels []kernel.IPVS
	sysctls settings.Kernel
	health  HealthChecker
	notify  Notifier
	load    func(string) (*config.Config, error)
	now     func() time.Time

	cfg       *config.Config
	owned     map[model.ServiceKey]bool
	found     settings.Values   // kernel settings as first found, before the agent changed them
	foundBoot string            // the kernel boot found was recorded in
	setErrs   map[string]string // last write error per setting, logged once
	observed  model.Table       // the kernel's table as last read, kept current as ops apply
	statuses  map[string]health.Status
	drains    map[plan.DestRef]draining
	conflicts map[model.ServiceKey]bool // already reported for this configuration
	quorum    map[string]bool           // every virtual server's quorum state (true: lost), as last logged

	checkIDs map[string]checkEntry // the health checks currently configured
	checkGen uint64                // generation given to checks changed by the last reload

	// unread are owned or adoptable services whose real servers the last
	// full read could not list: left as they are until the next one.
	unread map[model.ServiceKey]error
	// stateErr is why the ownership record could not be written ("" when
	// it could); stateDirty says the file lags a.owned and is rewritten at
	// the next reconcile.
	stateErr   string
	stateDirty bool
	// stop ends with Run's context: a long apply stops between writes.
	stop context.Context

	pendingMu sync.Mutex
	pending   map[string]health.Status
	healthC   chan struct{}

	view atomic.Pointer[View]

	observer   Observer
	reloadReq  chan reloadRequest // Reload's requests into Run's loop (control.go)
	diffReq    chan diffRequest   // Diff's (diff.go)
	lastReload atomic.Pointer[ReloadResult]
	reloading  atomic.Bool
}

// View is a read-only snapshot of the agent's state after a reconcile: the
// seam for a status socket and metrics.
type View struct {
	ConfigPath string
	Desired    model.Table
	Statuses   map[string]health.Status
	Healthy    map[string]int  // virtual server name -> healthy real servers
	QuorumLost map[string]bool // virtual servers below their quorum
	// Why says, per real server whose kernel weight is not its configured
	// one (or that is left out of the kernel), and for the sorry server and
	// draining real servers, the reasons (the weight policy's own words).
	Why           map[plan.DestRef][]string
	Conflicts     []model.ServiceKey
	LastReconcile time.Time
	LastResult    ReconcileResult
	// StateFileError is why the ownership record could not be written,
	// or "": until it can, no new virtual server is created (changes to
	// owned ones, health included, still apply).
	StateFileError string
	// Config is the configuration in force (never modified once loaded);
	// Owned the services the state file lists. For status and metrics.
	Config *config.Config
	Owned  map[model.ServiceKey]bool
}

// ReconcileResult summarises one reconcile.
type ReconcileResult struct {
	Reason   string
	Writes   int
	Errors   int
	Duration time.Duration
}

// New makes an agent for a validated configuration.
func New(cfg *config.Config, opts Options) (*Agent, error) {
	if len(opts.Kernels) == 0 {
		return nil, errors.New("agent: no kernel handle")
	}
	a := &Agent{
		log:       opts.Logger,
		kernels:   opts.Kernels,
		sysctls:   opts.Settings,
		setErrs:   map[string]string{},
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
		stop:      context.Background(),
		observer:  opts.Observer,
		reloadReq: make(chan reloadRequest),
		diffReq:   make(chan diffRequest),
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
	rec, err := loadState(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	a.owned, a.found, a.foundBoot = rec.owned, rec.found, rec.boot
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
	// A stop request ends a running apply between two kernel writes (see
	// apply): the agent stops within one write's time plus shutdown.
	a.stop = ctx
	if err := a.reconcile("start", true); err != nil {
		if ctx.Err() != nil {
			return a.shutdown()
		}
		return err
	}
	if ctx.Err() != nil {
		return a.shutdown()
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
		case req := <-a.reloadReq:
			req.reply <- a.reload()
			resync.Reset(a.cfg.ResyncInterval)
		case req := <-a.diffReq:
			req.reply <- a.diff(req.cfg)
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
			// kernel stops the pets and systemd restarts the agent. A
			// health scheduler whose dispatch loop stopped turning stops
			// them too (a dead checker would freeze every weight).
			if a.healthAlive(a.notify.WatchdogInterval() / 2) {
				a.notifyf("WATCHDOG=1")
			}
		}
	}
}

func (a *Agent) takeVerdicts() {
	a.pendingMu.Lock()
	p := a.pending
	a.pending = make(map[string]health.Status, len(p))
	a.pendingMu.Unlock()
	for id, st := range p {
		// A verdict can arrive just after a reload removed or changed its
		// check: it must not count for the check configured now.
		if c, ok := a.checkIDs[id]; ok && c.gen == st.Gen {
			a.statuses[id] = st
		}
	}
}

// checkEntry is a configured health check and its generation: the reload
// that last changed it.
type checkEntry struct {
	spec health.Spec
	gen  uint64
}

// setChecks lists the health checks the configuration asks for and forgets
// the verdicts of checks that went away or changed: a changed check starts
// over without a verdict, so the kernel's weight is kept until its first
// result instead of following the old check's verdict.
//
// Each check carries a generation, echoed in its verdicts, that changes
// whenever its spec does: a verdict of the old check still on its way
// (queued in the scheduler or in a.pending) is then recognised and dropped.
func (a *Agent) setChecks() []health.Check {
	checks := a.checks()
	if a.checkIDs != nil {
		a.checkGen++
	}
	ids := make(map[string]checkEntry, len(checks))
	for i := range checks {
		c := &checks[i]
		e := checkEntry{spec: c.Spec, gen: a.checkGen}
		if old, had := a.checkIDs[c.ID]; had && old.spec.Equal(c.Spec) {
			e.gen = old.gen
		}
		c.Gen = e.gen
		ids[c.ID] = e
	}
	for id := range a.statuses {
		if cur, ok := ids[id]; !ok || cur.gen != a.checkIDs[id].gen {
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
			id := checkID(vs, rs)
			out = append(out, health.Check{
				ID:      id,
				Service: vs.Name,
				Target:  rs.Dest.Key.AddrPort(),
				Spec:    *rs.Check,
				Gen:     a.checkIDs[id].gen, // setChecks decides it for a new configuration
			})
		}
	}
	return out
}

// reload re-reads the configuration file. A file with any problem changes
// nothing: the old configuration keeps running and every problem is logged.
// The result is also kept for status (LastReload).
func (a *Agent) reload() (res ReloadResult) {
	a.notifyf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec())
	// READY=1 ends the reload either way (the old configuration keeps
	// running after a failure); the STATUS= and ERRNO= sent with it say
	// whether it applied, so a failure never reads as success. Deferred
	// calls run last first: noteReload records the result, then this.
	defer func() { a.notifyf("READY=1\n%s", a.statusNotify()) }()
	defer a.noteReload(a.now(), &res)
	a.reloading.Store(true)
	defer a.reloading.Store(false)
	// Parsing is most of a no-change reload's cost at scale (BurntSushi/toml
	// decodes 1,000 x 10 in ~1 s in the test VM): an unchanged file is not
	// parsed again, but the kernel is still re-read and repaired.
	if src, err := config.ReadFile(a.cfg.Path); err == nil && sha256.Sum256(src) == a.cfg.Digest {
		a.log.Info("config unchanged", "config", a.cfg.Path)
		err := a.reconcile("reload", true)
		if err != nil {
			a.log.Error("reconcile after reload failed", "err", err)
		}
		return a.reloaded(true, err)
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
		return reloadFailed(err, ps)
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
	err = a.reconcile("reload", true)
	if err != nil {
		a.log.Error("reconcile after reload failed", "err", err)
	}
	debug.FreeOSMemory() // the old and new configurations' garbage, as at start
	return a.reloaded(false, err)
}

// startDrains notes the real servers (and the sorry server) that left the
// configuration while their virtual server stayed: they are drained rather
// than cut off.
func (a *Agent) startDrains(old, cur *config.Config) {
	addDrains(a.drains, old, cur, a.observed, a.now())
}

// pruneDrains ends the drains whose real server has no active connection
// left, has gone, or has drained for longer than its drain timeout.
func (a *Agent) pruneDrains() {
	for ref, active := range pruneDrains(a.drains, a.cfg, a.observed, a.unread, a.now()) {
		a.log.Info("drain timeout: removing real server with connections left", "service", ref.Service.String(), "real_server", ref.Dest.String(), "active", active)
	}
}

// observe reads the kernel's table: one dump of the services, then the
// destinations of the services this agent manages (owned or adoptable)
// only, so the cost follows the agent's size, not the kernel's. The
// destination dumps are spread over the kernel handles like writes are.
// A service whose destinations cannot be read is returned in unread (its
// Dests nil) rather than failing the whole read: the others still get
// repaired.
func (a *Agent) observe() (model.Table, map[model.ServiceKey]error, error) {
	return a.observeFor(a.cfg)
}

// observeFor is observe for a configuration that may not be the running one
// (diff.go).
func (a *Agent) observeFor(cfg *config.Config) (t model.Table, unread map[model.ServiceKey]error, err error) {
	svcs, err := a.kernels[0].Services()
	if err != nil {
		return nil, nil, err
	}
	adopt := map[model.ServiceKey]bool{}
	for _, vs := range cfg.VirtualServers {
		if vs.Adopt {
			adopt[vs.Service.Key] = true
		}
	}
	t = make(model.Table, len(svcs))
	var mine []*model.VirtualServer
	for _, s := range svcs {
		v := &model.VirtualServer{Service: s}
		t[s.Key] = v
		if a.owned[s.Key] || adopt[s.Key] {
			mine = append(mine, v)
		}
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	unread = map[model.ServiceKey]error{}
	for lane, k := range a.kernels {
		wg.Add(1)
		go func(lane int, k kernel.IPVS) {
			defer wg.Done()
			for i := lane; i < len(mine); i += len(a.kernels) {
				v := mine[i]
				if a.stop.Err() != nil {
					return // stopping: the reconcile is abandoned
				}
				ds, err := k.Destinations(v.Key)
				if err != nil {
					mu.Lock()
					unread[v.Key] = err
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
	if err := a.stop.Err(); err != nil {
		return nil, nil, fmt.Errorf("stopping: %w", err)
	}
	return t, unread, nil
}

// reconcile makes the kernel match the desired state. With full it first
// re-reads the kernel (start, reload, resync); otherwise it plans against
// the table as last read and kept current, which makes a health change cost
// its own writes and no reads.
func (a *Agent) reconcile(reason string, full bool) error {
	start := a.now()
	if full {
		a.keepSettings(reason)
	}
	fresh := full || a.observed == nil
	if fresh {
		obs, unread, err := a.observe()
		if err != nil {
			a.log.Error("reconciled", "reason", reason, "writes", 0, "errors", 1, "err", err)
			return fmt.Errorf("read kernel IPVS table: %w", err)
		}
		a.observed, a.unread = obs, unread
		a.pruneDrains()
	}
	d := buildDesired(inputs{cfg: a.cfg, statuses: a.statuses, drains: a.drains, observed: a.observed, fresh: fresh, lost: a.quorum})
	a.logQuorum(d)
	desiredT, observedT := d.table, a.observed
	if len(a.unread) > 0 {
		// Planned against a guess, an unreadable service would be
		// re-added or wiped: it is left out until a read succeeds.
		desiredT, observedT = without(d.table, a.unread), without(a.observed, a.unread)
		if full {
			for k, err := range a.unread {
				a.log.Error("cannot read the real servers of a virtual server: left as it is until the next resync",
					"virtual_server", d.names[k], "service", k.String(), "err", err)
			}
		}
	}
	res := plan.Plan(plan.Input{Desired: desiredT, Observed: observedT, Owned: a.owned, Adopt: d.adopt, KeepWeight: d.keepWeight})
	for k := range a.unread {
		if a.owned[k] {
			res.Owned[k] = true // unread is not gone
		}
	}
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
	//
	// The record must never hold back the safety path: when it cannot be
	// written, changes to services already owned (weights, health,
	// deletions) still apply and only taking new services waits, retried
	// at every reconcile (at least every resync_interval).
	saved := true
	if a.stateDirty || !sameKeys(intent, a.owned) {
		if err := a.writeState(intent); err != nil {
			saved = false
			a.stateFailed(err, reason)
			res.Ops = slices.DeleteFunc(res.Ops, func(op plan.Op) bool { return !a.owned[op.Service.Key] })
			maps.DeleteFunc(res.Owned, func(k model.ServiceKey, _ bool) bool { return !a.owned[k] })
			intent = a.owned
		}
	}

	failed, skipped := a.apply(reason, res.Ops, d.names)

	final := res.Owned
	for _, f := range append(failed, skipped...) {
		switch {
		case f.op.Kind == plan.DeleteService:
			final[f.op.Service.Key] = true // still there, still ours
		case f.op.Kind == plan.AddService && !a.owned[f.op.Service.Key]:
			delete(final, f.op.Service.Key) // never created by us
		}
	}
	switch {
	case !saved:
		a.stateDirty = true // the file lags; rewritten once it can be
	case !sameKeys(final, intent):
		if err := a.writeState(final); err != nil {
			a.stateDirty = true
			a.stateFailed(err, reason)
		} else {
			a.stateOK()
		}
	default:
		a.stateOK()
	}
	a.owned = final

	r := ReconcileResult{Reason: reason, Writes: len(res.Ops) - len(skipped), Errors: len(failed), Duration: a.now().Sub(start)}
	if full {
		r.Errors += len(a.unread)
	}
	if len(skipped) > 0 {
		a.log.Warn("apply stopped: the agent is stopping", "reason", reason, "writes_not_made", len(skipped))
	}
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
	for name, lost := range d.quorum {
		switch was, known := a.quorum[name]; {
		case lost && !was:
			a.log.Warn("virtual server below quorum", "virtual_server", name, "healthy", d.healthy[name])
		case !lost && was && known:
			a.log.Info("virtual server quorum restored", "virtual_server", name, "healthy", d.healthy[name])
		}
	}
	a.quorum = d.quorum
}

func (a *Agent) publish(d desired, conflicts []model.ServiceKey, r ReconcileResult) {
	st := make(map[string]health.Status, len(a.statuses))
	for k, v := range a.statuses {
		st[k] = v
	}
	owned := make(map[model.ServiceKey]bool, len(a.owned))
	for k := range a.owned {
		owned[k] = true
	}
	a.view.Store(&View{
		ConfigPath: a.cfg.Path, Desired: d.table, Statuses: st, Healthy: d.healthy, QuorumLost: d.quorumLost, Why: d.why,
		Conflicts: conflicts, LastReconcile: a.now(), LastResult: r, StateFileError: a.stateErr, Config: a.cfg, Owned: owned,
	})
	if a.observer != nil {
		a.observer.Reconciled(r)
	}
}

// without returns t less the keys in drop (t itself when none is in it).
func without[V any](t model.Table, drop map[model.ServiceKey]V) model.Table {
	out := make(model.Table, len(t))
	for k, v := range t {
		if _, ok := drop[k]; !ok {
			out[k] = v
		}
	}
	return out
}

// stateFailed makes a failed write of the ownership record loud: logged
// (once per distinct error, and at every resync while it lasts), in View
// and in systemd's STATUS.
func (a *Agent) stateFailed(err error, reason string) {
	msg := err.Error()
	changed := msg != a.stateErr
	a.stateErr = msg
	if changed || reason == "resync" {
		a.log.Error("state file not writable: new virtual servers wait until it is; owned ones and health keep being applied",
			"state_file", a.cfg.StateFile, "err", err)
	}
	if changed {
		a.notifyStatus()
	}
}

func (a *Agent) stateOK() {
	a.stateDirty = false
	if a.stateErr != "" {
		a.stateErr = ""
		a.log.Info("state file writable again", "state_file", a.cfg.StateFile)
		a.notifyStatus()
	}
}

// shutdown leaves the kernel as it is, so traffic flows while the agent
// restarts or is upgraded, unless cleanup_on_exit asks to remove what it owns.
func (a *Agent) shutdown() error {
	a.notifyf("STOPPING=1")
	if !a.cfg.CleanupOnExit {
		a.log.Info("stopping; kernel state left in place", "owned", len(a.owned))
		return nil
	}
	errs := a.restoreSettings()
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
	if err := a.writeState(a.owned); err != nil {
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

func (a *Agent) notifyStatus() { a.notifyf("%s", a.statusNotify()) }
