package main

// Latency histogram: the same geometry as perf/lib/hist.ts (1 µs .. 1 hour, 3 significant digits),
// values in microseconds, reported in HdrHistogram's V2 compressed base64 encoding, which
// hdr-histogram-js's decodeFromCompressedBase64 reads; the parent merges it like a Node worker's.

import (
	"math"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

const histHighest = 3_600_000_000

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, histHighest, 3)
}

// usOf converts a latency in (fractional) milliseconds to the recorded microseconds exactly as
// recordMs in hist.ts: max(1, round(ms * 1000)), capped at one hour.
func usOf(ms float64) int64 {
	us := jsRound(ms * 1000)
	if us < 1 {
		us = 1
	}
	if us > histHighest {
		us = histHighest
	}
	return int64(us)
}

// jsRound is JavaScript's Math.round (halves round towards +Infinity).
func jsRound(x float64) float64 {
	return math.Floor(x + 0.5)
}

func recordMs(h *hdrhistogram.Histogram, ms float64) {
	_ = h.RecordValue(usOf(ms))
}

func encodeHist(h *hdrhistogram.Histogram) string {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return ""
	}
	return string(b)
}
