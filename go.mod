module github.com/ipvs-agent/ipvs-agent

go 1.23

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/moby/ipvs v1.1.0
	github.com/sirupsen/logrus v1.9.0
	github.com/vishvananda/netns v0.0.5
	golang.org/x/sys v0.10.0
)

require github.com/vishvananda/netlink v1.3.1 // indirect
