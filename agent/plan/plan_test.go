package plan

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/model"
)

func key(s string) model.ServiceKey {
	ap := netip.MustParseAddrPort(s)
	return model.ServiceKey{Family: model.FamilyInet, Protocol: model.ProtoTCP, Addr: ap.Addr(), Port: ap.Port()}
}

func dest(s string, w int) model.Destination {
	ap := netip.MustParseAddrPort(s)
	return model.Destination{Key: model.DestKey{Addr: ap.Addr(), Port: ap.Port()}, Weight: w, Forward: model.ForwardDR}
}

func vs(k model.ServiceKey, sched string, dests ...model.Destination) *model.VirtualServer {
	v := &model.VirtualServer{
		Service: model.Service{Key: k, Scheduler: sched, Netmask: model.DefaultNetmask(k.Family)},
		Dests:   map[model.DestKey]model.Destination{},
	}
	for _, d := range dests {
		v.Dests[d.Key] = d
	}
	return v
}

func table(vss ...*model.VirtualServer) model.Table {
	t := model.Table{}
	for _, v := range vss {
		t[v.Key] = v
	}
	return t
}

func owned(keys ...model.ServiceKey) map[model.ServiceKey]bool {
	m := map[model.ServiceKey]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func opStrings(ops []Op) []string {
	out := []string{}
	for _, o := range ops {
		out = append(out, o.String())
	}
	return out
}

var (
	web = key("192.0.2.10:80")
	api = key("192.0.2.11:443")
	r1  = dest("198.18.0.1:80", 1)
	r2  = dest("198.18.0.2:80", 2)
	r3  = dest("198.18.0.3:80", 3)
)

func TestPlan(t *testing.T) {
	persistent := vs(web, "wrr", r1, r2)
	persistent.Flags, persistent.Timeout = model.FlagPersistent, 300
	r2heavy := r2
	r2heavy.Weight = 20
	r2nat := r2
	r2nat.Forward = model.ForwardNAT

	tests := []struct {
		name          string
		in            Input
		want          []string
		wantConflicts []model.ServiceKey
		wantOwned     map[model.ServiceKey]bool
	}{
		{
			name:      "empty to empty",
			in:        Input{Desired: table(), Observed: table()},
			want:      []string{},
			wantOwned: owned(),
		},
		{
			name: "cold start adds services then their destinations in order",
			in:   Input{Desired: table(vs(web, "wrr", r2, r1), vs(api, "rr", r3)), Observed: table()},
			want: []string{
				"add-service tcp 192.0.2.10:80",
				"add-real-server tcp 192.0.2.10:80 -> 198.18.0.1:80",
				"add-real-server tcp 192.0.2.10:80 -> 198.18.0.2:80",
				"add-service tcp 192.0.2.11:443",
				"add-real-server tcp 192.0.2.11:443 -> 198.18.0.3:80",
			},
			wantOwned: owned(web, api),
		},
		{
			name:      "no change is no write",
			in:        Input{Desired: table(vs(web, "wrr", r1, r2)), Observed: table(vs(web, "wrr", r1, r2)), Owned: owned(web)},
			want:      []string{},
			wantOwned: owned(web),
		},
		{
			name:      "one weight change is one update",
			in:        Input{Desired: table(vs(web, "wrr", r1, r2heavy)), Observed: table(vs(web, "wrr", r1, r2)), Owned: owned(web)},
			want:      []string{"update-real-server tcp 192.0.2.10:80 -> 198.18.0.2:80 weight 2 -> 20"},
			wantOwned: owned(web),
		},
		{
			name:      "forwarding change is an update",
			in:        Input{Desired: table(vs(web, "wrr", r1, r2nat)), Observed: table(vs(web, "wrr", r1, r2)), Owned: owned(web)},
			want:      []string{"update-real-server tcp 192.0.2.10:80 -> 198.18.0.2:80"},
			wantOwned: owned(web),
		},
		{
			name:      "scheduler change is an in-place update, never delete+add",
			in:        Input{Desired: table(vs(web, "mh", r1)), Observed: table(vs(web, "wrr", r1)), Owned: owned(web)},
			want:      []string{"update-service tcp 192.0.2.10:80"},
			wantOwned: owned(web),
		},
		{
			name:      "persistence change is an in-place update",
			in:        Input{Desired: table(persistent), Observed: table(vs(web, "wrr", r1, r2)), Owned: owned(web)},
			want:      []string{"update-service tcp 192.0.2.10:80"},
			wantOwned: owned(web),
		},
		{
			name: "real servers removed, added and changed: deletes first, then updates, then adds",
			in: Input{
				Desired:  table(vs(web, "wrr", r2heavy, r3)),
				Observed: table(vs(web, "wrr", r1, r2)),
				Owned:    owned(web),
			},
			want: []string{
				"delete-real-server tcp 192.0.2.10:80 -> 198.18.0.1:80",
				"update-real-server tcp 192.0.2.10:80 -> 198.18.0.2:80 weight 2 -> 20",
				"add-real-server tcp 192.0.2.10:80 -> 198.18.0.3:80",
			},
			wantOwned: owned(web),
		},
		{
			name:      "owned service gone from the config is deleted",
			in:        Input{Desired: table(vs(web, "wrr", r1)), Observed: table(vs(web, "wrr", r1), vs(api, "rr", r3)), Owned: owned(web, api)},
			want:      []string{"delete-service tcp 192.0.2.11:443"},
			wantOwned: owned(web),
		},
		{
			name:      "a service someone else made is never touched",
			in:        Input{Desired: table(vs(web, "wrr", r1)), Observed: table(vs(web, "wrr", r1), vs(api, "rr", r3)), Owned: owned(web)},
			want:      []string{},
			wantOwned: owned(web),
		},
		{
			name:          "a desired service that exists unowned is a conflict and left alone",
			in:            Input{Desired: table(vs(web, "wrr", r1, r2)), Observed: table(vs(web, "rr", r3))},
			want:          []string{},
			wantConflicts: []model.ServiceKey{web},
			wantOwned:     owned(),
		},
		{
			name: "adopt takes an unowned service over and converges it",
			in: Input{
				Desired: table(vs(web, "wrr", r1)), Observed: table(vs(web, "rr", r3)),
				Adopt: owned(web),
			},
			want: []string{
				"update-service tcp 192.0.2.10:80",
				"delete-real-server tcp 192.0.2.10:80 -> 198.18.0.3:80",
				"add-real-server tcp 192.0.2.10:80 -> 198.18.0.1:80",
			},
			wantOwned: owned(web),
		},
		{
			name: "owned service deleted behind our back is re-added",
			in:   Input{Desired: table(vs(web, "wrr", r1)), Observed: table(), Owned: owned(web)},
			want: []string{
				"add-service tcp 192.0.2.10:80",
				"add-real-server tcp 192.0.2.10:80 -> 198.18.0.1:80",
			},
			wantOwned: owned(web),
		},
		{
			name: "owned service already gone and no longer desired needs nothing",
			in:   Input{Desired: table(), Observed: table(), Owned: owned(web)},
			want: []string{}, wantOwned: owned(),
		},
		{
			name: "unknown health keeps the kernel's weight but fixes other attributes",
			in: Input{
				Desired:    table(vs(web, "wrr", r1, r2heavy, r3)),
				Observed:   table(vs(web, "wrr", r1, r2nat)),
				Owned:      owned(web),
				KeepWeight: map[DestRef]bool{{web, r2.Key}: true, {web, r3.Key}: true},
			},
			want: []string{
				"update-real-server tcp 192.0.2.10:80 -> 198.18.0.2:80",
				"add-real-server tcp 192.0.2.10:80 -> 198.18.0.3:80",
			},
			wantOwned: owned(web),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Plan(tc.in)
			if got := opStrings(res.Ops); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ops:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
			if !reflect.DeepEqual(res.Conflicts, tc.wantConflicts) {
				t.Errorf("conflicts = %v, want %v", res.Conflicts, tc.wantConflicts)
			}
			if !reflect.DeepEqual(res.Owned, tc.wantOwned) {
				t.Errorf("owned = %v, want %v", res.Owned, tc.wantOwned)
			}
		})
	}
}

func TestPlanKeepWeightUsesKernelWeightOnUpdate(t *testing.T) {
	r2nat := r2
	r2nat.Forward = model.ForwardNAT
	r2nat.Weight = 50
	res := Plan(Input{
		Desired:    table(vs(web, "wrr", r2nat)),
		Observed:   table(vs(web, "wrr", dest("198.18.0.2:80", 7))),
		Owned:      owned(web),
		KeepWeight: map[DestRef]bool{{web, r2.Key}: true},
	})
	if len(res.Ops) != 1 || res.Ops[0].Dest.Weight != 7 {
		t.Fatalf("want one update keeping weight 7, got %v", opStrings(res.Ops))
	}
}

// The plan must be deterministic: the same input gives the same order.
func TestPlanDeterministic(t *testing.T) {
	in := Input{Desired: table(vs(api, "rr", r3, r1), vs(web, "wrr", r2, r1)), Observed: table()}
	first := opStrings(Plan(in).Ops)
	for i := 0; i < 20; i++ {
		if got := opStrings(Plan(in).Ops); !reflect.DeepEqual(got, first) {
			t.Fatalf("run %d differs:\n%v\n%v", i, got, first)
		}
	}
}
