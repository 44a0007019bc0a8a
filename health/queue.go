package health

// item is a queued event: a probe to start, or a slow-start step. Kept
// small (24 bytes): the queue holds one per real server.
type item struct {
	at   int64 // nanoseconds since Scheduler.epoch
	r    *runner
	gen  uint32
	ramp bool
}

// itemHeap is a binary min-heap on at. Hand-written rather than
// container/heap: heap.Push boxes every item in an interface, one
// allocation per probe on the hot path.
type itemHeap []item

func (h itemHeap) Len() int { return len(h) }

func (h *itemHeap) push(it item) {
	*h = append(*h, it)
	q := *h
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if q[p].at <= q[i].at {
			break
		}
		q[p], q[i] = q[i], q[p]
		i = p
	}
}

func (h *itemHeap) pop() item {
	q := *h
	it := q[0]
	n := len(q) - 1
	q[0] = q[n]
	q[n] = item{} // drop the runner pointer for the GC
	*h = q[:n]
	h.down(0)
	return it
}

func (h itemHeap) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r].at < h[l].at {
			m = r
		}
		if h[i].at <= h[m].at {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// filter keeps the items keep accepts and restores the heap order: O(n),
// for a reload that removed or replaced checks (their items must not wait
// in the queue until due: at interval 1h, 1,000 reloads would pile up a
// million of them).
func (h *itemHeap) filter(keep func(item) bool) {
	q := *h
	n := 0
	for _, it := range q {
		if keep(it) {
			q[n] = it
			n++
		}
	}
	clear(q[n:])
	q = q[:n]
	for i := n/2 - 1; i >= 0; i-- {
		q.down(i)
	}
	*h = q
}
