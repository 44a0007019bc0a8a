package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/ipvs-agent/ipvs-agent/agent/kernel"
	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/plan"
	"golang.org/x/sys/unix"
)

type failure struct {
	op  plan.Op
	err error
}

// apply runs the plan. Ops of one service stay in order on one lane; lanes
// run in parallel, one per kernel handle, because the kernel serialises
// IPVS configuration but a second socket keeps it busy while the first
// waits on its reply. A failed op is logged and skipped; a failed service
// add skips that service's real servers. The observed table is kept current
// with every op that succeeded.
//
// When the agent is told to stop, the lanes stop between two writes and
// the ops not made are returned as skipped: the stop waits for at most one
// write per lane, not for the whole plan.
func (a *Agent) apply(reason string, ops []plan.Op, names map[model.ServiceKey]string) (failed, skipped []failure) {
	if len(ops) == 0 {
		return nil, nil
	}
	lanes := make([][]plan.Op, len(a.kernels))
	laneOf := map[model.ServiceKey]int{}
	next := 0
	for _, op := range ops {
		l, ok := laneOf[op.Service.Key]
		if !ok {
			l = next % len(lanes)
			laneOf[op.Service.Key] = l
			next++
		}
		lanes[l] = append(lanes[l], op)
	}

	// Each lane only talks to the kernel and records what happened; the
	// cached table and the log are updated afterwards on this goroutine, so
	// the lanes share no lock and the kernel is never kept waiting on a log
	// line.
	done := make([][]bool, len(lanes)) // done[lane][i]: op i of the lane succeeded
	errs := make([][]error, len(lanes))
	stopped := make([]int, len(lanes)) // ops from here on were not tried
	for i, lane := range lanes {
		stopped[i] = len(lane)
	}
	var wg sync.WaitGroup
	for i, lane := range lanes {
		if len(lane) == 0 {
			continue
		}
		done[i] = make([]bool, len(lane))
		errs[i] = make([]error, len(lane))
		wg.Add(1)
		go func(k kernel.IPVS, lane []plan.Op, done []bool, errs []error, stopped *int) {
			defer wg.Done()
			var broken model.ServiceKey
			brokenSet := false
			for j, op := range lane {
				if a.stop.Err() != nil {
					*stopped = j
					return
				}
				if brokenSet && op.Service.Key == broken {
					continue // neither done nor failed: skipped with its service
				}
				if err := exec(k, op); err != nil {
					errs[j] = err
					if op.Kind == plan.AddService {
						broken, brokenSet = op.Service.Key, true
					}
					continue
				}
				done[j] = true
			}
		}(a.kernels[i], lane, done[i], errs[i], &stopped[i])
	}
	wg.Wait()

	ctx := context.Background()
	level := slog.LevelInfo
	if reason == "start" && len(ops) > 100 {
		level = slog.LevelDebug // a cold start of thousands of ops gets a summary line
	}
	logWrites := a.log.Enabled(ctx, level) // op.String() is not free: skip it when unlogged
	for i, lane := range lanes {
		for j, op := range lane {
			switch {
			case j >= stopped[i]:
				skipped = append(skipped, failure{op, a.stop.Err()})
			case done[i][j]:
				applyToTable(a.observed, op)
				if logWrites {
					a.log.Log(ctx, level, "kernel write", "reason", reason, "virtual_server", names[op.Service.Key], "op", op.String())
				}
			case errs[i][j] != nil:
				failed = append(failed, failure{op, errs[i][j]})
				a.log.Error("kernel write failed", "reason", reason, "virtual_server", names[op.Service.Key], "op", op.String(), "err", errs[i][j])
			}
		}
	}
	return failed, skipped
}

func exec(k kernel.IPVS, op plan.Op) error {
	switch op.Kind {
	case plan.AddService:
		return k.AddService(op.Service)
	case plan.UpdateService:
		return k.UpdateService(op.Service)
	case plan.DeleteService:
		return k.DeleteService(op.Service.Key)
	case plan.AddDest:
		return k.AddDestination(op.Service.Key, op.Dest)
	case plan.UpdateDest:
		return k.UpdateDestination(op.Service.Key, op.Dest)
	case plan.DeleteDest:
		err := k.DeleteDestination(op.Service.Key, op.Dest.Key)
		if errors.Is(err, kernel.ErrNoDest) {
			return nil // already gone: the goal is met
		}
		return err
	}
	return errors.New("unknown op")
}

// applyToTable mirrors a successful op in the cached kernel table.
func applyToTable(t model.Table, op plan.Op) {
	switch op.Kind {
	case plan.AddService:
		t[op.Service.Key] = &model.VirtualServer{Service: op.Service, Dests: map[model.DestKey]model.Destination{}}
	case plan.UpdateService:
		if v := t[op.Service.Key]; v != nil {
			v.Service = op.Service
		}
	case plan.DeleteService:
		delete(t, op.Service.Key)
	case plan.AddDest, plan.UpdateDest:
		if v := t[op.Service.Key]; v != nil {
			if v.Dests == nil {
				v.Dests = map[model.DestKey]model.Destination{}
			}
			d := op.Dest
			if old, ok := v.Dests[d.Key]; ok {
				d.ActiveConns, d.InactiveConns = old.ActiveConns, old.InactiveConns
			}
			v.Dests[d.Key] = d
		}
	case plan.DeleteDest:
		if v := t[op.Service.Key]; v != nil {
			delete(v.Dests, op.Dest.Key)
		}
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// with RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Now().UnixMicro()
	}
	return ts.Nano() / 1000
}
