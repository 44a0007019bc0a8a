#!/usr/bin/env bash
# make demo: boot a VM with a real IPVS kernel, run ipvs-agent with
# contrib/demo.toml and send a few requests through the virtual IP.
# Env: CACHE (default .cache/vm), DEMO_CONFIG (default contrib/demo.toml).
source "$(dirname "$0")/lib.sh"
need_host_tools
fetch_kernel
build_base

new_run_dir
pl=$RUN/payload
mkdir -p "$pl"
log "building the agent"
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$pl/ipvs-agent" ./cmd/ipvs-agent) || die "building ./cmd/ipvs-agent failed"
cp "${DEMO_CONFIG:-$ROOT/contrib/demo.toml}" "$pl/demo.toml"
cat >"$pl/run.sh" <<'SCRIPT'
set -e
ip() { /usr/sbin/ip "$@"; } # iproute2, not busybox's applet
say() { printf '\n### %s\n' "$*"; }
# The network: director (this namespace) with the VIP on a dummy interface,
# a bridge to three real servers and a client, each in its own namespace.
ip link add br0 type bridge && ip addr add 198.18.0.1/24 dev br0 && ip link set br0 up
ip link add ipvs0 type dummy && ip addr add 192.0.2.10/32 dev ipvs0 && ip link set ipvs0 up
node() { # name address
	ip netns add $1
	ip link add $1 type veth peer name eth0 netns $1 && ip link set $1 master br0 up
	ip -n $1 link set lo up && ip -n $1 addr add $2/24 dev eth0 && ip -n $1 link set eth0 up
}
node client 198.18.0.100
ip -n client route add 192.0.2.0/24 via 198.18.0.1
for i in 1 2 3; do
	node rs$i 198.18.0.1$i
	ip -n rs$i addr add 192.0.2.10/32 dev lo          # the VIP, for DR
	ip netns exec rs$i sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
	mkdir -p /srv/rs$i && echo "hello from real server rs$i (198.18.0.1$i)" >/srv/rs$i/index.html
	ip netns exec rs$i httpd -p 80 -h /srv/rs$i       # busybox httpd
done

say "config: demo.toml"
grep -v '^#' demo.toml | grep -v '^$'
say "ipvs-agent check -c demo.toml"
./ipvs-agent check -c demo.toml && echo ok
say "ipvs-agent run -c demo.toml"
./ipvs-agent run -c demo.toml -log-format text &
agent=$!
i=0; until ipvsadm -Ln | grep -q 192.0.2.10; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
sleep 0.5
say "ipvsadm -Ln (the kernel table the agent made)"
ipvsadm -Ln
say "8 requests from the client namespace to http://192.0.2.10/"
for n in 1 2 3 4 5 6 7 8; do
	# busybox-static's wget crashes (static glibc); nc speaks HTTP/1.0 just as well.
	answer=$(printf 'GET / HTTP/1.0\r\n\r\n' | ip netns exec client nc -w 5 192.0.2.10 80 | tail -1)
	echo "request $n: ${answer:-NO ANSWER}"
	echo "$answer" >>/tmp/answers
done
# The demo fails loudly unless every request was answered, by more than one server.
[ "$(grep -c 'hello from' /tmp/answers)" = 8 ] || { echo "demo FAILED: unanswered requests"; exit 1; }
[ "$(sort -u /tmp/answers | wc -l)" -ge 2 ] || { echo "demo FAILED: one real server answered everything"; exit 1; }
say "ipvsadm -Lnc (the director's connection table: client -> VIP -> real server)"
ipvsadm -Lnc
sleep 2 # the kernel folds per-CPU counters into these every 2 s
say "ipvsadm -Ln --stats (OutPkts 0: the replies never pass the director, that is direct routing)"
ipvsadm -Ln --stats
say "SIGTERM: the agent exits and leaves the table in place"
kill -TERM $agent; wait $agent || true
ipvsadm -Ln
SCRIPT
build_payload "$pl"
rc=0
boot_vm "$RUN" || rc=$?
finish_run
exit $rc
