package health

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller runs TCP connect checks on raw non-blocking sockets in one epoll
// set, owned by the scheduler's loop goroutine: no goroutine, context,
// timer or net.Dialer per probe. In the test VM a wake-up (timer, epoll
// return, futex) costs ~0.5-1 ms of vCPU while a connect costs ~0.06 ms,
// so the loop works in ticks: it starts every probe due in a tick together,
// sleeps the tick out, and collects every completion with one epoll_wait.
// Timeouts are checked per tick too, from a heap of deadlines.
//
// The loop parks in Go's own netpoller (the epoll fd is itself pollable and
// registered there through os.File), not in a blocking epoll_wait: a
// goroutine blocked in a syscall keeps the runtime's sysmon thread waking
// every few ms to take its P back.
type poller struct {
	epfd, evfd int
	file       *os.File // epfd, registered in Go's netpoller
	raw        syscall.RawConn
	tick       time.Duration
	kicked     atomic.Bool
	events     []unix.EpollEvent
	slots      []slot
	free       []int32
	deadlines  deadlineHeap
	inFlight   int
	// stall is the total time the loop was found asleep longer than it
	// asked to be (the process or the whole VM did not get the CPU):
	// a probe's timeout does not count it (see expire).
	stall   time.Duration
	reasons map[syscall.Errno]string
}

// slot is one probe in flight. Slots are reused: starting a probe
// allocates nothing.
type slot struct {
	fd       int
	gen      int32 // tells a stale event or deadline from the slot's current probe
	r        *runner
	due      int64 // queue time the probe was due (next one is due an interval later)
	sent     time.Time
	timeout  time.Duration
	stallAt  time.Duration // poller.stall when the SYN left
	sa4      unix.SockaddrInet4
	sa6      unix.SockaddrInet6
	inFlight bool
}

type deadline struct {
	at   time.Time
	slot int32
	gen  int32
}

// deadlineHeap orders probe deadlines; entries of probes that completed
// stay until they come up and are skipped (gen).
type deadlineHeap []deadline

func (h *deadlineHeap) push(d deadline) {
	*h = append(*h, d)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q[i].at.Before(q[p].at) {
			break
		}
		q[p], q[i] = q[i], q[p]
		i = p
	}
}

func (h *deadlineHeap) pop() deadline {
	q := *h
	d := q[0]
	n := len(q) - 1
	q[0] = q[n]
	*h = q[:n]
	q = q[:n]
	for i := 0; ; {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q[r].at.Before(q[l].at) {
			m = r
		}
		if !q[m].at.Before(q[i].at) {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	return d
}

// timeoutCap bounds how long a probe may be kept open past its timeout
// while the loop was stalled: after timeoutCapFactor x timeout of wall time
// a socket still in SYN_SENT is a failure whatever the stalls. It is what
// keeps a dead server detectable under any overload (Scheduler.Timings).
const timeoutCapFactor = 3

// stallSlack is how much later than asked the loop may wake before the
// difference counts as a stall.
const stallSlack = 5 * time.Millisecond

var lingerZero = unix.Linger{Onoff: 1, Linger: 0}

const evKick = -1 // EpollEvent.Fd of the eventfd

func newPoller(tick time.Duration) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: evKick}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	f := os.NewFile(uintptr(epfd), "health-epoll") // non-blocking: pollable
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		unix.Close(evfd)
		return nil, err
	}
	return &poller{
		epfd: epfd, evfd: evfd, file: f, raw: raw, tick: tick,
		events:  make([]unix.EpollEvent, 256),
		reasons: map[syscall.Errno]string{},
	}, nil
}

func (p *poller) close() {
	for i := range p.slots {
		if sl := &p.slots[i]; sl.inFlight {
			unix.Close(sl.fd)
			sl.inFlight, sl.r = false, nil
		}
	}
	p.inFlight = 0
	p.file.Close()
	unix.Close(p.evfd)
}

var one = [8]byte{1}

// kick wakes the loop from another goroutine (Set, a probe finished on
// the goroutine path); kicks that come while one is pending cost nothing.
func (p *poller) kick() {
	if p.kicked.CompareAndSwap(false, true) {
		unix.Write(p.evfd, one[:])
	}
}

// wait sleeps until the next tick when probes are in flight (their
// completions are collected together afterwards), otherwise until d
// passes or a kick comes. It returns when the loop woke, for stall
// accounting.
func (p *poller) wait(d time.Duration) {
	now := time.Now()
	if d < p.tick {
		d = p.tick // batch: wake at most once per tick
	}
	if d > time.Second {
		d = time.Second // LastLoop stays fresh
	}
	want := now.Add(d)
	if p.inFlight > 0 {
		time.Sleep(min(d, p.tick))
		want = now.Add(min(d, p.tick))
	} else {
		p.file.SetReadDeadline(want)
		p.raw.Read(func(fd uintptr) bool {
			n, _ := unix.EpollWait(int(fd), p.events[:1], 0)
			if n == 0 {
				return false // park in Go's netpoller
			}
			// Not consumed: harvest takes it (level-triggered).
			return true
		})
	}
	if over := time.Since(want); over > stallSlack {
		p.stall += over
	}
}

// completion is a finished probe handed back to the scheduler.
type completion struct {
	r   *runner
	due int64
	res result
}

// harvest collects every completion ready now.
func (p *poller) harvest(out []completion) []completion {
	for {
		n, err := unix.EpollWait(p.epfd, p.events, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return out
		}
		for _, ev := range p.events[:n] {
			if ev.Fd == evKick {
				var b [8]byte
				unix.Read(p.evfd, b[:])
				p.kicked.Store(false)
				continue
			}
			sl := &p.slots[ev.Fd]
			if !sl.inFlight || sl.gen != ev.Pad {
				continue
			}
			out = append(out, p.finish(ev.Fd, p.connectResult(sl.fd)))
		}
		if n < len(p.events) {
			return out
		}
	}
}

// connectResult reads how a connect ended: SO_ERROR is the kernel's own
// verdict, whenever the loop got round to reading it.
func (p *poller) connectResult(fd int) result {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return p.localFailure(err)
	}
	if v != 0 {
		return failed(p.reason(syscall.Errno(v)))
	}
	return passed("connect ok")
}

func (p *poller) reason(e syscall.Errno) string {
	s, ok := p.reasons[e]
	if !ok {
		s = "connect: " + e.Error()
		p.reasons[e] = s
	}
	return s
}

// localFailure is a probe that failed on this machine (out of file
// descriptors, ephemeral ports, memory): it says nothing about the real
// server and yields no verdict.
func (p *poller) localFailure(err error) result {
	r := failed("local error: " + err.Error())
	r.noVerdict = true
	return r
}

// finish closes slot i's socket and frees the slot. SO_LINGER 0 makes the
// close of an established connection a reset: no TIME_WAIT per check.
func (p *poller) finish(i int32, res result) completion {
	sl := &p.slots[i]
	unix.Close(sl.fd)
	c := completion{r: sl.r, due: sl.due, res: res}
	sl.inFlight, sl.r, sl.fd = false, nil, -1
	p.free = append(p.free, i)
	p.inFlight--
	return c
}

// start opens a non-blocking connect to addr. A probe that finished at
// once (refused on loopback, or a local error) is returned as done.
func (p *poller) start(r *runner, due int64, clock Clock) (c completion, done bool) {
	var i int32
	if n := len(p.free); n > 0 {
		i = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		p.slots = append(p.slots, slot{fd: -1})
		i = int32(len(p.slots) - 1)
	}
	sl := &p.slots[i]
	sl.gen++
	sl.r, sl.due, sl.timeout = r, due, r.se.spec.Timeout
	addr := r.probe().addr
	ip := addr.Addr().Unmap()
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ip.Is4() {
		sl.sa4.Addr, sl.sa4.Port = ip.As4(), int(addr.Port())
		sa = &sl.sa4
	} else {
		family = unix.AF_INET6
		sl.sa6.Addr, sl.sa6.Port, sl.sa6.ZoneId = ip.As16(), int(addr.Port()), 0
		sa = &sl.sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		sl.r = nil
		p.free = append(p.free, i)
		return completion{r: r, due: due, res: p.localFailure(fmt.Errorf("socket: %w", err))}, true
	}
	sl.fd, sl.inFlight = fd, true
	p.inFlight++
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &lingerZero)
	err = unix.Connect(fd, sa)
	switch {
	case err == nil:
		return p.finish(i, passed("connect ok")), true
	case errors.Is(err, unix.EINPROGRESS):
	case errors.Is(err, unix.EADDRNOTAVAIL), errors.Is(err, unix.EAGAIN), errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
		return p.finish(i, p.localFailure(fmt.Errorf("connect: %w", err))), true
	default:
		var e syscall.Errno
		if errors.As(err, &e) {
			return p.finish(i, failed(p.reason(e))), true
		}
		return p.finish(i, failed("connect: "+err.Error())), true
	}
	// The timeout runs from here: the SYN has left.
	sl.sent, sl.stallAt = clock.Now(), p.stall
	ev := unix.EpollEvent{Events: unix.EPOLLOUT, Fd: i, Pad: sl.gen}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return p.finish(i, p.localFailure(fmt.Errorf("epoll_ctl: %w", err))), true
	}
	p.deadlines.push(deadline{at: sl.sent.Add(sl.timeout), slot: i, gen: sl.gen})
	return completion{}, false
}

// nextDeadline is the earliest pending deadline, or zero.
func (p *poller) nextDeadline() time.Time {
	if len(p.deadlines) == 0 {
		return time.Time{}
	}
	return p.deadlines[0].at
}

// expire judges the probes whose deadline passed by now (see judgeTimeout).
func (p *poller) expire(now time.Time, out []completion) []completion {
	for len(p.deadlines) > 0 && !p.deadlines[0].at.After(now) {
		d := p.deadlines.pop()
		sl := &p.slots[d.slot]
		if !sl.inFlight || sl.gen != d.gen {
			continue
		}
		var state uint8
		if info, err := unix.GetsockoptTCPInfo(sl.fd, unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = info.State
		}
		soErr, _ := unix.GetsockoptInt(sl.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		v, again := judgeTimeout(now.Sub(sl.sent), p.stall-sl.stallAt, sl.timeout, soErr, state)
		if again > 0 {
			p.deadlines.push(deadline{at: now.Add(again), slot: d.slot, gen: d.gen})
			continue
		}
		var res result
		switch v {
		case verdictPass:
			res = passed("connect ok")
		case verdictRefused:
			res = failed(p.reason(syscall.Errno(soErr)))
		default:
			res = failed("connect: timeout")
		}
		out = append(out, p.finish(d.slot, res))
	}
	return out
}

type timeoutVerdict int

const (
	verdictTimeout timeoutVerdict = iota
	verdictPass
	verdictRefused
)

const (
	tcpEstablished = 1 // TCP_INFO tcpi_state values (include/net/tcp_states.h)
	tcpSynSent     = 2
)

// judgeTimeout decides a connect whose deadline came up: elapsed is the
// wall time since the SYN left, stalled the part of it the loop was found
// not running. The kernel's view of the socket decides first: it completes
// handshakes while the agent is starved, so a connection that got through
// (however late the loop noticed) passes and one refused fails. A socket
// still waiting fails only once it has waited timeout of the loop's
// running time: time the loop (or the whole VM) stood still is discounted,
// so a stall cannot turn a slow answer into a failure. The discount ends
// at timeoutCapFactor x timeout of wall time, which bounds detection of a
// dead server under any overload. again > 0 asks to look again then.
func judgeTimeout(elapsed, stalled, timeout time.Duration, soErr int, tcpState uint8) (v timeoutVerdict, again time.Duration) {
	if soErr != 0 {
		return verdictRefused, 0
	}
	if tcpState == tcpEstablished {
		return verdictPass, 0
	}
	running := elapsed - stalled
	limit := timeoutCapFactor * timeout
	if running < timeout && elapsed < limit {
		return verdictTimeout, min(timeout-running, limit-elapsed)
	}
	return verdictTimeout, 0
}
