package health

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
)

// Verdicts leave the scheduler two ways, neither of which the loop waits
// on: OnChange calls from one delivering goroutine (coalesced per ID), and
// notify commands run one at a time from a bounded queue.

type transition struct {
	sub      sub
	target   netip.AddrPort
	from, to State
	st       Status
	notify   []string
}

// report logs a transition and queues its notify command. A first verdict
// of "up" (unknown -> up) is only logged at debug level and notifies
// nobody: at start-up it is every server at once, and nothing changed.
func (s *Scheduler) report(e transition) {
	lvl := slog.LevelInfo
	switch {
	case e.to == Down:
		lvl = slog.LevelWarn
	case e.from == Unknown && e.to == Up:
		lvl = slog.LevelDebug
	}
	s.log.Log(context.Background(), lvl, "real server health changed",
		"virtual_server", e.sub.service, "real_server", e.target.String(), "check", e.sub.id,
		"from", e.from.String(), "to", e.to.String(), "reason", e.st.Reason)
	if len(e.notify) == 0 || lvl == slog.LevelDebug {
		return
	}
	job := notifyJob{argv: e.notify, env: []string{
		"IPVS_CHECK_ID=" + e.sub.id,
		"IPVS_VIRTUAL_SERVER=" + e.sub.service,
		"IPVS_RS_IP=" + e.target.Addr().String(),
		"IPVS_RS_PORT=" + strconv.Itoa(int(e.target.Port())),
		"IPVS_OLD_STATE=" + e.from.String(),
		"IPVS_NEW_STATE=" + e.to.String(),
		"IPVS_REASON=" + e.st.Reason,
		"IPVS_FACTOR=" + fmt.Sprintf("%.3f", e.st.Factor),
	}}
	select {
	case s.notifyQ <- job:
	default:
		s.notifyDropped.Add(1)
		s.log.Warn("notify queue full, command not run", "check", e.sub.id, "to", e.to.String())
	}
}

type notifyJob struct{ argv, env []string }

// runNotifies runs notify commands one at a time: they are for humans and
// pagers, and running them serially keeps a mass failure from forking
// thousands of processes.
func (s *Scheduler) runNotifies(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.notifyQ:
			nctx, cancel := context.WithTimeout(ctx, notifyTime)
			out, err := runCommand(nctx, j.argv, nil, j.env)
			cancel()
			if err != nil {
				s.log.Warn("notify command failed", "command", j.argv[0], "err", err, "output", out)
			}
		}
	}
}

func (s *Scheduler) emitLocked(st Status) {
	if s.onChange == nil {
		return
	}
	if _, ok := s.pending[st.ID]; !ok {
		s.order = append(s.order, st.ID)
	}
	s.pending[st.ID] = st
	select {
	case s.notifyWake <- struct{}{}:
	default:
	}
}

// deliver calls OnChange from a single goroutine, outside the lock.
func (s *Scheduler) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.notifyWake:
		}
		s.mu.Lock()
		order := s.order
		batch := make([]Status, 0, len(order))
		for _, id := range order {
			// order may name an ID twice when Set dropped it from
			// pending and it came back: deliver it once.
			if st, ok := s.pending[id]; ok {
				batch = append(batch, st)
				delete(s.pending, id)
			}
		}
		s.order = nil
		clear(s.pending)
		s.mu.Unlock()
		for _, st := range batch {
			s.onChange(st)
		}
	}
}
