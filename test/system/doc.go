// Package system holds the system tests of the Debian package: run.sh boots
// Debian with systemd as PID 1 and runs system_test.go (build tag
// systemtest) inside it, as root, against the installed ipvs-agent.deb.
package system
