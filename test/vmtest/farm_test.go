//go:build vmtest

package vmtest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The farm: many real servers for the health-check benchmarks and the
// starvation test, in one network namespace behind a veth pair.
//
//	director 198.18.254.1/30 (farm0) --- 198.18.254.2/30 (eth0, netns "farm")
//	director: 198.19.0.0/16 via 198.18.254.2
//	farm:     "local 198.19.0.0/16 dev lo", so every address in it is the farm's
//
// Real server k (0-based) is 198.19.0.0 + k + 1 on its virtual server's port,
// so 50,000 real servers need no address configured one by one. Each real
// server that is up has its own listening socket bound to its address and
// port; closing it makes the kernel answer the next SYN with a reset, as a
// stopped service does. One OS thread accepts on all of them with one epoll
// set and counts, per real server, every connection that completed the
// handshake: a check that got that far (a TCP check needs no more). Accepted
// connections are closed at once, with a FIN: a reset would race a slow
// prober's connect and turn a handshake that succeeded into ECONNRESET, a
// failure no real server causes. The farm keeps no TIME_WAIT
// (tcp_max_tw_buckets=0 in its namespace). The same counter serves
// keepalived and ipvs-agent.
//
// Cost: one wake-up per batch of accepts and two syscalls per accept, on
// the VM's CPUs like the daemons'; the benchmarks report the test process's
// own CPU next to theirs.
const (
	farmNS       = "farm"
	farmDirector = "198.18.254.1"
	farmSide     = "198.18.254.2"
	farmPrefix   = "198.19.0.0/16"
)

// farmRealAddr is real server k's address.
func farmRealAddr(k int) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], binary.BigEndian.Uint32([]byte{198, 19, 0, 0})+uint32(k)+1)
	return netip.AddrFrom4(b)
}

type farmTarget struct {
	addr    netip.AddrPort
	fd      int // -1 while stopped; owned by the loop thread once serving
	accepts atomic.Int64
}

type farm struct {
	ns   netns.NsHandle
	epfd int
	evfd int // wakes the loop for queued operations

	mu      sync.Mutex
	ops     []func() // run on the loop thread
	targets map[netip.AddrPort]*farmTarget
	byFd    map[int32]*farmTarget // loop thread only
	total   atomic.Int64
}

var (
	theFarm     *farm
	theFarmErr  error
	theFarmOnce sync.Once
)

// getFarm builds the farm once per VM boot (only the tests that use it pay).
func getFarm(t testing.TB) *farm {
	t.Helper()
	theFarmOnce.Do(func() { theFarm, theFarmErr = newFarm() })
	if theFarmErr != nil {
		t.Fatalf("farm: %v", theFarmErr)
	}
	return theFarm
}

func newFarm() (*farm, error) {
	// 50,000 listeners and the daemons' probe sockets: the VM's default of
	// 1,024 (4,096 hard) is far too low. Children inherit the limit.
	lim := unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	in := func(a ...string) []string { return append([]string{"ip", "netns", "exec", farmNS}, a...) }
	steps := [][]string{
		{"ip", "netns", "add", farmNS},
		{"ip", "link", "add", "farm0", "type", "veth", "peer", "name", "eth0", "netns", farmNS},
		{"ip", "addr", "add", farmDirector + "/30", "dev", "farm0"},
		{"ip", "link", "set", "farm0", "up"},
		in("ip", "link", "set", "lo", "up"),
		in("ip", "addr", "add", farmSide+"/30", "dev", "eth0"),
		in("ip", "link", "set", "eth0", "up"),
		in("ip", "route", "add", "local", farmPrefix, "dev", "lo"),
		// The farm closes first: keep no TIME_WAIT for 10,000 closes a second.
		in("sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0"),
		in("sysctl", "-qw", "net.core.somaxconn=4096"),
		{"ip", "route", "add", farmPrefix, "via", farmSide},
	}
	for _, s := range steps {
		if out, err := run(s...); err != nil {
			return nil, fmt.Errorf("%v: %v: %s", s, err, out)
		}
	}
	ns, err := netns.GetFromName(farmNS)
	if err != nil {
		return nil, err
	}
	f := &farm{ns: ns, targets: map[netip.AddrPort]*farmTarget{}, byFd: map[int32]*farmTarget{}}
	if f.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, err
	}
	if f.evfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, err
	}
	if err := unix.EpollCtl(f.epfd, unix.EPOLL_CTL_ADD, f.evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(f.evfd)}); err != nil {
		return nil, err
	}
	go f.loop()
	return f, nil
}

func (f *farm) loop() {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 512)
	var buf [8]byte
	for {
		n, err := unix.EpollWait(f.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			panic(fmt.Sprintf("farm: epoll_wait: %v", err))
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == f.evfd {
				unix.Read(f.evfd, buf[:])
				f.mu.Lock()
				ops := f.ops
				f.ops = nil
				f.mu.Unlock()
				for _, op := range ops {
					op()
				}
				continue
			}
			tg := f.byFd[ev.Fd]
			if tg == nil {
				continue
			}
			for {
				c, _, err := unix.Accept4(int(ev.Fd), unix.SOCK_CLOEXEC)
				if err != nil {
					break // EAGAIN: drained
				}
				unix.Close(c) // a FIN, as a server that closes at once
				tg.accepts.Add(1)
				f.total.Add(1)
			}
		}
	}
}

// do runs op on the loop thread and waits for it.
func (f *farm) do(op func()) {
	done := make(chan struct{})
	f.mu.Lock()
	f.ops = append(f.ops, func() { op(); close(done) })
	f.mu.Unlock()
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	unix.Write(f.evfd, one[:])
	<-done
}

// listen opens non-blocking listening sockets for addrs inside the farm's
// namespace (sockets keep the namespace they were created in).
func (f *farm) listen(addrs []netip.AddrPort) ([]int, error) {
	fds := make([]int, 0, len(addrs))
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the runtime drops this thread
		if err := netns.Set(f.ns); err != nil {
			errc <- err
			return
		}
		for _, a := range addrs {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				errc <- err
				return
			}
			fds = append(fds, fd)
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()}); err != nil {
				errc <- fmt.Errorf("bind %v: %w", a, err)
				return
			}
			if err := unix.Listen(fd, 128); err != nil {
				errc <- fmt.Errorf("listen %v: %w", a, err)
				return
			}
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, err
	}
	return fds, nil
}

// serve makes every real server in addrs answer (those already up stay up).
func (f *farm) serve(t testing.TB, addrs []netip.AddrPort) {
	t.Helper()
	var todo []netip.AddrPort
	f.mu.Lock()
	for _, a := range addrs {
		if tg := f.targets[a]; tg == nil || tg.fd < 0 {
			todo = append(todo, a)
		}
	}
	f.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	fds, err := f.listen(todo)
	if err != nil {
		t.Fatalf("farm: %v", err)
	}
	var errs []error
	f.do(func() {
		for i, a := range todo {
			f.mu.Lock()
			tg := f.targets[a]
			if tg == nil {
				tg = &farmTarget{addr: a, fd: -1}
				f.targets[a] = tg
			}
			tg.fd = fds[i]
			f.mu.Unlock()
			f.byFd[int32(fds[i])] = tg
			if err := unix.EpollCtl(f.epfd, unix.EPOLL_CTL_ADD, fds[i], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fds[i])}); err != nil {
				errs = append(errs, err)
			}
		}
	})
	if len(errs) > 0 {
		t.Fatalf("farm: epoll add: %v", errs[0])
	}
}

// stop closes the listeners of addrs: their next SYN gets a reset.
func (f *farm) stop(addrs ...netip.AddrPort) {
	f.do(func() {
		for _, a := range addrs {
			f.mu.Lock()
			tg := f.targets[a]
			f.mu.Unlock()
			if tg == nil || tg.fd < 0 {
				continue
			}
			delete(f.byFd, int32(tg.fd))
			unix.EpollCtl(f.epfd, unix.EPOLL_CTL_DEL, tg.fd, nil)
			unix.Close(tg.fd)
			f.mu.Lock()
			tg.fd = -1
			f.mu.Unlock()
		}
	})
}

// stopAll closes every listener (between benchmarks: fewer sockets to keep).
func (f *farm) stopAll() {
	f.mu.Lock()
	var all []netip.AddrPort
	for a := range f.targets {
		all = append(all, a)
	}
	f.mu.Unlock()
	f.stop(all...)
}

// accepts is the number of completed handshakes at addr so far.
func (f *farm) accepts(a netip.AddrPort) int64 {
	f.mu.Lock()
	tg := f.targets[a]
	f.mu.Unlock()
	if tg == nil {
		return 0
	}
	return tg.accepts.Load()
}
