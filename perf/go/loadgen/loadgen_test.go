package main

import (
	"encoding/json"
	"math"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

const messageFrame = `{"type":"message","message":{"message_id":"0b6c7c4e-1c0e-4b7a-9d36-3f7d6f0e9a11","conversation_id":"c-1","sender_id":"u \"q\"","sequence_number":42,"payload":{"t":1764300000123.4568,"id":"m7","pad":"x{y}[z]"},"created_at":"2026-11-28T03:08:45.000Z","idempotency_key":"perf-ab12-7"}}`

func TestObjectWalk(t *testing.T) {
	o, ok := objectOf([]byte(messageFrame))
	if !ok {
		t.Fatal("not an object")
	}
	var keys []string
	var msg []byte
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		keys = append(keys, string(k))
		if string(k) == "message" {
			msg = v
		}
	}
	if o.bad || len(keys) != 2 || keys[0] != "type" || keys[1] != "message" {
		t.Fatalf("keys %v bad %v", keys, o.bad)
	}
	var m map[string]any
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatalf("message value is not the whole object: %v", err)
	}
	tm, ok := payloadTime([]byte(`{ "id" : "m1" , "t" : 1764300000123.4568 }`))
	if !ok || tm != 1764300000123.4568 {
		t.Fatalf("payload t %v %v", tm, ok)
	}
	if _, ok := payloadTime([]byte(`{"t":"soon"}`)); ok {
		t.Fatal("a string t is not a time")
	}
	for _, bad := range []string{`{"type":"message"`, `{"type" "x"}`, `{"a":[1,2}`, `{"a":"x`, `{"a":tru}`} {
		o, _ := objectOf([]byte(bad))
		for {
			if _, _, ok := o.next(); !ok {
				break
			}
		}
		if !o.bad {
			t.Errorf("%s: not flagged as malformed", bad)
		}
	}
	a, _ := arrayOf([]byte(`[ {"offset":1}, {"offset":2,"data":{"t":5}} ,3]`))
	n := 0
	for {
		if _, ok := a.next(); !ok {
			break
		}
		n++
	}
	if n != 3 || a.bad {
		t.Fatalf("array elements %d bad %v", n, a.bad)
	}
	if v, ok := intOf([]byte("-17")); !ok || v != -17 {
		t.Fatal(v)
	}
	if v, ok := intOf([]byte("3e2")); !ok || v != 300 {
		t.Fatal(v)
	}
}

func testWorker(target string) *worker {
	w, err := newWorker(workerInit{WorkerID: 0, Target: target, URL: "ws://127.0.0.1:1/v1/ws", RunID: "ab12", Conns: []connSpec{
		{Idx: 4, UserID: "u4", Token: "t", Convs: []string{"c-1"}, LocalAddress: "127.0.0.2"},
	}})
	if err != nil {
		panic(err)
	}
	return w
}

func TestRealChatFrames(t *testing.T) {
	w := testWorker("realchat")
	c := w.conns[0]
	s := newRealChatSession(c, &attempt{res: make(chan error, 1)}, false, false)
	s.frame([]byte(messageFrame))
	s.frame([]byte(messageFrame)) // same sequence: a duplicate
	s.frame([]byte(`{"type":"message","message":{"conversation_id":"c-1","sequence_number":45,"payload":{"t":1,"id":"m8"}}}`))
	if w.delivered != 2 || w.duplicates != 1 || w.gaps != 1 || c.cs[0].uniq != 2 || c.cs[0].last != 45 {
		t.Fatalf("delivered %d duplicates %d gaps %d uniq %d last %d", w.delivered, w.duplicates, w.gaps, c.cs[0].uniq, c.cs[0].last)
	}
	if w.hist.TotalCount() != 2 {
		t.Fatal("latency not recorded")
	}
	// acks: ours by message index, others ignored
	w.sched.slots = []slotSpec{{Conn: 4, Conv: "c-1"}}
	w.pending[7] = struct{}{}
	s.frame([]byte(`{"type":"ack","idempotency_key":"perf-ab12-7","conversation_id":"c-1","sequence_number":42,"duplicate":false}`))
	s.frame([]byte(`{"type":"ack","idempotency_key":"perf-ab12-7","duplicate":true}`))
	s.frame([]byte(`{"type":"ack","idempotency_key":"perf-other-7","duplicate":false}`))
	s.frame([]byte(`{"type":"error","code":"rate_limited","message":"slow down"}`))
	s.frame([]byte(`not json`))
	if w.acked != 1 || w.ackedPerConv["c-1"] != 1 || len(w.pending) != 0 || w.errors["duplicate_ack"] != 1 ||
		w.errors["ws_error_rate_limited"] != 1 || w.errors["bad_json_from_server"] != 1 {
		t.Fatalf("acked %d per conv %v errors %v", w.acked, w.ackedPerConv, w.errors)
	}
	// the hot path (a delivery) allocates nothing
	frame := []byte(`{"type":"message","message":{"conversation_id":"c-1","sequence_number":46,"payload":{"t":1764300000123.25,"id":"m9"}}}`)
	seq := int64(46)
	allocs := testing.AllocsPerRun(1000, func() {
		seq++
		frame = frame[:0]
		frame = append(frame, `{"type":"message","message":{"conversation_id":"c-1","sequence_number":`...)
		frame = appendInt(frame, seq)
		frame = append(frame, `,"payload":{"t":1764300000123.25,"id":"m9"}}}`...)
		s.frame(frame)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per delivery", allocs)
	}
}

func appendInt(b []byte, v int64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

func TestCentrifugoFrames(t *testing.T) {
	w := testWorker("centrifugo")
	c := w.conns[0]
	s := newCentrifugoSession(c, &attempt{res: make(chan error, 1)}, false)
	s.connectID = 1
	s.pendingSub[2] = 0
	// a subscribe reply with history, then two pushes in one frame (newline-delimited), one replayed
	s.frame([]byte(`{"id":2,"subscribe":{"epoch":"ep","offset":3,"recoverable":true,"publications":[{"data":{"t":1,"id":"m0"},"offset":3}]}}`))
	s.frame([]byte("{\"push\":{\"channel\":\"chat:c-1\",\"pub\":{\"data\":{\"t\":2,\"id\":\"m1\"},\"offset\":4}}}\n{\"push\":{\"channel\":\"chat:c-1\",\"pub\":{\"data\":{\"t\":2,\"id\":\"m1\"},\"offset\":4}}}"))
	if w.delivered != 2 || w.duplicates != 1 || c.cs[0].epoch != "ep" || c.cs[0].last != 4 {
		t.Fatalf("delivered %d duplicates %d epoch %q last %d", w.delivered, w.duplicates, c.cs[0].epoch, c.cs[0].last)
	}
	w.sched.slots = []slotSpec{{Conn: 4, Conv: "c-1"}}
	w.pending[9] = struct{}{}
	c.pendingPub[5] = 9
	s.frame([]byte(`{"id":5,"publish":{}}`))
	s.frame([]byte(`{"push":{"disconnect":{"code":3005,"reason":"x"}}}`))
	if w.acked != 1 || w.errors["cf_disconnect_3005"] != 1 {
		t.Fatalf("acked %d errors %v", w.acked, w.errors)
	}
}

func TestSendFrames(t *testing.T) {
	w := testWorker("realchat")
	w.sched.startMs, w.sched.rate = 1764300000000, 3
	w.pad = "xx"
	b := w.appendPayload(nil, 1)
	var p map[string]any
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	// JSON.stringify({t: 1764300000000 + 1000/3, id: 'm1', pad: 'xx'})
	if string(b) != `{"t":1764300000333.3333,"id":"m1","pad":"xx"}` {
		t.Fatalf("%s", b)
	}
	if got := string(appendJSONNumber(nil, 1764300000123)); got != "1764300000123" {
		t.Fatal(got)
	}
	if dueCount(0, 1000, 1_000_000, 2000) != 2001 || dueCount(0, 1000, 1_000_000, 1999.5) != 2000 || dueCount(0, 1000, 500, 2000) != 500 || dueCount(0, 1000, 5, -1) != 0 {
		t.Fatal("dueCount differs from schedule.ts")
	}
	if k, ok := w.keyIndex([]byte("perf-ab12-123")); !ok || k != 123 {
		t.Fatal(k)
	}
	if _, ok := w.keyIndex([]byte("perf-ab12-")); ok {
		t.Fatal("empty index")
	}
}

func TestHistogram(t *testing.T) {
	// recordMs of hist.ts: max(1, Math.round(ms * 1000)), capped at an hour
	for _, c := range []struct {
		ms float64
		us int64
	}{{0.25, 250}, {-3, 1}, {0.0004, 1}, {0.0005, 1}, {0.0015, 2}, {2.5e-3, 3}, {1e12, histHighest}} {
		if got := usOf(c.ms); got != c.us {
			t.Errorf("usOf(%v) = %d, want %d", c.ms, got, c.us)
		}
	}
	h := newHist()
	for i := 0; i < 900; i++ {
		recordMs(h, 1)
	}
	for i := 0; i < 100; i++ {
		recordMs(h, 100)
	}
	d, err := hdrhistogram.Decode([]byte(encodeHist(h)))
	if err != nil {
		t.Fatal(err)
	}
	if d.TotalCount() != 1000 || math.Abs(float64(d.ValueAtQuantile(95))-100000) > 100 {
		t.Fatalf("round trip: count %d p95 %d", d.TotalCount(), d.ValueAtQuantile(95))
	}
	if e := encodeHist(newHist()); e == "" {
		t.Fatal("an empty histogram must still encode")
	}
	allocs := testing.AllocsPerRun(1000, func() { recordMs(h, 3.3) })
	if allocs != 0 {
		t.Fatalf("%v allocations per record", allocs)
	}
}
