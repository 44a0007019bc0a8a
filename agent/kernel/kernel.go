// Package kernel is the agent's only door to the kernel's IPVS table: a small
// interface, a netlink implementation over moby/ipvs, and an in-memory fake
// with the kernel's semantics for unit tests.
package kernel

import (
	"errors"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

// IPVS reads and writes the kernel's virtual server table. Implementations
// are not safe for concurrent use: the agent gives each one a single owner.
type IPVS interface {
	// Services dumps every virtual server in the kernel, owned or not.
	Services() ([]model.Service, error)
	// Destinations lists one virtual server's real servers; for a service
	// that does not exist it returns none and no error, as the kernel does.
	Destinations(svc model.ServiceKey) ([]model.Destination, error)

	AddService(svc model.Service) error
	UpdateService(svc model.Service) error
	DeleteService(svc model.ServiceKey) error

	AddDestination(svc model.ServiceKey, d model.Destination) error
	UpdateDestination(svc model.ServiceKey, d model.Destination) error
	DeleteDestination(svc model.ServiceKey, d model.DestKey) error
}

// Errors the kernel answers with, normalised so callers can test for them
// with errors.Is whichever implementation produced them.
var (
	ErrExists      = errors.New("already exists")         // EEXIST
	ErrNoService   = errors.New("no such virtual server") // ESRCH
	ErrNoDest      = errors.New("no such real server")    // ENOENT on a destination
	ErrNotLoaded   = errors.New("IPVS is not available in this kernel (run `modprobe ip_vs`, and list ip_vs in /etc/modules-load.d/ to load it at boot)")
	ErrUnsupported = errors.New("not supported by this kernel") // e.g. an unknown scheduler module
)
