package main

// The worker: its share of the connections, its share of the open-loop schedule, deliveries into
// one HDR histogram and the per connection/conversation counts; mirrors perf/worker.ts.

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Clock: epoch milliseconds with sub-ms resolution, wall clock at start plus the monotonic clock
// since (what performance.timeOrigin + performance.now() is in a Node worker).
var (
	clockOrigin   = time.Now()
	clockOriginMs = float64(clockOrigin.UnixNano()) / 1e6
)

func nowMs() float64 { return clockOriginMs + float64(time.Since(clockOrigin).Nanoseconds())/1e6 }

func sleepMs(ms float64) {
	if ms > 0 {
		time.Sleep(time.Duration(ms * float64(time.Millisecond)))
	}
}

// dueCount: messages whose intended time is <= now (perf/lib/schedule.ts, same float arithmetic).
func dueCount(startMs, rate float64, total int64, now float64) int64 {
	if now < startMs {
		return 0
	}
	n := int64(math.Floor(((now-startMs)*rate)/1000+1e-9)) + 1
	if n > total {
		return total
	}
	return n
}

// intendedMs: the intended send time of message k (schedule.ts intendedTime).
func intendedMs(startMs, rate float64, k int64) float64 {
	return startMs + (float64(k)*1000)/rate
}

type worker struct {
	init     workerInit
	target   string
	conns    []*conn
	byIdx    map[int]*conn
	pad      string
	keyHead  string      // "perf-<runId>-"
	resendOn bool        // RealChat re-sends unacked messages with the same idempotency key after a drop
	closing  atomic.Bool // the run is over: no more reopens
	frames   atomic.Int64
	opened   int
	poller   *poller

	mu           sync.Mutex // everything below, and every conn's convState
	hist         *hdrhistogram.Histogram
	errors       map[string]int64
	sent         int64
	acked        int64
	delivered    int64
	duplicates   int64
	gaps         int64
	firstRecv    float64
	lastRecv     float64
	ackedPerConv map[string]int64
	pending      map[int64]struct{} // message k sent, awaiting its ack
	waiting      []int64            // messages due while their sender was down
	storm        *stormState
	// the schedule of the current `send` command (message k -> sender slot, intended time)
	sched struct {
		startMs float64
		rate    float64
		slots   []slotSpec
		local   []*conn
	}
}

func newWorker(in workerInit) (*worker, error) {
	w := &worker{
		init:         in,
		target:       in.Target,
		byIdx:        make(map[int]*conn, len(in.Conns)),
		keyHead:      "perf-" + in.RunID + "-",
		resendOn:     in.Target == "realchat",
		hist:         newHist(),
		errors:       map[string]int64{},
		ackedPerConv: map[string]int64{},
		pending:      map[int64]struct{}{},
	}
	switch in.Target {
	case "realchat", "ws", "centrifugo":
	default:
		return nil, errors.New("the Go engine does not support target " + in.Target + " (realchat, ws, centrifugo)")
	}
	if in.PayloadBytes > 0 {
		b := make([]byte, in.PayloadBytes)
		for i := range b {
			b[i] = 'x'
		}
		w.pad = string(b)
	}
	for i, s := range in.Conns {
		c, err := newConn(w, i, s)
		if err != nil {
			return nil, err
		}
		w.conns = append(w.conns, c)
		w.byIdx[s.Idx] = c
	}
	p, err := newPoller(w.conns)
	if err != nil {
		return nil, err
	}
	w.poller = p
	return w, nil
}

// errLocked counts an error code; w.mu held.
func (w *worker) errLocked(code string) { w.errors[code]++ }

func (w *worker) err(code string) {
	w.mu.Lock()
	w.errors[code]++
	w.mu.Unlock()
}

// onMessage: a delivery on connection c in conversation state cs (w.mu held by the caller).
// Mirrors worker.ts events().onMessage: duplicates (sequence <= last seen) are not counted,
// a jump is a gap; latency = now - the intended send time carried in the payload.
func (w *worker) onMessageLocked(cs *convState, seq int64, hasSeq bool, t float64, hasT bool, now float64) {
	if hasSeq {
		if seq <= cs.seenSeq {
			w.duplicates++
			return
		}
		if cs.seenSeq > 0 && seq > cs.seenSeq+1 {
			w.gaps++
		}
		cs.seenSeq = seq
	}
	cs.uniq++
	w.delivered++
	if hasT {
		recordMs(w.hist, now-t)
	}
	if w.firstRecv == 0 {
		w.firstRecv = now
	}
	w.lastRecv = now
}

// keyIndex parses the message index k out of our idempotency key "perf-<runId>-<k>".
func (w *worker) keyIndex(key []byte) (int64, bool) {
	h := w.keyHead
	if len(key) <= len(h) || string(key[:len(h)]) != h {
		return 0, false
	}
	var k int64
	for _, ch := range key[len(h):] {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		k = k*10 + int64(ch-'0')
	}
	return k, true
}

// onAck: worker.ts events().onAck, with the message index instead of the key.
func (w *worker) onAck(k int64, known bool, duplicate bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if known {
		if _, ok := w.pending[k]; ok {
			delete(w.pending, k)
			w.acked++
			if sl := w.sched.slots; len(sl) > 0 {
				w.ackedPerConv[sl[k%int64(len(sl))].Conv]++
			}
			return
		}
	}
	if duplicate {
		w.errLocked("duplicate_ack")
	}
}

// ---- connection ramp ----

var errTimeout = errors.New("timeout")

// debug: REALCHAT_LOADGEN_DEBUG=1 logs every failed connect to stderr.
var debug = os.Getenv("REALCHAT_LOADGEN_DEBUG") != ""

// connectErrorCode names a failed connect like worker.ts: connect_<first word of the error>,
// except that system errors are named by their errno (connect_ECONNREFUSED, ...), where Node's
// message would only give "connect".
func connectErrorCode(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return "connect_" + errnoName(errno)
	}
	if isTimeout(err) {
		return "connect_timeout"
	}
	msg := err.Error()
	for i := 0; i < len(msg); i++ {
		if msg[i] == ' ' {
			msg = msg[:i]
			break
		}
	}
	b := []byte(msg)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	return "connect_" + string(b)
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.ECONNREFUSED:
		return "ECONNREFUSED"
	case syscall.ECONNRESET:
		return "ECONNRESET"
	case syscall.EADDRINUSE:
		return "EADDRINUSE"
	case syscall.EADDRNOTAVAIL:
		return "EADDRNOTAVAIL"
	case syscall.ETIMEDOUT:
		return "ETIMEDOUT"
	case syscall.EMFILE:
		return "EMFILE"
	case syscall.ENFILE:
		return "ENFILE"
	case syscall.EPIPE:
		return "EPIPE"
	case syscall.ENETUNREACH:
		return "ENETUNREACH"
	case syscall.EHOSTUNREACH:
		return "EHOSTUNREACH"
	case syscall.ENOBUFS:
		return "ENOBUFS"
	}
	return "errno_" + strconv.Itoa(int(e))
}

// retryBackoffMs: full-jitter backoff before attempt k+1 (200 ms doubling, capped at 4 s), for the
// ramp's retries and the reopens after a server close alike.
func retryBackoffMs(k int) float64 {
	return rand.Float64() * math.Min(4000, 200*math.Pow(2, float64(k)))
}

// ramp opens the connections of list at ratePerS with at most 512 attempts in flight
// (worker.ts ramp): an explicit local port found taken is retried once with a kernel-chosen one;
// every connection retries like an SDK, with full-jitter backoff, up to 8 attempts (a server that
// sheds hellos during a ramp answers `unavailable`; an SDK comes back, so the generator does too).
func (w *worker) ramp(list []*conn, ratePerS float64, resume bool, onOpen func(c *conn, ms float64)) connectResult {
	res := connectResult{FirstAttemptMs: nowMs()}
	var rmu sync.Mutex
	interval := 1000 / math.Max(1, ratePerS)
	const maxInFlight = 512
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	start := nowMs()
	for i, c := range list {
		target := start + float64(i)*interval
		if wait := target - nowMs(); wait > 1 {
			sleepMs(wait)
		}
		sem <- struct{}{}
		rmu.Lock()
		res.Attempted++
		rmu.Unlock()
		wg.Add(1)
		go func(c *conn) {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := nowMs()
			attempt := func() error {
				c.life.Lock()
				defer c.life.Unlock()
				if resume && c.open.Load() {
					return nil // a reopen after a server close got there first
				}
				err := c.connect(resume, 20*time.Second)
				if err != nil && c.localPort != 0 && errors.Is(err, syscall.EADDRINUSE) {
					c.localPort = 0
					w.err("local_port_in_use_retried")
					err = c.connect(resume, 20*time.Second)
				}
				return err
			}
			var err error
			for k := 0; ; k++ {
				if err = attempt(); err == nil || k >= 7 {
					break
				}
				if resume {
					w.err("reconnect_retried")
				} else {
					w.err("connect_retried")
				}
				sleepMs(retryBackoffMs(k))
			}
			now := nowMs()
			rmu.Lock()
			if err == nil {
				res.Open++
				res.LastOpenMs = now
			} else {
				res.Failed++
			}
			rmu.Unlock()
			if err == nil {
				if onOpen != nil {
					onOpen(c, now-t0)
				}
			} else {
				w.err(connectErrorCode(err))
				if debug {
					logf("worker %d: connection %d failed at +%.0f ms after %.0f ms: %v", w.init.WorkerID, c.idx, t0-start, now-t0, err)
				}
			}
		}(c)
	}
	wg.Wait()
	return res
}

// ---- sending ----

// doSend sends message k from c (its slot's conversation); a sender that is down keeps it for later.
// The message is pending before it is written, so an ack cannot overtake the bookkeeping.
func (w *worker) doSend(c *conn, conv string, k int64, buf *[]byte) {
	w.mu.Lock()
	w.pending[k] = struct{}{}
	w.mu.Unlock()
	ok := c.send(conv, k, buf)
	w.mu.Lock()
	if ok {
		w.sent++
	} else if _, mine := w.pending[k]; mine { // (a storm may have taken it over meanwhile)
		delete(w.pending, k)
		w.waiting = append(w.waiting, k)
	}
	w.mu.Unlock()
}

func (w *worker) takeWaiting() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waiting) == 0 {
		return nil
	}
	out := w.waiting
	w.waiting = nil
	return out
}

func (w *worker) resend(ks []int64, buf *[]byte) {
	slots, local := w.sched.slots, w.sched.local
	for _, k := range ks {
		si := k % int64(len(slots))
		if c := local[si]; c != nil {
			w.doSend(c, slots[si].Conv, k, buf)
		}
	}
}

// runSends: worker.ts runSends. Message k is sent by slots[k % S] when its intended time has come,
// whatever happened to earlier ones; payload {t: intended time, id: "m<k>"}.
func (w *worker) runSends(startMs, rate float64, total int64, slots []slotSpec) {
	if len(slots) == 0 || rate <= 0 {
		return
	}
	local := make([]*conn, len(slots))
	for i, s := range slots {
		local[i] = w.byIdx[s.Conn]
	}
	w.mu.Lock()
	w.sched.startMs, w.sched.rate, w.sched.slots, w.sched.local = startMs, rate, slots, local
	w.mu.Unlock()
	buf := make([]byte, 0, 256+len(w.pad))
	var next int64
	S := int64(len(slots))
	for next < total {
		due := dueCount(startMs, rate, total, nowMs())
		for ; next < due; next++ {
			si := next % S
			if c := local[si]; c != nil {
				w.doSend(c, slots[si].Conv, next, &buf)
			}
		}
		if ks := w.takeWaiting(); ks != nil {
			w.resend(ks, &buf)
		}
		wait := intendedMs(startMs, rate, next) - nowMs()
		sleepMs(math.Max(0, math.Min(wait, 50)))
	}
	until := nowMs() + 5000
	for nowMs() < until {
		ks := w.takeWaiting()
		if ks == nil {
			break
		}
		w.resend(ks, &buf)
		w.mu.Lock()
		left := len(w.waiting)
		w.mu.Unlock()
		if left > 0 {
			sleepMs(20)
		}
	}
	w.mu.Lock()
	if len(w.waiting) > 0 {
		w.errLocked("send_never_possible")
	}
	w.mu.Unlock()
}

// ---- reopen after a server close ----

// reopen: an SDK reconnects and resumes after a close that says so (a catch-up that failed under
// load, a slow consumer, a drop); so does the generator, or the messages such a connection missed
// would read as lost in the pipeline. Same backoff as the ramp's retries; the sends it had in
// flight are sent again with their idempotency keys. RealChat only: the peers have no resume.
func (w *worker) reopen(c *conn) {
	if !w.resendOn || w.closing.Load() || !c.reopening.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.reopening.Store(false)
		for k := 0; k < 8; k++ {
			sleepMs(retryBackoffMs(k))
			if w.closing.Load() {
				return
			}
			c.life.Lock()
			if c.open.Load() { // the storm's ramp reopened it meanwhile
				c.life.Unlock()
				return
			}
			c.localPort = 0
			err := c.connect(true, 20*time.Second)
			c.life.Unlock()
			if err == nil {
				w.err("reopened_after_close")
				w.requeuePendingOf(c)
				return
			}
			w.err("reopen_retried")
		}
		w.err("reopen_failed")
	}()
}

// requeuePendingOf: c's sends still awaiting their acks go out again once it is back.
func (w *worker) requeuePendingOf(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	slots, local := w.sched.slots, w.sched.local
	if len(slots) == 0 {
		return
	}
	for k := range w.pending {
		if local[k%int64(len(slots))] == c {
			delete(w.pending, k)
			w.waiting = append(w.waiting, k)
		}
	}
}

// ---- reconnect storm ----

func (w *worker) runStorm(atMs, ratePerS float64) {
	sleepMs(atMs - nowMs())
	st := &stormState{ResumedMs: []float64{}, ReopenMs: []float64{}}
	dropAt := nowMs()
	for _, c := range w.conns {
		c.localPort = 0 // the old (address, port) pairs may sit in TIME_WAIT
	}
	dropped := 0
	for _, c := range w.conns {
		if c.open.Load() {
			c.drop()
			dropped++
		}
	}
	w.mu.Lock()
	st.Dropped = dropped
	w.storm = st
	// unacked sends: RealChat re-sends them with the same idempotency key; the peers have none,
	// so theirs are given up and count as lost if never delivered
	if len(w.pending) > 0 {
		if w.resendOn {
			for k := range w.pending {
				w.waiting = append(w.waiting, k)
			}
		} else {
			w.errors["unacked_at_drop"] += int64(len(w.pending))
		}
		clear(w.pending)
	}
	w.mu.Unlock()
	var omu sync.Mutex
	r := w.ramp(w.conns, ratePerS, true, func(_ *conn, _ float64) {
		omu.Lock()
		st.ReopenMs = append(st.ReopenMs, nowMs()-dropAt)
		omu.Unlock()
	})
	w.mu.Lock()
	st.Reopened = r.Open
	st.Failed = r.Failed
	// resume completes with the last `synced` / recovered subscribe: reopen time is resume time
	st.ResumedMs = append([]float64{}, st.ReopenMs...)
	w.mu.Unlock()
}

// ---- report ----

func (w *worker) report() *workerReport {
	open := 0
	for _, c := range w.conns {
		if c.open.Load() {
			open++
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	upc := [][3]any{}
	for _, c := range w.conns {
		for i := range c.cs {
			if cs := &c.cs[i]; cs.uniq > 0 {
				upc = append(upc, [3]any{c.idx, cs.conv, cs.uniq})
			}
		}
	}
	errs := make(map[string]int64, len(w.errors)+1)
	for k, v := range w.errors {
		errs[k] = v
	}
	if len(w.pending) > 0 {
		errs["unacked_at_end"] = int64(len(w.pending))
	}
	apc := make(map[string]int64, len(w.ackedPerConv))
	for k, v := range w.ackedPerConv {
		apc[k] = v
	}
	r := &workerReport{
		WorkerID:          w.init.WorkerID,
		Hist:              encodeHist(w.hist),
		Sent:              w.sent,
		Acked:             w.acked,
		Delivered:         w.delivered,
		Duplicates:        w.duplicates,
		Gaps:              w.gaps,
		Errors:            errs,
		AckedPerConv:      apc,
		UniquePerConnConv: upc,
		FirstRecvMs:       w.firstRecv,
		LastRecvMs:        w.lastRecv,
		Open:              open,
	}
	if w.storm != nil {
		s := *w.storm
		r.Storm = &s
	}
	return r
}

// tickLoop: one shared 1 s ticker for every connection's heartbeat (worker.ts setInterval).
func (w *worker) tickLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for range t.C {
		now := nowMs()
		for _, c := range w.conns {
			c.tick(now)
		}
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, errTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
