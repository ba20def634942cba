package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFraming(t *testing.T) {
	for _, n := range []int{0, 5, 125, 126, 65535, 65536, 70000} {
		payload := bytes.Repeat([]byte{'a'}, n)
		f := appendClientFrame(nil, opText, payload, 0xdeadbeef)
		// a client frame is masked; parseFrame unmasks it (servers never mask, but it is accepted)
		fin, op, got, used, ok, err := parseFrame(f)
		if err != nil || !ok || !fin || op != opText || used != len(f) || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: fin %v op %d used %d/%d ok %v err %v equal %v", n, fin, op, used, len(f), ok, err, bytes.Equal(got, payload))
		}
		// every strict prefix is incomplete, never an error
		for _, cut := range []int{0, 1, 2, 3, len(f) - 1} {
			if cut < 0 || cut >= len(f) {
				continue
			}
			if _, _, _, _, ok, err := parseFrame(f[:cut]); ok || err != nil {
				t.Fatalf("n=%d cut %d: ok %v err %v", n, cut, ok, err)
			}
		}
	}
	if _, _, _, _, _, err := parseFrame([]byte{0x89, 126, 0, 200}); err == nil {
		t.Fatal("a control frame over 125 bytes is a protocol error")
	}
	if acceptKey("dGhlIHNhbXBsZSBub25jZQ==") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" { // RFC 6455 section 1.3
		t.Fatal("accept key")
	}
}

// serverFrame: an unmasked server frame.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	n := len(payload)
	switch {
	case n < 126:
		out = append(out, byte(n))
	case n < 1<<16:
		out = append(out, 126, byte(n>>8), byte(n))
	default:
		out = append(out, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, payload...)
}

// peerServer: the bare-ws peer's protocol (hello/welcome, join/joined, send -> message to every
// member + ack), with the first message of each connection delivered fragmented and a ping first.
type peerServer struct {
	mu      sync.Mutex
	seq     map[string]int
	members map[string][]net.Conn
	peers   []string // remote addresses seen
	conns   []net.Conn
}

// closeFirst closes the first connection it accepted with a close frame carrying code.
func (p *peerServer) closeFirst(code int) {
	p.mu.Lock()
	nc := p.conns[0]
	p.mu.Unlock()
	_, _ = nc.Write(serverFrame(true, opClose, []byte{byte(code >> 8), byte(code)}))
	_ = nc.Close()
}

func (p *peerServer) serve(t *testing.T) string {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	p.seq = map[string]int{}
	p.members = map[string][]net.Conn{}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go p.conn(nc)
		}
	}()
	return "ws://" + ln.Addr().String() + "/ws"
}

func (p *peerServer) conn(nc net.Conn) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.peers = append(p.peers, nc.RemoteAddr().String())
	p.conns = append(p.conns, nc)
	p.mu.Unlock()
	_, _ = io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
		acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n")
	var wmu sync.Mutex
	write := func(b []byte) { wmu.Lock(); _, _ = nc.Write(b); wmu.Unlock() }
	write(serverFrame(true, opPing, []byte("hb")))
	first := true
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		n := int(hdr[1] & 0x7f)
		if n == 126 {
			var ext [2]byte
			_, _ = io.ReadFull(br, ext[:])
			n = int(ext[0])<<8 | int(ext[1])
		}
		var mask [4]byte
		_, _ = io.ReadFull(br, mask[:])
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			return
		}
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
		if hdr[0]&0x0f != opText {
			continue
		}
		var f struct {
			Type           string          `json:"type"`
			IDs            []string        `json:"conversation_ids"`
			ConversationID string          `json:"conversation_id"`
			Key            string          `json:"idempotency_key"`
			Payload        json.RawMessage `json:"payload"`
		}
		_ = json.Unmarshal(payload, &f)
		switch f.Type {
		case "hello":
			write(serverFrame(true, opText, []byte(`{"type":"welcome","heartbeat_interval_ms":30000}`)))
		case "join":
			p.mu.Lock()
			for _, id := range f.IDs {
				p.members[id] = append(p.members[id], nc)
			}
			p.mu.Unlock()
			write(serverFrame(true, opText, []byte(`{"type":"joined"}`)))
		case "send":
			p.mu.Lock()
			p.seq[f.ConversationID]++
			seq := p.seq[f.ConversationID]
			ms := append([]net.Conn(nil), p.members[f.ConversationID]...)
			p.mu.Unlock()
			msg, _ := json.Marshal(map[string]any{"type": "message", "message": map[string]any{"conversation_id": f.ConversationID, "sequence_number": seq, "payload": f.Payload}})
			for _, m := range ms {
				if m == nc && first { // fragmented: text + continuation
					first = false
					write(append(serverFrame(false, opText, msg[:10]), serverFrame(true, opContinuation, msg[10:])...))
					continue
				}
				b := serverFrame(true, opText, msg)
				if m == nc {
					write(b)
				} else {
					_, _ = m.Write(b) // (races with m's own writes are fine for this test)
				}
			}
			write(serverFrame(true, opText, []byte(`{"type":"ack","idempotency_key":"`+f.Key+`","duplicate":false}`)))
		}
	}
}

func TestEndToEndAgainstPeer(t *testing.T) {
	var ps peerServer
	url := ps.serve(t)
	w, err := newWorker(workerInit{WorkerID: 3, Target: "ws", URL: url, RunID: "r1", Conns: []connSpec{
		{Idx: 0, UserID: "a", Token: "a", Convs: []string{"c1"}, LocalAddress: "127.0.0.2"},
		{Idx: 1, UserID: "b", Token: "b", Convs: []string{"c1"}, LocalAddress: "127.0.0.3", LocalPort: 31999},
	}})
	if err != nil {
		t.Fatal(err)
	}
	go w.poller.run()
	res := w.ramp(w.conns, 1000, false, nil)
	if res.Open != 2 || res.Failed != 0 {
		t.Fatalf("connect: %+v errors %v", res, w.errors)
	}
	ps.mu.Lock()
	peers := strings.Join(ps.peers, " ")
	ps.mu.Unlock()
	if !strings.Contains(peers, "127.0.0.2:") || !strings.Contains(peers, "127.0.0.3:31999") {
		t.Fatalf("source addresses/ports not used: %s", peers)
	}
	start := nowMs()
	w.runSends(start, 200, 20, []slotSpec{{Conn: 0, Conv: "c1"}, {Conn: 1, Conv: "c1"}})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r := w.report()
		if r.Acked == 20 && r.Delivered == 40 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := w.report()
	if r.Sent != 20 || r.Acked != 20 || r.Delivered != 40 || r.Duplicates != 0 || r.Gaps != 0 || r.Open != 2 || len(r.Errors) != 0 {
		t.Fatalf("report: sent %d acked %d delivered %d dup %d gaps %d open %d errors %v", r.Sent, r.Acked, r.Delivered, r.Duplicates, r.Gaps, r.Open, r.Errors)
	}
	if r.AckedPerConv["c1"] != 20 || len(r.UniquePerConnConv) != 2 || r.Hist == "" {
		t.Fatalf("per conversation: %v %v", r.AckedPerConv, r.UniquePerConnConv)
	}
	// drop and reconnect (the storm path): both come back, nothing is reported lost by the worker
	for _, c := range w.conns {
		c.localPort = 0
		c.drop()
	}
	res = w.ramp(w.conns, 1000, true, nil)
	if res.Open != 2 {
		t.Fatalf("reconnect: %+v errors %v", res, w.errors)
	}
	for _, c := range w.conns {
		c.close()
	}
	time.Sleep(50 * time.Millisecond)
	if r := w.report(); r.Open != 0 || len(r.Errors) != 0 {
		t.Fatalf("after close: open %d errors %v", r.Open, r.Errors)
	}
}

// A connection the server closes with a "reconnect and resume" code comes back on its own (as an
// SDK's would), for RealChat only; one closed otherwise stays closed.
func TestReopenAfterServerClose(t *testing.T) {
	for _, tc := range []struct {
		code     int
		resendOn bool
		reopened bool
	}{{4004, true, true}, {4500, true, false}, {4004, false, false}} {
		var ps peerServer
		url := ps.serve(t)
		w, err := newWorker(workerInit{WorkerID: 1, Target: "ws", URL: url, RunID: "r1", Conns: []connSpec{
			{Idx: 0, UserID: "a", Token: "a", Convs: []string{"c1"}, LocalAddress: "127.0.0.2"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		w.resendOn = tc.resendOn // the RealChat behaviour, against the bare-ws peer
		go w.poller.run()
		if res := w.ramp(w.conns, 1000, false, nil); res.Open != 1 {
			t.Fatalf("connect: %+v errors %v", res, w.errors)
		}
		ps.closeFirst(tc.code)
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && w.report().Errors["reopened_after_close"] == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		r := w.report()
		closed := r.Errors["closed_"+strconv.Itoa(tc.code)]
		if closed != 1 || (r.Errors["reopened_after_close"] == 1) != tc.reopened || (r.Open == 1) != tc.reopened {
			t.Fatalf("close %d (resend %v): open %d errors %v", tc.code, tc.resendOn, r.Open, r.Errors)
		}
		w.closing.Store(true)
		for _, c := range w.conns {
			c.close()
		}
	}
}
