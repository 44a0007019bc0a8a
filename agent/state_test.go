package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

func TestStateFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	owned, err := loadOwned(path)
	if err != nil || len(owned) != 0 {
		t.Fatalf("missing file: %v %v", owned, err)
	}
	want := map[model.ServiceKey]bool{
		{Family: model.FamilyInet, Protocol: model.ProtoTCP, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}:    true,
		{Family: model.FamilyInet6, Protocol: model.ProtoUDP, Addr: netip.MustParseAddr("2001:db8::1"), Port: 53}: true,
		{Family: model.FamilyInet, FWMark: 9}: true,
	}
	if err := saveState(path, record{owned: want}); err != nil {
		t.Fatal(err)
	}
	got, err := loadOwned(path)
	if err != nil || !sameKeys(got, want) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
}

func TestStateFileCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	os.WriteFile(path, []byte("{not json"), 0o644)
	if _, err := loadOwned(path); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("want a corrupt-file error, got %v", err)
	}
}
