package main

import (
	"math"
	"testing"
	"time"
)

func TestHistQuantile(t *testing.T) {
	const name = "h"
	before := map[string]float64{`h_bucket{le="0.01"}`: 1, `h_bucket{le="0.02"}`: 1, `h_bucket{le="+Inf"}`: 1}
	for _, tc := range []struct {
		name  string
		after map[string]float64
		q     float64
		want  float64 // NaN: no observations
		ok    bool
	}{
		{"absent", map[string]float64{"other": 1}, 0.5, math.NaN(), false},
		{"no new observations", before, 0.5, math.NaN(), true},
		{"all in the first bucket", map[string]float64{`h_bucket{le="0.01"}`: 11, `h_bucket{le="0.02"}`: 11, `h_bucket{le="+Inf"}`: 11}, 0.5, 0.005, true},
		{"interpolated in the second", map[string]float64{`h_bucket{le="0.01"}`: 1, `h_bucket{le="0.02"}`: 11, `h_bucket{le="+Inf"}`: 11}, 0.99, 0.0199, true},
		{"beyond the last bound", map[string]float64{`h_bucket{le="0.01"}`: 1, `h_bucket{le="0.02"}`: 1, `h_bucket{le="+Inf"}`: 11}, 0.5, 0.02, true},
		{"labelled series add up", map[string]float64{`h_bucket{kind="a",le="0.01"}`: 5, `h_bucket{kind="b",le="0.01"}`: 5,
			`h_bucket{kind="a",le="+Inf"}`: 5, `h_bucket{kind="b",le="+Inf"}`: 5}, 0.5, 0.005, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := before
			if tc.name == "labelled series add up" {
				b = nil
			}
			got, _, ok := histQuantile(b, tc.after, name, tc.q)
			if ok != tc.ok || (math.IsNaN(tc.want) != math.IsNaN(got)) || (!math.IsNaN(got) && math.Abs(got-tc.want) > 1e-9) {
				t.Errorf("histQuantile(%s, %v) = %v, %v; want %v, %v", tc.name, tc.q, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(101-i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {95, 95 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(1..100 ms, %v) = %v; want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(ds[:1], 99); got != 100*time.Millisecond {
		t.Errorf("percentile of one = %v; want it", got)
	}
}

func TestTableWorst(t *testing.T) {
	tb := newTable()
	tb.dur("lat", 3*time.Millisecond)
	tb.dur("lat", 9*time.Millisecond)
	tb.dur("lat", 5*time.Millisecond)
	tb.add("rate", rate, 300)
	tb.add("rate", rate, 100)
	tb.alt = true
	tb.dur("lat", 7*time.Millisecond)
	for _, tc := range []struct {
		row  string
		vals []float64
		want string
	}{
		{"lat", tb.index["lat"].vals, "5.0 ms | 9.0 ms | 3"},
		{"lat", tb.index["lat"].alt, "7.0 ms | 7.0 ms | 1"},
		{"rate", tb.index["rate"].vals, "200 /s | 100 /s | 2"},
	} {
		if got := tb.index[tc.row].summary(tc.vals); got != tc.want {
			t.Errorf("summary(%s %v) = %q; want %q", tc.row, tc.vals, got, tc.want)
		}
	}
}
