package config

import "time"

// MaxFileSize bounds the configuration file: 50,000 real servers take
// about 4 MB of TOML, and decoding costs some 20 times the file's size in
// memory, so 16 MiB keeps a start-up or reload under ~400 MB however the
// file was made.
const MaxFileSize = 16 << 20

// MaxPersistence is keepalived's limit on persistence_timeout (31 days,
// LVS_MAX_TIMEOUT), well inside the kernel's u32 seconds and its jiffies.
const MaxPersistence = 31 * 24 * time.Hour
