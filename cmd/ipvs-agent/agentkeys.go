package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/ipvs-agent/ipvs-agent/agent/config"
)

// agentKeys are the [agent] keys the client commands need to find the
// daemon: its control socket and its state file.
type agentKeys struct {
	StatusSocket string
	StateFile    string
}

// readAgentKeys reads only the [agent] table of a configuration file. The
// client commands run on every `systemctl reload`: decoding a 1,000 x 10 file
// in full costs about a second in a small VM, and the socket path is all
// they need. A missing file gives the defaults when it is the default file
// (the daemon may run with its defaults too).
func readAgentKeys(path string, explicit bool) (agentKeys, error) {
	k := agentKeys{StatusSocket: config.DefaultStatusSocket, StateFile: config.DefaultStateFile}
	src, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) && !explicit {
			return k, nil
		}
		return k, err
	}
	var sec bytes.Buffer
	in := false
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			if in {
				break
			}
			in = strings.HasPrefix(t, "[agent]")
			if !in {
				continue
			}
		}
		if in {
			sec.WriteString(line)
			sec.WriteByte('\n')
		}
	}
	var raw struct {
		Agent struct {
			StatusSocket *string `toml:"status_socket"`
			StateFile    *string `toml:"state_file"`
		} `toml:"agent"`
	}
	if _, err := toml.Decode(sec.String(), &raw); err != nil {
		return k, fmt.Errorf("%s: [agent]: %w (run `ipvs-agent check -c %s`)", path, err, path)
	}
	if s := raw.Agent.StatusSocket; s != nil {
		k.StatusSocket = *s
	}
	if s := raw.Agent.StateFile; s != nil {
		k.StateFile = *s
	}
	return k, nil
}
