package main

// The parent <-> worker messages of perf/lib/types.ts (ParentMsg, WorkerMsg, WorkerInit,
// WorkerReport), one JSON object per line: commands on stdin, events on stdout.

type connSpec struct {
	Idx          int      `json:"idx"`
	UserID       string   `json:"userId"`
	Token        string   `json:"token"`
	Convs        []string `json:"convs"`
	LocalAddress string   `json:"localAddress"`
	URL          string   `json:"url,omitempty"`
	LocalPort    int      `json:"localPort,omitempty"`
}

type slotSpec struct {
	Conn int    `json:"conn"`
	Conv string `json:"conv"`
}

type workerInit struct {
	WorkerID     int        `json:"workerId"`
	Target       string     `json:"target"`
	URL          string     `json:"url"`
	RunID        string     `json:"runId"`
	Conns        []connSpec `json:"conns"`
	PayloadBytes int        `json:"payloadBytes"`
}

// parentMsg is the union of the commands; Cmd tells which fields are set.
type parentMsg struct {
	Cmd      string      `json:"cmd"`
	Init     *workerInit `json:"init,omitempty"`
	UpTo     float64     `json:"upTo,omitempty"` // Number.MAX_SAFE_INTEGER from the cluster scenario
	RatePerS float64     `json:"ratePerS,omitempty"`
	StartMs  float64     `json:"startMs,omitempty"`
	Rate     float64     `json:"rate,omitempty"`
	Total    int64       `json:"total,omitempty"`
	Slots    []slotSpec  `json:"slots,omitempty"`
	AtMs     float64     `json:"atMs,omitempty"`
}

type connectResult struct {
	Attempted      int     `json:"attempted"`
	Open           int     `json:"open"`
	Failed         int     `json:"failed"`
	FirstAttemptMs float64 `json:"first_attempt_ms"`
	LastOpenMs     float64 `json:"last_open_ms"`
}

type stormState struct {
	Dropped   int       `json:"dropped"`
	Reopened  int       `json:"reopened"`
	ResumedMs []float64 `json:"resumed_ms"`
	ReopenMs  []float64 `json:"reopen_ms"`
	Failed    int       `json:"failed"`
}

type workerReport struct {
	WorkerID          int              `json:"workerId"`
	Hist              string           `json:"hist"`
	Sent              int64            `json:"sent"`
	Acked             int64            `json:"acked"`
	Delivered         int64            `json:"delivered"`
	Duplicates        int64            `json:"duplicates"`
	Gaps              int64            `json:"gaps"`
	Errors            map[string]int64 `json:"errors"`
	AckedPerConv      map[string]int64 `json:"acked_per_conv"`
	UniquePerConnConv [][3]any         `json:"unique_per_conn_conv"`
	FirstRecvMs       float64          `json:"first_recv_ms"`
	LastRecvMs        float64          `json:"last_recv_ms"`
	Open              int              `json:"open"`
	Storm             *stormState      `json:"storm,omitempty"`
}

type workerMsg struct {
	Ev       string         `json:"ev"`
	WorkerID *int           `json:"workerId,omitempty"`
	Result   *connectResult `json:"result,omitempty"`
	Report   *workerReport  `json:"report,omitempty"`
	Msg      string         `json:"msg,omitempty"`
}
