package settings_test

import (
	"reflect"
	"testing"

	"github.com/ipvs-agent/ipvs-agent/agent/settings"
	"github.com/ipvs-agent/ipvs-agent/agent/settings/settingstest"
)

func TestPlan(t *testing.T) {
	have := settings.Values{settings.ConnReuseMode: 1, settings.ExpireNodestConn: 0, settings.TimeoutTCP: 900}
	cases := []struct {
		name string
		want settings.Values
		out  []settings.Change
	}{
		{"nothing managed", settings.Values{}, nil},
		{"equal", settings.Values{settings.ConnReuseMode: 1, settings.TimeoutTCP: 900}, nil},
		{"changes in fixed order", settings.Values{settings.TimeoutTCP: 60, settings.ConnReuseMode: 3, settings.ExpireNodestConn: 1},
			[]settings.Change{{Name: settings.ConnReuseMode, From: 1, To: 3}, {Name: settings.ExpireNodestConn, From: 0, To: 1}, {Name: settings.TimeoutTCP, From: 900, To: 60}}},
		{"absent in the kernel", settings.Values{settings.SloppySCTP: 0},
			[]settings.Change{{Name: settings.SloppySCTP, From: -1, To: 0}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := settings.Plan(c.want, have); !reflect.DeepEqual(got, c.out) {
				t.Errorf("Plan = %v, want %v", got, c.out)
			}
		})
	}
}

func TestFakeContract(t *testing.T) { settingstest.Contract(t, settingstest.NewFake()) }
