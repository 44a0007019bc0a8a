package kernel

import (
	"fmt"
	"sync"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

// Fake is an in-memory IPVS with the kernel's answers (EEXIST, ESRCH,
// ENOENT, unknown scheduler) and counters for every call, so tests can
// assert not only the resulting table but how many writes produced it.
// Unlike a real handle it is safe for concurrent use, which lets tests share
// one Fake between several "handles".
type Fake struct {
	mu    sync.Mutex
	table model.Table
	order []model.ServiceKey // kernel dumps come back in insertion order
	// counters are what ReadStats reports (stats.go).
	counters map[counterKey]Counters

	Counts Counts
	// FailOn, when set, is consulted before every write; a non-nil error is
	// returned instead of performing it (fault injection).
	FailOn func(op string, svc model.ServiceKey, dest *model.DestKey) error
}

// Counts tallies calls by kind.
type Counts struct {
	ServiceDumps, DestDumps int
	Writes                  int
}

// Schedulers the kernel in the VM ships as modules.
var knownSchedulers = map[string]bool{
	"rr": true, "wrr": true, "lc": true, "wlc": true, "lblc": true, "lblcr": true, "dh": true,
	"sh": true, "sed": true, "nq": true, "fo": true, "ovf": true, "mh": true, "twos": true,
}

// NewFake returns an empty fake kernel table.
func NewFake() *Fake { return &Fake{table: model.Table{}} }

// ResetCounts zeroes the call counters.
func (f *Fake) ResetCounts() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Counts = Counts{}
}

// Snapshot returns a deep copy of the table.
func (f *Fake) Snapshot() model.Table {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(model.Table, len(f.table))
	for k, vs := range f.table {
		c := &model.VirtualServer{Service: vs.Service, Dests: make(map[model.DestKey]model.Destination, len(vs.Dests))}
		for dk, d := range vs.Dests {
			c.Dests[dk] = d
		}
		out[k] = c
	}
	return out
}

func (f *Fake) Services() ([]model.Service, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Counts.ServiceDumps++
	out := make([]model.Service, 0, len(f.order))
	for _, k := range f.order {
		out = append(out, f.table[k].Service)
	}
	return out, nil
}

func (f *Fake) Destinations(key model.ServiceKey) ([]model.Destination, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Counts.DestDumps++
	vs, ok := f.table[key]
	if !ok {
		// The kernel answers a destination dump of a missing service with
		// an empty dump, not an error (seen in the VM).
		return nil, nil
	}
	return vs.SortedDests(), nil
}

func (f *Fake) write(op string, key model.ServiceKey, dk *model.DestKey) error {
	f.Counts.Writes++
	if f.FailOn != nil {
		return f.FailOn(op, key, dk)
	}
	return nil
}

func (f *Fake) AddService(s model.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write("add-service", s.Key, nil); err != nil {
		return err
	}
	if _, ok := f.table[s.Key]; ok {
		return fmt.Errorf("add virtual server %s: %w", s.Key, ErrExists)
	}
	if !knownSchedulers[s.Scheduler] {
		return fmt.Errorf("add virtual server %s: scheduler %q: %w", s.Key, s.Scheduler, ErrUnsupported)
	}
	if s.Netmask == 0 {
		s.Netmask = model.DefaultNetmask(s.Key.Family)
	}
	f.table[s.Key] = &model.VirtualServer{Service: s, Dests: map[model.DestKey]model.Destination{}}
	f.order = append(f.order, s.Key)
	return nil
}

func (f *Fake) UpdateService(s model.Service) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write("update-service", s.Key, nil); err != nil {
		return err
	}
	vs, ok := f.table[s.Key]
	if !ok {
		return fmt.Errorf("update virtual server %s: %w", s.Key, ErrNoService)
	}
	if !knownSchedulers[s.Scheduler] {
		return fmt.Errorf("update virtual server %s: scheduler %q: %w", s.Key, s.Scheduler, ErrUnsupported)
	}
	if s.Netmask == 0 {
		s.Netmask = model.DefaultNetmask(s.Key.Family)
	}
	vs.Service = s
	return nil
}

func (f *Fake) DeleteService(key model.ServiceKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write("delete-service", key, nil); err != nil {
		return err
	}
	if _, ok := f.table[key]; !ok {
		return fmt.Errorf("delete virtual server %s: %w", key, ErrNoService)
	}
	delete(f.table, key)
	for i, k := range f.order {
		if k == key {
			f.order = append(f.order[:i], f.order[i+1:]...)
			break
		}
	}
	return nil
}

func (f *Fake) AddDestination(key model.ServiceKey, d model.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write("add-destination", key, &d.Key); err != nil {
		return err
	}
	vs, ok := f.table[key]
	if !ok {
		return fmt.Errorf("add real server %s to %s: %w", d.Key, key, ErrNoService)
	}
	if _, ok := vs.Dests[d.Key]; ok {
		return fmt.Errorf("add real server %s to %s: %w", d.Key, key, ErrExists)
	}
	if d.Family == 0 {
		d.Family = key.Family
	}
	vs.Dests[d.Key] = d
	return nil
}

func (f *Fake) UpdateDestination(key model.ServiceKey, d model.Destination) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write("update-destination", key, &d.Key); err != nil {
		return err
	}
	vs, ok := f.table[key]
	if !ok {
		return fmt.Errorf("update real server %s in %s: %w", d.Key, key, ErrNoService)
	}
	old, ok := vs.Dests[d.Key]
	if !ok {
		return fmt.Errorf("update real server %s in %s: %w", d.Key, key, ErrNoDest)
	}
	if d.Family == 0 {
		d.Family = key.Family
	}
	d.ActiveConns, d.InactiveConns = old.ActiveConns, old.InactiveConns
	vs.Dests[d.Key] = d
	return nil
}

func (f *Fake) DeleteDestination(key model.ServiceKey, dk model.DestKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write("delete-destination", key, &dk); err != nil {
		return err
	}
	vs, ok := f.table[key]
	if !ok {
		return fmt.Errorf("delete real server %s from %s: %w", dk, key, ErrNoService)
	}
	if _, ok := vs.Dests[dk]; !ok {
		return fmt.Errorf("delete real server %s from %s: %w", dk, key, ErrNoDest)
	}
	delete(vs.Dests, dk)
	return nil
}

// SetActiveConns lets tests simulate live connections on a real server.
func (f *Fake) SetActiveConns(key model.ServiceKey, dk model.DestKey, n uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if vs, ok := f.table[key]; ok {
		if d, ok := vs.Dests[dk]; ok {
			d.ActiveConns = n
			vs.Dests[dk] = d
		}
	}
}

var (
	_ IPVS = (*Fake)(nil)
	_ IPVS = (*Netlink)(nil)
)
