package health

import "time"

// Clock is the scheduler's source of time; tests substitute a fake one.
// With the real clock the scheduler sleeps in its epoll loop (poller.go);
// with any other it waits on Clock's timers, which tests move by hand.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer the scheduler uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

type realClock struct{}
type realTimer struct{ t *time.Timer }

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }
func (t realTimer) C() <-chan time.Time          { return t.t.C }
func (t realTimer) Stop() bool                   { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool   { return t.t.Reset(d) }
