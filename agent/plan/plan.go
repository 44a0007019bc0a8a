// Package plan is the planner: a pure function from the desired table and
// the kernel's observed table to the ordered list of kernel operations that
// makes the second equal the first. It does no I/O, so every transition can
// be table-tested.
package plan

import (
	"fmt"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

// Kind is an operation on the kernel's IPVS table.
type Kind int

const (
	AddService Kind = iota
	UpdateService
	DeleteService
	AddDest
	UpdateDest
	DeleteDest
)

var kindNames = [...]string{"add-service", "update-service", "delete-service", "add-real-server", "update-real-server", "delete-real-server"}

func (k Kind) String() string { return kindNames[k] }

// Op is one kernel write.
type Op struct {
	Kind    Kind
	Service model.Service     // for service ops the full service; for destination ops Key is what matters
	Dest    model.Destination // destination ops only
	Old     *model.Destination
}

func (o Op) String() string {
	switch o.Kind {
	case AddService, UpdateService, DeleteService:
		return fmt.Sprintf("%s %s", o.Kind, o.Service.Key)
	case UpdateDest:
		if o.Old != nil && o.Old.Weight != o.Dest.Weight {
			return fmt.Sprintf("%s %s -> %s weight %d -> %d", o.Kind, o.Service.Key, o.Dest.Key, o.Old.Weight, o.Dest.Weight)
		}
	}
	return fmt.Sprintf("%s %s -> %s", o.Kind, o.Service.Key, o.Dest.Key)
}

// Input is everything the planner looks at.
type Input struct {
	// Desired is the table the configuration and health checks ask for.
	Desired model.Table
	// Observed is the kernel's table: every service the kernel reported,
	// with Dests filled in for the services the agent manages (owned, or
	// desired and adoptable). Dests of other services may be nil.
	Observed model.Table
	// Owned are the services the agent created (or adopted) earlier.
	Owned map[model.ServiceKey]bool
	// Adopt are desired services the agent may take over when it finds them
	// in the kernel without owning them.
	Adopt map[model.ServiceKey]bool
	// KeepWeight are destinations whose weight is not known yet (health
	// state unknown after a start or reload): if the kernel has them, their
	// kernel weight is left alone; if not, they are added with the desired
	// weight.
	KeepWeight map[DestRef]bool
}

// DestRef names one destination of one service.
type DestRef struct {
	Service model.ServiceKey
	Dest    model.DestKey
}

// Result is the plan.
type Result struct {
	Ops []Op
	// Conflicts are desired services that exist in the kernel but belong to
	// someone else (no adopt): they are left untouched.
	Conflicts []model.ServiceKey
	// Owned is the ownership set once Ops have all been applied.
	Owned map[model.ServiceKey]bool
}

// Plan computes the operations, in the order they must run: deletions of
// services the agent owns and no longer wants, then, service by service in
// key order, the service itself and its destinations (deletes, updates,
// adds). A changed scheduler, flag or persistence is always an in-place
// update, never delete+add, which would drop every connection.
func Plan(in Input) Result {
	res := Result{Owned: make(map[model.ServiceKey]bool, len(in.Desired))}

	for _, key := range in.Observed.Keys() {
		if in.Owned[key] && in.Desired[key] == nil {
			res.Ops = append(res.Ops, Op{Kind: DeleteService, Service: in.Observed[key].Service})
		}
	}

	for _, key := range in.Desired.Keys() {
		want := in.Desired[key]
		have := in.Observed[key]
		if have == nil {
			res.Owned[key] = true
			res.Ops = append(res.Ops, Op{Kind: AddService, Service: want.Service})
			for _, d := range want.SortedDests() {
				res.Ops = append(res.Ops, Op{Kind: AddDest, Service: want.Service, Dest: d})
			}
			continue
		}
		if !in.Owned[key] && !in.Adopt[key] {
			res.Conflicts = append(res.Conflicts, key)
			continue
		}
		res.Owned[key] = true
		if !want.Service.SameAttrs(have.Service) {
			res.Ops = append(res.Ops, Op{Kind: UpdateService, Service: want.Service})
		}
		for _, d := range have.SortedDests() {
			if _, ok := want.Dests[d.Key]; !ok {
				res.Ops = append(res.Ops, Op{Kind: DeleteDest, Service: want.Service, Dest: d})
			}
		}
		var adds []Op
		for _, d := range want.SortedDests() {
			old, ok := have.Dests[d.Key]
			if !ok {
				adds = append(adds, Op{Kind: AddDest, Service: want.Service, Dest: d})
				continue
			}
			if in.KeepWeight[DestRef{key, d.Key}] {
				d.Weight = old.Weight
			}
			if !d.SameAttrs(old) {
				o := old
				res.Ops = append(res.Ops, Op{Kind: UpdateDest, Service: want.Service, Dest: d, Old: &o})
			}
		}
		res.Ops = append(res.Ops, adds...)
	}
	return res
}
