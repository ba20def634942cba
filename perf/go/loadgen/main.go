// realchat-loadgen: the load generator worker of perf/ in Go, a drop-in for perf/worker.ts selected
// with `--engine go`. The parent (perf/lib/workers.ts) sends the ParentMsg commands of
// perf/lib/types.ts as JSON lines on stdin; the worker answers with WorkerMsg JSON lines on stdout;
// logs go to stderr. It exits when stdin closes (the parent went away) or after `close`.
//
//	realchat-loadgen [--gomaxprocs N]          run as a worker (default GOMAXPROCS 1)
//	realchat-loadgen --encode-hist 1.5,20,...  print the encoded histogram of these latencies (ms)
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type out struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (o *out) post(m workerMsg) {
	b, err := json.Marshal(m)
	if err != nil {
		logf("encode %s: %v", m.Ev, err)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = o.w.Write(b)
	_ = o.w.WriteByte('\n')
	_ = o.w.Flush()
}

func main() {
	procs := flag.Int("gomaxprocs", envInt("REALCHAT_LOADGEN_GOMAXPROCS", 1), "GOMAXPROCS of this worker")
	encode := flag.String("encode-hist", "", "print the encoded histogram of these comma-separated latencies (ms) and exit")
	flag.Parse()
	if *encode != "" {
		h := newHist()
		for _, s := range strings.Split(*encode, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			recordMs(h, v)
		}
		fmt.Println(encodeHist(h))
		return
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	o := &out{w: bufio.NewWriterSize(os.Stdout, 64<<10)}
	var w *worker
	workerID := -1
	logToParent := func(msg string) {
		id := workerID
		o.post(workerMsg{Ev: "log", WorkerID: &id, Msg: msg})
	}
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			var m parentMsg
			if jerr := json.Unmarshal(line, &m); jerr != nil {
				logToParent("worker error: bad command: " + jerr.Error())
			} else if m.Cmd == "init" {
				if m.Init == nil {
					logToParent("worker error: init without init")
					continue
				}
				nw, ierr := newWorker(*m.Init)
				workerID = m.Init.WorkerID
				if ierr != nil {
					logToParent("worker error: " + ierr.Error())
					continue // no `ready`: the parent times out with the reason logged
				}
				w = nw
				go w.poller.run()
				go w.tickLoop()
				id := workerID
				o.post(workerMsg{Ev: "ready", WorkerID: &id})
			} else if w == nil {
				logToParent("worker error: " + m.Cmd + " before init")
			} else {
				go handle(w, o, m)
			}
		}
		if err != nil {
			break // stdin closed: never outlive the parent
		}
	}
	if w != nil {
		logf("worker %d: stdin closed, exiting (%s)", w.init.WorkerID, cpuLine(w))
	}
	os.Exit(0)
}

func handle(w *worker, o *out, m parentMsg) {
	id := w.init.WorkerID
	switch m.Cmd {
	case "connect":
		upTo := len(w.conns)
		if m.UpTo < float64(upTo) {
			upTo = int(m.UpTo)
		}
		from := w.opened
		if from > upTo {
			from = upTo
		}
		res := w.ramp(w.conns[from:upTo], m.RatePerS, false, nil)
		w.opened = upTo
		o.post(workerMsg{Ev: "connected", WorkerID: &id, Result: &res})
	case "send":
		w.runSends(m.StartMs, m.Rate, m.Total, m.Slots)
		o.post(workerMsg{Ev: "sent", WorkerID: &id})
	case "storm":
		w.runStorm(m.AtMs, m.RatePerS)
		o.post(workerMsg{Ev: "stormed", WorkerID: &id})
	case "report":
		o.post(workerMsg{Ev: "report", Report: w.report()})
	case "close":
		o.post(workerMsg{Ev: "log", WorkerID: &id, Msg: cpuLine(w)})
		w.closing.Store(true)
		for _, c := range w.conns {
			c.close()
		}
		time.AfterFunc(300*time.Millisecond, func() { os.Exit(0) })
	default:
		o.post(workerMsg{Ev: "log", WorkerID: &id, Msg: "worker error: unknown command " + m.Cmd})
	}
}

// cpuLine: this process's CPU time and the data frames it has read.
func cpuLine(w *worker) string {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	f := w.frames.Load()
	per := 0.0
	if f > 0 {
		per = cpu.Seconds() * 1000 / (float64(f) / 1000)
	}
	return fmt.Sprintf("cpu %.2f s, %d frames read, %.3f ms CPU per 1000 frames (connect and send included)", cpu.Seconds(), f, per)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
