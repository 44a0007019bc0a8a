//go:build systemtest

package system

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The tests run in order, as one operator's day: each starts from the state
// the one before left (run.sh/inside.sh split them around a reboot).

const conf = "/etc/ipvs-agent.toml"

// goodConfig is what the operator writes in TestReload: two virtual servers.
// alpha = false: the tests compare the table right after a reload with the
// configured weights; with alpha (tested in make vmtest) new real servers
// would sit at weight 0 until their first check passes.
const goodConfig = `# edited by the operator (system test)
[[virtual_server]]
name = "web"
address = "192.0.2.10:80"
scheduler = "rr"
alpha = false
  [virtual_server.check]
  type = "tcp"
  interval = "1s"
  timeout = "1s"

  [[virtual_server.real_server]]
  address = "198.18.0.11:80"

  [[virtual_server.real_server]]
  address = "198.18.0.12:80"

[[virtual_server]]
name = "lines"
address = "192.0.2.11:9000"
scheduler = "wlc"
alpha = false
  # An exec check that passes only as user nobody: proves the unit lets
  # exec checks drop to their user (CAP_SETUID/CAP_SETGID, NoNewPrivileges).
  [virtual_server.check]
  type = "exec"
  command = ["/bin/sh", "-c", "test \"$(id -u)\" = \"$(id -u nobody)\""]
  interval = "2s"
  timeout = "2s"

  [[virtual_server.real_server]]
  address = "198.18.0.11:9000"

  [[virtual_server.real_server]]
  address = "198.18.0.12:9000"
`

// wantTable is `ipvsadm -Ln` for goodConfig, without counters.
var wantTable = []string{
	"TCP 192.0.2.10:80 rr",
	"TCP 192.0.2.10:80 -> 198.18.0.11:80 Route 1",
	"TCP 192.0.2.10:80 -> 198.18.0.12:80 Route 1",
	"TCP 192.0.2.11:9000 wlc",
	"TCP 192.0.2.11:9000 -> 198.18.0.11:9000 Route 1",
	"TCP 192.0.2.11:9000 -> 198.18.0.12:9000 Route 1",
}

func TestMain(m *testing.M) {
	if os.Getenv("SYSTEMTEST_PHASE") == "" {
		fmt.Println("test/system runs inside the VM that test/system/run.sh boots (make systemtest)")
		os.Exit(1)
	}
	// Phase 2 follows a reboot, which removed the namespaces: rebuild them
	// so the health checks of the restored table pass again.
	if p := os.Getenv("SYSTEMTEST_PHASE"); p == "1" || p == "2" {
		if err := setupTopology(); err != nil {
			fmt.Println("topology:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// run runs a command and returns its combined output and exit code.
func run(args ...string) (string, int) {
	c := exec.Command(args[0], args[1:]...)
	c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	out, err := c.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	out, code := run(args...)
	if code != 0 {
		t.Fatalf("`%s` exited %d:\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func prop(t *testing.T, name string) string {
	t.Helper()
	return strings.TrimSpace(must(t, "systemctl", "show", "-P", name, "ipvs-agent"))
}

// table is the kernel's IPVS table as sorted lines without counters.
func table(t *testing.T) []string {
	t.Helper()
	out := must(t, "ipvsadm", "-Ln")
	var lines []string
	svc := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && (f[0] == "TCP" || f[0] == "UDP" || f[0] == "FWM" || f[0] == "SCTP"):
			svc = f[0] + " " + f[1]
			lines = append(lines, svc+" "+f[2])
		case len(f) >= 4 && f[0] == "->" && f[1] != "RemoteAddress:Port":
			lines = append(lines, svc+" -> "+f[1]+" "+f[2]+" "+f[3])
		}
	}
	sort.Strings(lines)
	return lines
}

// sameTable compares two tables as sets of lines.
func sameTable(got, want []string) bool {
	g, w := append([]string(nil), got...), append([]string(nil), want...)
	sort.Strings(g)
	sort.Strings(w)
	return strings.Join(g, "\n") == strings.Join(w, "\n")
}

// waitActive waits until the service is active with a main PID and returns it.
func waitActive(t *testing.T, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		state, pid := prop(t, "ActiveState"), prop(t, "MainPID")
		if n, _ := strconv.Atoi(pid); state == "active" && n > 0 {
			return n
		}
		if time.Now().After(deadline) {
			out, _ := run("systemctl", "status", "--no-pager", "ipvs-agent")
			t.Fatalf("ipvs-agent not active within %s (ActiveState=%s MainPID=%s):\n%s", within, state, pid, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func mainPID(t *testing.T) int {
	n, _ := strconv.Atoi(prop(t, "MainPID"))
	return n
}

func writeConfig(t *testing.T, s string) {
	t.Helper()
	if err := os.WriteFile(conf, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// journal returns the agent's journal lines at priority err or worse.
func journalErr(t *testing.T) string {
	out, _ := run("journalctl", "--no-pager", "-u", "ipvs-agent", "-p", "err", "-o", "cat")
	return out
}

// 1. apt install -> enabled and active with the packaged (empty) config;
// the kernel table is empty.
func TestInstall(t *testing.T) {
	deb := os.Getenv("SYSTEMTEST_DEB1")
	out, code := run("apt-get", "install", "-y", deb)
	if code != 0 {
		t.Fatalf("apt-get install %s exited %d:\n%s", deb, code, out)
	}
	if s := strings.TrimSpace(must(t, "systemctl", "is-enabled", "ipvs-agent")); s != "enabled" {
		t.Errorf("after install the service is %q, want enabled", s)
	}
	waitActive(t, 2*time.Minute)
	if tb := table(t); len(tb) != 0 {
		t.Errorf("the packaged config programmed the kernel; ipvsadm -Ln has %q", tb)
	}
	if _, err := os.Stat("/sys/module/ip_vs"); err != nil {
		t.Errorf("ip_vs not loaded after install (postinst runs systemd-modules-load): %v", err)
	}
	if st := prop(t, "StatusText"); !strings.HasPrefix(st, "0 virtual servers, 0/0 real servers up") {
		t.Errorf("STATUS= is %q, want it to start with \"0 virtual servers, 0/0 real servers up\"", st)
	}
	for _, f := range []string{"/usr/share/man/man8/ipvs-agent.8.gz", "/usr/share/man/man5/ipvs-agent.toml.5.gz", "/usr/lib/modules-load.d/ipvs-agent.conf"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("the package did not install %s: %v", f, err)
		}
	}
	if out, _ := run("dpkg-query", "-W", "-f=${Conffiles}", "ipvs-agent"); !strings.Contains(out, conf) {
		t.Errorf("%s is not a conffile: %q", conf, out)
	}
}

// The sandbox: /proc/sys is read-only for the agent except net.ipv4.vs.*,
// which the agent is going to manage; it cannot load modules.
func TestSandbox(t *testing.T) {
	pid := strconv.Itoa(waitActive(t, time.Minute))
	// The conffile programs nothing, kernel settings included.
	if v := strings.TrimSpace(must(t, "cat", "/proc/sys/net/ipv4/vs/conn_reuse_mode")); v != "1" {
		t.Errorf("net.ipv4.vs.conn_reuse_mode is %s with the empty conffile, want the kernel's 1", v)
	}
	sh := func(script string) (string, int) {
		return run("nsenter", "-t", pid, "-m", "sh", "-c", script)
	}
	if out, code := sh(`v=$(cat /proc/sys/net/ipv4/vs/expire_nodest_conn) && echo $v > /proc/sys/net/ipv4/vs/expire_nodest_conn`); code != 0 {
		t.Errorf("net.ipv4.vs.* is not writable in the agent's mount namespace (ReadWritePaths=): %s", out)
	}
	if out, code := sh(`v=$(cat /proc/sys/net/ipv4/ip_forward) && echo $v > /proc/sys/net/ipv4/ip_forward`); code == 0 {
		t.Errorf("other sysctls are writable in the agent's namespace (ProtectKernelTunables=): %s", out)
	}
	if out, code := sh(`ls /usr/lib/modules/`); code == 0 && strings.TrimSpace(out) != "" {
		t.Errorf("the agent sees kernel modules (ProtectKernelModules=): %s", out)
	}
	status := must(t, "grep", "^Cap", "/proc/"+pid+"/status")
	// CAP_KILL(5) CAP_SETGID(6) CAP_SETUID(7) CAP_NET_ADMIN(12) CAP_NET_RAW(13)
	if !strings.Contains(status, "CapBnd:\t00000000000030e0") {
		t.Errorf("agent's bounding set is not {KILL SETGID SETUID NET_ADMIN NET_RAW}:\n%s", status)
	}
}

// 2. Two virtual servers, systemctl reload: returns 0 once the table is in
// the kernel, same PID, traffic through the VIPs reaches both real servers.
func TestReload(t *testing.T) {
	pid := waitActive(t, time.Minute)
	writeConfig(t, goodConfig)
	out, code := run("systemctl", "reload", "ipvs-agent")
	// Read the table at once: reload must not return before it is applied.
	got := table(t)
	if code != 0 {
		t.Fatalf("systemctl reload exited %d:\n%s\n%s", code, out, journalErr(t))
	}
	if !sameTable(got, wantTable) {
		t.Fatalf("right after systemctl reload returned, ipvsadm -Ln is\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantTable, "\n"))
	}
	if p := mainPID(t); p != pid {
		t.Errorf("reload changed the main PID from %d to %d", pid, p)
	}
	// With virtual servers to keep, the agent keeps its [agent.kernel]
	// settings too: written through the unit's ReadWritePaths=.
	if v := strings.TrimSpace(must(t, "cat", "/proc/sys/net/ipv4/vs/conn_reuse_mode")); v != "3" {
		t.Errorf("net.ipv4.vs.conn_reuse_mode is %s after a reload with virtual servers, want the agent's default 3:\n%s", v, journalErr(t))
	}
	seen := map[string]int{}
	for i := 0; i < 20; i++ {
		name, err := get()
		if err != nil {
			t.Fatalf("request %d through %s failed: %v", i, vipWeb, err)
		}
		seen[name]++
	}
	if seen["rs1"] == 0 || seen["rs2"] == 0 {
		t.Errorf("20 requests through %s reached %v, want both rs1 and rs2", vipWeb, seen)
	}
	// Every check passes once it has run: the tcp checks, and the exec
	// checks as nobody inside the unit's sandbox.
	upRE := regexp.MustCompile(`^2 virtual servers, 4/4 real servers up, last reload \d\d:\d\d:\d\d ok$`)
	st := prop(t, "StatusText")
	for end := time.Now().Add(time.Minute); !upRE.MatchString(st) && time.Now().Before(end); st = prop(t, "StatusText") {
		time.Sleep(500 * time.Millisecond)
	}
	if !upRE.MatchString(st) {
		out, _ := run("journalctl", "--no-pager", "-u", "ipvs-agent", "-o", "cat")
		t.Errorf("STATUS= a minute after a good reload is %q, want %s (a check failing under the unit: the exec check must run as nobody):\n%s", st, upRE, tail(out, 15))
	}
}

// 3. A broken edit: systemctl reload fails, the problem with its position
// is in the journal at priority err, the table and the process are kept.
func TestBadReload(t *testing.T) {
	pid := waitActive(t, time.Minute)
	before := table(t)
	bad := goodConfig + "\n[[virtual_server]]\nname = \"broken\"\naddress = \"192.0.2.12:80\"\nscheduler = \"nope\"\n"
	line := strings.Count(goodConfig, "\n") + 5 // the scheduler line
	writeConfig(t, bad)
	out, code := run("systemctl", "reload", "ipvs-agent")
	if code == 0 {
		t.Errorf("systemctl reload of a broken file exited 0:\n%s", out)
	}
	want := fmt.Sprintf("%s:%d:", conf, line)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(journalErr(t), want) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if j := journalErr(t); !strings.Contains(j, want) {
		t.Errorf("journalctl -u ipvs-agent -p err has no %q:\n%s", want, j)
	}
	if got := table(t); !sameTable(got, before) {
		t.Errorf("a failed reload changed the table:\n%s\nwas\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	if s := prop(t, "ActiveState"); s != "active" {
		t.Errorf("after a failed reload the service is %s", s)
	}
	if p := mainPID(t); p != pid {
		t.Errorf("a failed reload changed the main PID from %d to %d", pid, p)
	}
	if st := prop(t, "StatusText"); !strings.Contains(st, "FAILED") {
		t.Errorf("STATUS= after a failed reload does not say so: %q", st)
	}
	if e := prop(t, "StatusErrno"); e != "22" {
		t.Errorf("StatusErrno after a failed reload is %q, want 22", e)
	}
	// The operator fixes the file.
	writeConfig(t, goodConfig)
	if out, code := run("systemctl", "reload", "ipvs-agent"); code != 0 {
		t.Fatalf("reload of the fixed file exited %d:\n%s", code, out)
	}
	if st := prop(t, "StatusText"); !strings.HasSuffix(st, " ok") {
		t.Errorf("STATUS= after the fix is %q, want it to end in ok", st)
	}
}

// 4. SIGSTOP the agent: the watchdog kills and restarts it, and the table
// is never emptied meanwhile.
func TestWatchdog(t *testing.T) {
	pid := waitActive(t, time.Minute)
	restarts := prop(t, "NRestarts")
	must(t, "kill", "-STOP", strconv.Itoa(pid))
	deadline := time.Now().Add(3 * time.Minute)
	samples := 0
	for {
		if got := table(t); !sameTable(got, wantTable) {
			t.Fatalf("while the agent was stopped/restarted the table became\n%s", strings.Join(got, "\n"))
		}
		samples++
		if p := mainPID(t); p != pid && p > 0 && prop(t, "ActiveState") == "active" && prop(t, "SubState") == "running" {
			break
		}
		if time.Now().After(deadline) {
			out, _ := run("systemctl", "status", "--no-pager", "ipvs-agent")
			t.Fatalf("the watchdog did not restart the stopped agent within 3 minutes:\n%s", out)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if r := prop(t, "NRestarts"); r == restarts {
		t.Errorf("NRestarts still %s: the agent was not restarted by systemd", r)
	}
	if out, _ := run("journalctl", "--no-pager", "-u", "ipvs-agent", "-o", "cat"); !strings.Contains(out, "Watchdog timeout") {
		t.Errorf("no \"Watchdog timeout\" in the journal:\n%s", tail(out, 20))
	}
	t.Logf("table intact in %d samples across the watchdog restart", samples)
}

// 5. Upgrade to a higher version under traffic: no failed request, a
// long-lived connection survives, the edited conffile is kept, and the new
// agent finds the table right (no writes at start).
func TestUpgrade(t *testing.T) {
	oldPID := waitActive(t, time.Minute)
	before, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	long, err := dial(vipLines)
	if err != nil {
		t.Fatalf("long-lived connection to %s: %v", vipLines, err)
	}
	defer long.Close()
	rd := bufio.NewReader(long)
	ask := func() (string, error) {
		long.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintln(long, "hello"); err != nil {
			return "", err
		}
		s, err := rd.ReadString('\n')
		return strings.TrimSpace(s), err
	}
	first, err := ask()
	if err != nil {
		t.Fatalf("long-lived connection: %v", err)
	}

	var ok, failed atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := get(); err != nil {
				failed.Add(1)
				lastErr.Store(err.Error())
			} else {
				ok.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	out, code := run("apt-get", "install", "-y", os.Getenv("SYSTEMTEST_DEB2"))
	newPID := waitActive(t, 2*time.Minute)
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	if code != 0 {
		t.Fatalf("apt-get install of the upgrade exited %d:\n%s", code, out)
	}
	if newPID == oldPID {
		t.Errorf("the upgrade did not restart the agent (PID %d)", newPID)
	}
	if v := must(t, "/usr/sbin/ipvs-agent", "version"); !strings.Contains(v, os.Getenv("SYSTEMTEST_VERSION2")) {
		t.Errorf("after the upgrade ipvs-agent version is %q, want %s", v, os.Getenv("SYSTEMTEST_VERSION2"))
	}
	if n := failed.Load(); n != 0 || ok.Load() < 20 {
		t.Errorf("during the upgrade %d requests failed (last: %v) and %d succeeded; want 0 failed", n, lastErr.Load(), ok.Load())
	}
	if again, err := ask(); err != nil || again != first {
		t.Errorf("the long-lived connection did not survive the upgrade: reply %q (was %q), err %v", again, first, err)
	}
	after, _ := os.ReadFile(conf)
	if string(after) != string(before) {
		t.Errorf("the upgrade changed the edited %s", conf)
	}
	if got := table(t); !sameTable(got, wantTable) {
		t.Errorf("after the upgrade the table is\n%s", strings.Join(got, "\n"))
	}
	j, _ := run("journalctl", "--no-pager", "-u", "ipvs-agent", "_PID="+strconv.Itoa(newPID), "-o", "cat")
	if !regexp.MustCompile(`reconciled reason=start writes=0 errors=0`).MatchString(j) {
		t.Errorf("the upgraded agent's start wrote to the kernel (want reason=start writes=0 errors=0):\n%s", tail(j, 10))
	}
	t.Logf("upgrade under traffic: %d requests ok, %d failed", ok.Load(), failed.Load())
}

// 7. After a reboot: the agent started at boot, ip_vs was loaded by
// modules-load.d, the table is back.
func TestReboot(t *testing.T) {
	waitActive(t, 3*time.Minute)
	if s := strings.TrimSpace(must(t, "systemctl", "is-enabled", "ipvs-agent")); s != "enabled" {
		t.Errorf("after the reboot the service is %q", s)
	}
	// Nothing else in this VM loads ip_vs, and the agent cannot
	// (ProtectKernelModules=yes): loaded means modules-load.d did it. Its
	// journal line can lag the boot (early messages come in through kmsg).
	if _, err := os.Stat("/sys/module/ip_vs"); err != nil {
		t.Errorf("ip_vs is not loaded after the reboot: %v", err)
	}
	var mods string
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		if mods, _ = run("journalctl", "--no-pager", "-b", "-o", "cat", "-t", "systemd-modules-load"); strings.Contains(mods, "Inserted module 'ip_vs'") {
			break
		}
	}
	if !strings.Contains(mods, "Inserted module 'ip_vs'") {
		t.Errorf("the boot's journal has no \"Inserted module 'ip_vs'\" from systemd-modules-load:\n%s", mods)
	}
	deadline := time.Now().Add(time.Minute)
	for !sameTable(table(t), wantTable) && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	if got := table(t); !sameTable(got, wantTable) {
		t.Errorf("after the reboot the table is\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantTable, "\n"))
	}
}

// 6. stop keeps the table; remove takes the service away and keeps the
// table; purge removes the state directory, never the kernel state.
func TestStopRemovePurge(t *testing.T) {
	waitActive(t, 3*time.Minute)
	must(t, "systemctl", "stop", "ipvs-agent")
	if s := prop(t, "ActiveState"); s != "inactive" {
		t.Errorf("after stop the service is %s", s)
	}
	if got := table(t); !sameTable(got, wantTable) {
		t.Errorf("stop changed the table:\n%s", strings.Join(got, "\n"))
	}
	if out, code := run("apt-get", "remove", "-y", "ipvs-agent"); code != 0 {
		t.Fatalf("apt-get remove exited %d:\n%s", code, out)
	}
	if s := prop(t, "LoadState"); s != "not-found" && s != "masked" {
		t.Errorf("after remove the unit's LoadState is %s, want not-found (or masked by deb-systemd-helper)", s)
	}
	if _, err := os.Stat("/usr/sbin/ipvs-agent"); err == nil {
		t.Error("after remove /usr/sbin/ipvs-agent is still there")
	}
	if out, _ := run("pgrep", "-x", "ipvs-agent"); strings.TrimSpace(out) != "" {
		t.Errorf("after remove an ipvs-agent process runs: %s", out)
	}
	if got := table(t); !sameTable(got, wantTable) {
		t.Errorf("remove changed the table:\n%s", strings.Join(got, "\n"))
	}
	if _, err := os.Stat("/var/lib/ipvs-agent"); err != nil {
		t.Errorf("remove (not purge) deleted the state directory: %v", err)
	}
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("remove (not purge) deleted the conffile: %v", err)
	}
	if out, code := run("apt-get", "purge", "-y", "ipvs-agent"); code != 0 {
		t.Fatalf("apt-get purge exited %d:\n%s", code, out)
	}
	if _, err := os.Stat("/var/lib/ipvs-agent"); err == nil {
		t.Error("after purge /var/lib/ipvs-agent still exists")
	}
	if _, err := os.Stat(conf); err == nil {
		t.Errorf("after purge %s still exists", conf)
	}
	if got := table(t); !sameTable(got, wantTable) {
		t.Errorf("purge changed the kernel table:\n%s", strings.Join(got, "\n"))
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
