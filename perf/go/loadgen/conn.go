package main

// One simulated client connection (perf/clients/base.ts + realchat.ts + centrifugo.ts): a WebSocket
// from an explicit loopback source address (and port, when given), read by the worker's epoll loop
// (poller.go), written under a per-connection mutex.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// convState: what the worker and the client know about one conversation of one connection
// (guarded by worker.mu).
type convState struct {
	conv     string
	seenSeq  int64 // worker.ts `seen`: last sequence counted
	uniq     int64 // unique deliveries
	last     int64 // client `last`: highest sequence/offset seen (what resume asks from)
	hasLast  bool
	epoch    string // Centrifugo stream epoch
	hasEpoch bool
}

// socket: one open WebSocket of a connection, from the handshake until the epoll loop closes it.
type socket struct {
	fd   int
	gen  int32
	a    *attempt
	h    frameHandler
	done chan struct{} // closed once the loop has closed the fd
	gone bool          // set by the loop (under conn.wmu) when it closes the fd
	// epoll loop only
	pending    []byte // partial frame carried to the next read
	frag       []byte // fragmented message being assembled
	fragmented bool
	closeCode  int
}

type conn struct {
	w         *worker
	slot      int // index in worker.conns (epoll data)
	idx       int
	tgt       target
	token     string
	userID    string
	own       int         // cs[:own] are the connection's conversations, in spec order
	cs        []convState // + any other conversation a frame named (guarded by w.mu)
	localIP   net.IP
	localPort int // 0: the kernel picks one

	open       atomic.Bool
	closedByUs atomic.Bool
	reopening  atomic.Bool // a reopen after a server close is under way (worker.reopen)
	life       sync.Mutex  // one connect at a time: the storm's ramp and a reopen may meet
	sock       atomic.Pointer[socket]
	gen        int32

	wmu         sync.Mutex // writes, heartbeat fields, socket.gone
	wbuf        []byte
	heartbeatMs float64
	nextPing    float64

	readerDone chan struct{}   // the last socket's done
	nextID     atomic.Int64    // Centrifugo command ids
	pendingPub map[int64]int64 // Centrifugo publish command id -> message k (guarded by w.mu)
}

func newConn(w *worker, slot int, s connSpec) (*conn, error) {
	ip := net.ParseIP(s.LocalAddress)
	if ip == nil {
		return nil, fmt.Errorf("connection %d: bad local address %q", s.Idx, s.LocalAddress)
	}
	u := s.URL
	if u == "" {
		u = w.init.URL
	}
	t, err := parseTarget(u)
	if err != nil {
		return nil, fmt.Errorf("connection %d: %v", s.Idx, err)
	}
	c := &conn{w: w, slot: slot, idx: s.Idx, tgt: t, token: s.Token, userID: s.UserID, localIP: ip, localPort: s.LocalPort, own: len(s.Convs)}
	c.cs = make([]convState, len(s.Convs))
	for i, cv := range s.Convs {
		c.cs[i].conv = cv
	}
	if w.target == "centrifugo" {
		c.pendingPub = map[int64]int64{}
	}
	return c, nil
}

// convLocked finds (or adds) the state of the conversation named by b; w.mu held.
func (c *conn) convLocked(b []byte) *convState {
	for i := range c.cs {
		if c.cs[i].conv == string(b) {
			return &c.cs[i]
		}
	}
	c.cs = append(c.cs, convState{conv: string(b)})
	return &c.cs[len(c.cs)-1]
}

// advanceLocked: client.advance — the highest sequence/offset seen, for resume.
func (cs *convState) advanceLocked(seq int64) {
	if !cs.hasLast || seq > cs.last {
		cs.last = seq
		cs.hasLast = true
	}
}

// ---- transport ----

var errNotOpen = errors.New("socket closed")

// writeFrame sends one frame on the connection's current socket without waiting for room in a full
// socket buffer (the epoll loop and the heartbeat ticker must never block on one socket).
func (c *conn) writeFrame(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeFrameLocked(op, payload, false)
}

func (c *conn) writeText(b []byte) error { return c.writeFrame(opText, b) }

var errWouldBlock = errors.New("socket buffer full")

// writeFrameLocked: wait says whether a full socket buffer is waited for (up to 10 s); a frame
// partly written is always finished, so the stream stays framed.
func (c *conn) writeFrameLocked(op byte, payload []byte, wait bool) error {
	s := c.sock.Load()
	if s == nil || s.gone {
		return errNotOpen
	}
	c.wbuf = appendClientFrame(c.wbuf[:0], op, payload, rand.Uint32())
	b := c.wbuf
	var until time.Time
	for len(b) > 0 {
		n, err := syscall.Write(s.fd, b)
		if n > 0 {
			b = b[n:]
			continue
		}
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN: // socket buffer full: the server is not reading; wait a little
			if !wait && len(b) == len(c.wbuf) {
				return errWouldBlock
			}
			if until.IsZero() {
				until = time.Now().Add(10 * time.Second)
			} else if time.Now().After(until) {
				return errTimeout
			}
			time.Sleep(time.Millisecond)
			continue
		}
		return err
	}
	if cap(c.wbuf) > 4096 {
		c.wbuf = nil
	}
	return nil
}

// shutdown asks the epoll loop to close the socket (it reads EOF and tears it down).
func (c *conn) shutdownLocked() {
	if s := c.sock.Load(); s != nil && !s.gone {
		_ = syscall.Shutdown(s.fd, syscall.SHUT_RDWR)
	}
}

// drop: abrupt (no close handshake), like ws.terminate().
func (c *conn) drop() {
	c.closedByUs.Store(true)
	c.open.Store(false)
	c.wmu.Lock()
	c.shutdownLocked()
	c.wmu.Unlock()
}

// close: close frame 1000, then the socket goes.
func (c *conn) close() {
	c.closedByUs.Store(true)
	c.open.Store(false)
	c.wmu.Lock()
	_ = c.writeFrameLocked(opClose, []byte{0x03, 0xe8}, false)
	c.shutdownLocked()
	c.wmu.Unlock()
}

// ---- connect ----

// attempt: one connect() in progress (base.ts ConnectAttempt); it settles once.
type attempt struct {
	settled atomic.Bool
	res     chan error
}

func (a *attempt) succeed(c *conn) {
	if a.settled.CompareAndSwap(false, true) {
		c.open.Store(true)
		a.res <- nil
	}
}

func (a *attempt) fail(err error) {
	if a.settled.CompareAndSwap(false, true) {
		a.res <- err
	}
}

// frameHandler handles the data frames of one socket; only the epoll loop calls frame().
type frameHandler interface {
	start() error // first frame(s) once the socket is open
	frame(b []byte)
}

// connect: connect, authenticate and join/subscribe every conversation; with resume, ask for
// what was missed. Returns once connected (and resumed) or failed or timed out.
func (c *conn) connect(resume bool, timeout time.Duration) error {
	if done := c.readerDone; done != nil {
		// the previous socket must be closed before a new one owns the conversation state
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			return errors.New("previous_socket_stuck")
		}
	}
	c.closedByUs.Store(false)
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	fd, rest, err := handshake(ctx, c.tgt, &net.TCPAddr{IP: c.localIP, Port: c.localPort})
	if err != nil {
		if ctx.Err() != nil {
			return errTimeout
		}
		return err
	}
	a := &attempt{res: make(chan error, 1)}
	c.gen++
	s := &socket{fd: fd, gen: c.gen, a: a, done: make(chan struct{})}
	if c.w.target == "centrifugo" {
		s.h = newCentrifugoSession(c, a, resume)
	} else {
		s.h = newRealChatSession(c, a, resume, c.w.target == "ws")
	}
	c.readerDone = s.done
	c.sock.Store(s)
	if len(rest) > 0 { // bytes the server sent right after its 101 (none expected)
		if code, closed := c.feed(s, rest); closed {
			a.fail(fmt.Errorf("closed %d", code))
		}
	}
	if err := c.w.poller.add(fd, c.slot, s.gen); err != nil {
		c.sock.CompareAndSwap(s, nil)
		_ = syscall.Close(fd)
		close(s.done)
		return err
	}
	if err := s.h.start(); err != nil {
		a.fail(err)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case err = <-a.res:
	case <-timer.C:
		a.fail(errTimeout)
		err = <-a.res
	}
	if err != nil { // abandon: no socket outlives a failed connect
		c.wmu.Lock()
		c.shutdownLocked()
		c.wmu.Unlock()
	}
	return err
}

// closed: the transport closed; fails the attempt in progress, afterwards reports the loss
// (unless we closed it ourselves).
func (c *conn) closed(a *attempt, code int) {
	if !a.settled.Load() {
		// succeed() only runs on the epoll loop, as this does: the attempt can only have failed meanwhile
		c.open.Store(false)
		a.fail(fmt.Errorf("closed %d", code))
		return
	}
	wasOpen := c.open.Swap(false)
	if !c.closedByUs.Load() && wasOpen {
		c.w.err("closed_" + strconv.Itoa(code))
		if reconnectable(code) {
			c.w.reopen(c)
		}
	}
}

// reconnectable: the close codes after which a client reconnects and resumes (docs/protocol.md,
// "Close codes": 4000-4499, going away, and a drop).
func reconnectable(code int) bool {
	return code == 1001 || code == 1006 || (code >= 4000 && code < 4500)
}

// tick: heartbeat (base.ts tick), called about once a second for every connection.
func (c *conn) tick(now float64) {
	if c.w.target == "centrifugo" {
		return // the server pings, the client answers
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.heartbeatMs > 0 && c.open.Load() && now >= c.nextPing {
		c.nextPing = now + c.heartbeatMs
		_ = c.writeFrameLocked(opText, pingFrame, false)
	}
}

var pingFrame = []byte(`{"type":"ping"}`)

// send: message k in conversation conv; false when the connection is not open.
func (c *conn) send(conv string, k int64, bufp *[]byte) bool {
	w := c.w
	b := (*bufp)[:0]
	var id int64
	if w.target == "centrifugo" {
		id = c.nextID.Add(1)
		b = append(b, `{"id":`...)
		b = strconv.AppendInt(b, id, 10)
		b = append(b, `,"publish":{"channel":"chat:`...)
		b = append(b, conv...)
		b = append(b, `","data":`...)
		b = w.appendPayload(b, k)
		b = append(b, `}}`...)
	} else {
		b = append(b, `{"type":"send","conversation_id":"`...)
		b = append(b, conv...)
		b = append(b, `","idempotency_key":"`...)
		b = append(b, w.keyHead...)
		b = strconv.AppendInt(b, k, 10)
		b = append(b, `","payload":`...)
		b = w.appendPayload(b, k)
		b = append(b, '}')
	}
	*bufp = b
	c.wmu.Lock()
	if !c.open.Load() {
		c.wmu.Unlock()
		return false
	}
	if id != 0 {
		w.mu.Lock()
		c.pendingPub[id] = k
		w.mu.Unlock()
	}
	err := c.writeFrameLocked(opText, b, true)
	c.wmu.Unlock()
	if err != nil {
		if id != 0 {
			w.mu.Lock()
			delete(c.pendingPub, id)
			w.mu.Unlock()
		}
		return false
	}
	return true
}

// appendPayload: {"t":<intended ms>,"id":"m<k>"[,"pad":"xx.."]}, as JSON.stringify writes it.
func (w *worker) appendPayload(b []byte, k int64) []byte {
	b = append(b, `{"t":`...)
	b = appendJSONNumber(b, intendedMs(w.sched.startMs, w.sched.rate, k))
	b = append(b, `,"id":"m`...)
	b = strconv.AppendInt(b, k, 10)
	b = append(b, '"')
	if w.pad != "" {
		b = append(b, `,"pad":"`...)
		b = append(b, w.pad...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// ---- RealChat v1 (and the bare ws peer: same frames plus `join`) ----

type realChatSession struct {
	c         *conn
	a         *attempt
	resume    bool
	peerMode  bool
	welcomed  bool
	waitCount int
	waiting   []bool // own conversations still waiting for `synced`
}

func newRealChatSession(c *conn, a *attempt, resume, peerMode bool) *realChatSession {
	return &realChatSession{c: c, a: a, resume: resume, peerMode: peerMode}
}

func (s *realChatSession) start() error {
	c := s.c
	// resume: one entry per conversation (from the last sequence seen); the server answers each with `synced`
	hello := struct {
		Type   string            `json:"type"`
		Token  string            `json:"token"`
		Resume *map[string]int64 `json:"resume,omitempty"`
	}{Type: "hello", Token: c.token}
	if s.resume && !s.peerMode {
		resume := make(map[string]int64, c.own)
		s.waiting = make([]bool, c.own)
		c.w.mu.Lock()
		for i := 0; i < c.own; i++ {
			cs := &c.cs[i]
			resume[cs.conv] = 0
			if cs.hasLast {
				resume[cs.conv] = cs.last
			}
			if !s.waiting[i] {
				s.waiting[i] = true
				s.waitCount++
			}
		}
		c.w.mu.Unlock()
		hello.Resume = &resume
	}
	b, err := json.Marshal(hello)
	if err != nil {
		return err
	}
	return c.writeText(b)
}

func (s *realChatSession) frame(b []byte) {
	c, w := s.c, s.c.w
	o, ok := objectOf(b)
	if !ok {
		w.err("bad_json_from_server")
		return
	}
	var typ, msg, key, conv, code []byte
	dup := false
	hb := int64(-1)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "type":
			typ, _ = strOf(v)
		case "message":
			msg = v
		case "idempotency_key":
			key, _ = strOf(v)
		case "duplicate":
			dup = isTrue(v)
		case "conversation_id":
			conv, _ = strOf(v)
		case "code":
			code, _ = strOf(v)
		case "heartbeat_interval_ms":
			if n, ok := intOf(v); ok {
				hb = n
			}
		}
	}
	if o.bad {
		w.err("bad_json_from_server")
		return
	}
	switch string(typ) {
	case "message":
		s.message(msg)
	case "ack":
		if key != nil {
			k, known := w.keyIndex(key)
			w.onAck(k, known, dup)
		}
	case "welcome":
		s.welcomed = true
		c.wmu.Lock()
		c.heartbeatMs = 0
		c.nextPing = nowMs()
		if hb > 0 {
			c.heartbeatMs = float64(hb)
			c.nextPing += float64(hb) * (0.5 + rand.Float64()*0.4)
		}
		c.wmu.Unlock()
		if s.peerMode {
			j := struct {
				Type string   `json:"type"`
				IDs  []string `json:"conversation_ids"`
			}{Type: "join", IDs: make([]string, 0, c.own)}
			for i := 0; i < c.own; i++ {
				j.IDs = append(j.IDs, c.cs[i].conv)
			}
			jb, _ := json.Marshal(j)
			if err := c.writeText(jb); err != nil {
				s.a.fail(err)
			}
		} else if s.waitCount == 0 {
			s.a.succeed(c)
		}
	case "joined":
		s.a.succeed(c)
	case "synced":
		if conv != nil {
			for i := 0; i < c.own && i < len(s.waiting); i++ {
				if s.waiting[i] && c.cs[i].conv == string(conv) {
					s.waiting[i] = false
					s.waitCount--
				}
			}
		}
		if s.welcomed && s.waitCount == 0 {
			s.a.succeed(c)
		}
	case "error":
		if code == nil {
			w.err("ws_error_unknown")
		} else {
			w.err("ws_error_" + string(code))
		}
	case "reconnect":
		w.err("server_reconnect_advice")
	}
}

// message: {conversation_id, sequence_number, payload: {t, id}, ...}
func (s *realChatSession) message(m []byte) {
	o, ok := objectOf(m)
	if !ok {
		return
	}
	var conv, payload []byte
	var seq int64
	hasSeq := false
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "conversation_id":
			conv, _ = strOf(v)
		case "sequence_number":
			seq, hasSeq = intOf(v)
		case "payload":
			payload = v
		}
	}
	if len(conv) == 0 || payload == nil || string(payload) == "null" {
		return
	}
	s.c.received(conv, seq, hasSeq, payload)
}

// received: base.ts received (advance, then the worker's onMessage).
func (c *conn) received(conv []byte, seq int64, hasSeq bool, payload []byte) {
	t, hasT := payloadTime(payload)
	now := nowMs()
	w := c.w
	w.mu.Lock()
	cs := c.convLocked(conv)
	if hasSeq {
		cs.advanceLocked(seq)
	}
	w.onMessageLocked(cs, seq, hasSeq, t, hasT, now)
	w.mu.Unlock()
}

// payloadTime: payload.t when it is a number.
func payloadTime(p []byte) (float64, bool) {
	o, ok := objectOf(p)
	if !ok {
		return 0, false
	}
	for {
		k, v, ok := o.next()
		if !ok {
			return 0, false
		}
		if string(k) == "t" {
			return floatOf(v)
		}
	}
}

// ---- Centrifugo client protocol (JSON), without an SDK ----

type centrifugoSession struct {
	c          *conn
	a          *attempt
	resume     bool
	connectID  int64
	pendingSub map[int64]int // command id -> own conversation index
}

const cfPrefix = "chat:"

func newCentrifugoSession(c *conn, a *attempt, resume bool) *centrifugoSession {
	c.w.mu.Lock()
	clear(c.pendingPub)
	c.w.mu.Unlock()
	return &centrifugoSession{c: c, a: a, resume: resume, pendingSub: map[int64]int{}}
}

func (s *centrifugoSession) start() error {
	s.connectID = s.c.nextID.Add(1)
	b := []byte(`{"id":` + strconv.FormatInt(s.connectID, 10) + `,"connect":{"token":` + strconv.Quote(s.c.token) + `,"name":"realchat-perf"}}`)
	return s.c.writeText(b)
}

var emptyObject = []byte(`{}`)

func (s *centrifugoSession) frame(b []byte) {
	for len(b) > 0 {
		line := b
		rest := []byte(nil)
		for i, ch := range b {
			if ch == '\n' {
				line, rest = b[:i], b[i+1:]
				break
			}
		}
		b = rest
		if len(line) > 0 {
			s.reply(line)
		}
	}
}

func (s *centrifugoSession) reply(line []byte) {
	c, w := s.c, s.c.w
	o, ok := objectOf(line)
	if !ok {
		w.err("bad_json_from_server")
		return
	}
	var id int64
	hasID := false
	var errV, push, connectV, sub []byte
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "id":
			id, hasID = intOf(v)
		case "error":
			errV = v
		case "push":
			push = v
		case "connect":
			connectV = v
		case "subscribe":
			sub = v
		}
	}
	if o.bad {
		w.err("bad_json_from_server")
		return
	}
	if !hasID && push == nil && errV == nil && connectV == nil {
		_ = c.writeText(emptyObject) // ping -> pong
		return
	}
	if push != nil {
		s.push(push)
		return
	}
	if hasID && id == s.connectID {
		if errV != nil {
			s.a.fail(fmt.Errorf("connect error %d", errCode(errV)))
			return
		}
		// subscribe to every conversation channel, recovering from the last offset on resume
		var cmds []byte
		w.mu.Lock()
		for i := 0; i < c.own; i++ {
			cs := &c.cs[i]
			cid := c.nextID.Add(1)
			s.pendingSub[cid] = i
			if len(cmds) > 0 {
				cmds = append(cmds, '\n')
			}
			cmds = append(cmds, `{"id":`...)
			cmds = strconv.AppendInt(cmds, cid, 10)
			cmds = append(cmds, `,"subscribe":{"channel":`...)
			cmds = strconv.AppendQuote(cmds, cfPrefix+cs.conv)
			if s.resume && cs.hasEpoch {
				var off int64
				if cs.hasLast {
					off = cs.last
				}
				cmds = append(cmds, `,"recover":true,"epoch":`...)
				cmds = strconv.AppendQuote(cmds, cs.epoch)
				cmds = append(cmds, `,"offset":`...)
				cmds = strconv.AppendInt(cmds, off, 10)
			}
			cmds = append(cmds, `}}`...)
		}
		w.mu.Unlock()
		if len(cmds) == 0 {
			s.a.succeed(c)
		} else if err := c.writeText(cmds); err != nil {
			s.a.fail(err)
		}
		return
	}
	if hasID {
		if ci, ok := s.pendingSub[id]; ok {
			delete(s.pendingSub, id)
			if errV != nil {
				code := errCode(errV)
				w.err("cf_subscribe_" + strconv.Itoa(code))
				s.a.fail(fmt.Errorf("subscribe error %d", code))
				return
			}
			s.subscribed(ci, sub)
			if len(s.pendingSub) == 0 {
				s.a.succeed(c)
			}
			return
		}
		w.mu.Lock()
		k, ok := c.pendingPub[id]
		if ok {
			delete(c.pendingPub, id)
		}
		w.mu.Unlock()
		if ok {
			if errV != nil {
				w.err("cf_publish_" + strconv.Itoa(errCode(errV)))
			} else {
				w.onAck(k, true, false)
			}
			return
		}
	}
	if errV != nil {
		w.err("cf_error_" + strconv.Itoa(errCode(errV)))
	}
}

func errCode(v []byte) int {
	o, ok := objectOf(v)
	if !ok {
		return 0
	}
	for {
		k, val, ok := o.next()
		if !ok {
			return 0
		}
		if string(k) == "code" {
			n, _ := intOf(val)
			return int(n)
		}
	}
}

// push: {channel, pub: {data, offset}} or {disconnect: {code}}
func (s *centrifugoSession) push(p []byte) {
	o, ok := objectOf(p)
	if !ok {
		return
	}
	var channel, pub, disc []byte
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "channel":
			channel, _ = strOf(v)
		case "pub":
			pub = v
		case "disconnect":
			disc = v
		}
	}
	if pub != nil && len(channel) > 0 {
		conv := channel
		if len(conv) >= len(cfPrefix) && string(conv[:len(cfPrefix)]) == cfPrefix {
			conv = conv[len(cfPrefix):]
		}
		s.deliver(conv, -1, pub)
	} else if disc != nil {
		s.c.w.err("cf_disconnect_" + strconv.Itoa(errCode(disc)))
	}
}

// deliver a publication: a payload object is a delivery, anything else only advances the offset.
// ci >= 0 names an own conversation directly (subscribe replies).
func (s *centrifugoSession) deliver(conv []byte, ci int, pub []byte) {
	o, ok := objectOf(pub)
	if !ok {
		return
	}
	var data []byte
	var off int64
	hasOff := false
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "data":
			data = v
		case "offset":
			off, hasOff = intOf(v)
		}
	}
	c, w := s.c, s.c.w
	isObj := false
	if i := skipWS(data, 0); i < len(data) && data[i] == '{' {
		isObj = true
	}
	var t float64
	hasT := false
	if isObj {
		t, hasT = payloadTime(data)
	}
	now := nowMs()
	w.mu.Lock()
	var cs *convState
	if ci >= 0 {
		cs = &c.cs[ci]
	} else {
		cs = c.convLocked(conv)
	}
	if hasOff {
		cs.advanceLocked(off)
	}
	if isObj {
		w.onMessageLocked(cs, off, hasOff, t, hasT, now)
	}
	w.mu.Unlock()
}

// subscribed: a subscribe reply {epoch, offset, recovered, was_recovering, publications}.
func (s *centrifugoSession) subscribed(ci int, sub []byte) {
	c, w := s.c, s.c.w
	var epoch, pubs []byte
	hasEpoch, hasOff := false, false
	var off int64
	recovered, wasRecovering := false, false
	if o, ok := objectOf(sub); ok {
		for {
			k, v, ok := o.next()
			if !ok {
				break
			}
			switch string(k) {
			case "epoch":
				epoch, hasEpoch = strOf(v)
			case "offset":
				off, hasOff = intOf(v)
			case "recovered":
				recovered = isTrue(v)
			case "was_recovering":
				wasRecovering = isTrue(v)
			case "publications":
				pubs = v
			}
		}
	}
	if hasEpoch {
		w.mu.Lock()
		c.cs[ci].epoch = string(epoch)
		c.cs[ci].hasEpoch = true
		w.mu.Unlock()
	}
	if s.resume && wasRecovering && !recovered {
		w.err("cf_not_recovered")
	}
	if a, ok := arrayOf(pubs); ok {
		for {
			p, ok := a.next()
			if !ok {
				break
			}
			s.deliver(nil, ci, p)
		}
	}
	if hasOff {
		w.mu.Lock()
		if cs := &c.cs[ci]; !cs.hasLast {
			cs.last = off
			cs.hasLast = true
		}
		w.mu.Unlock()
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[loadgen] "+format+"\n", args...)
}
