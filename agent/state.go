package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
	"github.com/ipvs-agent/ipvs-agent/agent/settings"
)

// The state file records which kernel services the agent created or
// adopted. It is the agent's only claim of ownership: a service not listed
// there is someone else's (kube-proxy's, a hand-made ipvsadm one) and is
// never changed or deleted.
//
// It also records the kernel settings ([agent.kernel]) as the agent found
// them before it first changed them, so cleanup_on_exit can put them back
// even after restarts (which would otherwise take the agent's own values
// for the kernel's).
type stateFile struct {
	Version       int            `json:"version"`
	Services      []stateService `json:"services"`
	FoundSettings map[string]int `json:"found_settings,omitempty"`
	// FoundBoot is the kernel boot ID the found settings belong to.
	FoundBoot string `json:"found_boot,omitempty"`
}

// record is the state file's content as the agent uses it.
type record struct {
	owned map[model.ServiceKey]bool
	found settings.Values
	boot  string // the kernel boot the found values are from
}

type stateService struct {
	Family   uint16     `json:"family"`
	Protocol uint16     `json:"protocol,omitempty"`
	Addr     netip.Addr `json:"addr,omitzero"`
	Port     uint16     `json:"port,omitempty"`
	FWMark   uint32     `json:"fwmark,omitempty"`
}

const stateVersion = 1

// maxStateFile bounds what loadOwned reads: 50,000 services take ~5 MB.
const maxStateFile = 64 << 20

// loadOwned reads the ownership record; a missing file means nothing is owned.
func loadOwned(path string) (map[model.ServiceKey]bool, error) {
	r, err := loadState(path)
	return r.owned, err
}

// loadState reads the state file; a missing file means nothing is owned and
// no setting was changed.
func loadState(path string) (record, error) {
	owned := map[model.ServiceKey]bool{}
	found := settings.Values{}
	b, err := readStateFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return record{owned: owned, found: found}, nil
	}
	if err != nil {
		return record{}, err
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return record{}, fmt.Errorf("state file %s is corrupt (move it away to start over; services it listed will then be treated as not the agent's): %w", path, err)
	}
	if sf.Version != stateVersion {
		return record{}, fmt.Errorf("state file %s has version %d, this agent reads version %d", path, sf.Version, stateVersion)
	}
	for _, s := range sf.Services {
		owned[model.ServiceKey{Family: s.Family, Protocol: s.Protocol, Addr: s.Addr, Port: s.Port, FWMark: s.FWMark}] = true
	}
	for n, v := range sf.FoundSettings {
		if settings.Known(settings.Name(n)) {
			found[settings.Name(n)] = v
		}
	}
	return record{owned, found, sf.FoundBoot}, nil
}

// readStateFile reads the ownership record only if it can be trusted: the
// record decides what the agent deletes, so a file planted by another user
// (in a world-writable directory) or one others may write is refused, as
// is a symlink. It opens without blocking: a FIFO hung start-up.
func readStateFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW|syscall.O_NOCTTY, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("state file %s is a symlink: refused (it decides what the agent deletes)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("state file %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("state file %s is owned by uid %d, not by the agent's uid %d: refused (move it away if it is not the agent's)", path, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("state file %s is writable by group or others (mode %#o): refused (chmod go-w, or move it away)", path, fi.Mode().Perm())
	}
	if fi.Size() > maxStateFile {
		return nil, fmt.Errorf("state file %s is %d bytes, larger than the limit of %d", path, fi.Size(), maxStateFile)
	}
	return io.ReadAll(io.LimitReader(f, maxStateFile))
}

// saveState writes the state file atomically: a crash leaves either the old
// or the new file, never a torn one (temp file, fsync, rename, fsync of the
// directory).
func saveState(path string, r record) error {
	keys := make([]model.ServiceKey, 0, len(r.owned))
	for k := range r.owned {
		keys = append(keys, k)
	}
	model.SortServiceKeys(keys)
	sf := stateFile{Version: stateVersion, Services: make([]stateService, 0, len(keys))}
	for _, k := range keys {
		sf.Services = append(sf.Services, stateService{Family: k.Family, Protocol: k.Protocol, Addr: k.Addr, Port: k.Port, FWMark: k.FWMark})
	}
	if len(r.found) > 0 {
		sf.FoundSettings = make(map[string]int, len(r.found))
		for n, v := range r.found {
			sf.FoundSettings[string(n)] = v
		}
		sf.FoundBoot = r.boot
	}
	b, err := json.MarshalIndent(sf, "", " ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.json")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func sameKeys(a, b map[model.ServiceKey]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}
