package health

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// ReadRegular reads a regular file of at most limit bytes. It opens without
// blocking and checks what it opened before reading, so a FIFO or a device
// put in its place is an error rather than a hang, and /dev/zero no memory
// exhaustion. Certificate files use it, and the agent's configuration.
func ReadRegular(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, larger than the limit of %d", path, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: grew larger than the limit of %d bytes while read", path, limit)
	}
	return b, err
}
