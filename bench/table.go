package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// unit says how a row's values print and which way is worse.
type unit int

const (
	ms    unit = iota // values are time.Duration nanoseconds
	count             // a count; higher is worse
	mb                // bytes, printed in MB
	pct               // percent of one core
	rate              // per second; neither way is worse: worst = lowest
	yesno             // 1 = yes (right), 0 = no
)

// row is one figure: a value per run, printed as median and worst.
type row struct {
	name   string
	unit   unit
	vals   []float64
	alt    []float64 // the same figure with reload_cmd = nginx -s reload
	target string    // issue 8's target, if any
	floor  string    // nginx's own floor for the same config, if it bounds this
	note   string
}

// table keeps rows in the order they were first added.
type table struct {
	rows  []*row
	index map[string]*row
	alt   bool // values go to the plain-reload column
}

func newTable() *table { return &table{index: map[string]*row{}} }

func (t *table) row(name string, u unit) *row {
	r, ok := t.index[name]
	if !ok {
		r = &row{name: name, unit: u}
		t.rows = append(t.rows, r)
		t.index[name] = r
	}
	return r
}

// add records one run's value of a row.
func (t *table) add(name string, u unit, v float64) *row {
	r := t.row(name, u)
	if t.alt {
		r.alt = append(r.alt, v)
	} else {
		r.vals = append(r.vals, v)
	}
	return r
}

func (t *table) dur(name string, d time.Duration) *row { return t.add(name, ms, float64(d)) }

func (r *row) with(target, floor string) *row {
	if target != "" {
		r.target = target
	}
	if floor != "" {
		r.floor = floor
	}
	return r
}

// summary is "median | worst | runs" of vs.
func (r *row) summary(vs []float64) string {
	if len(vs) == 0 {
		return " | | "
	}
	worst := slices.Max(vs)
	if r.unit == rate || r.unit == yesno {
		worst = slices.Min(vs)
	}
	return fmt.Sprintf("%s | %s | %d", r.format(median(vs)), r.format(worst), len(vs))
}

func (r *row) format(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch r.unit {
	case ms:
		return fmtDur(time.Duration(v))
	case mb:
		return fmt.Sprintf("%.1f MB", v/1e6)
	case pct:
		return fmt.Sprintf("%.2f %%", v)
	case rate:
		return fmt.Sprintf("%.0f /s", v)
	case yesno:
		if v == 1 {
			return "yes"
		}
		return "**no**"
	default:
		return strconv.FormatFloat(math.Round(v*100)/100, 'f', -1, 64)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
}

// write prints the table as Markdown (it reads as plain text too), with
// the plain-reload column when any row has one.
func (t *table) write(w io.Writer) {
	plain := slices.ContainsFunc(t.rows, func(r *row) bool { return len(r.alt) > 0 })
	head := "| figure | median | worst | runs |"
	if plain {
		head += " with `nginx -s reload`: median | worst | runs |"
	}
	fmt.Fprintln(w, head+" target (issue 8 unless said) | floor (the server's check + reload) |")
	fmt.Fprintln(w, strings.Repeat("|---", strings.Count(head, "|")+1)+"|")
	for _, r := range t.rows {
		name := r.name
		if r.note != "" {
			name += " (" + r.note + ")"
		}
		line := "| " + name + " | " + r.summary(r.vals) + " |"
		if plain {
			line += " " + r.summary(r.alt) + " |"
		}
		fmt.Fprintf(w, "%s %s | %s |\n", line, r.target, t.floorOf(r))
	}
}

// floorOf is the median of the floor row r refers to, over all its runs.
func (t *table) floorOf(r *row) string {
	f, ok := t.index[r.floor]
	if !ok || r.floor == "" {
		return ""
	}
	return f.format(median(append(slices.Clone(f.vals), f.alt...)))
}

// median of vs (NaN when empty); vs is not modified.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile of ds by nearest rank (p in 0..100).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// histQuantile estimates quantile q of the observations a Prometheus
// histogram got between two scrapes (linear within a bucket, as PromQL's
// histogram_quantile); ok is false when the metric is absent.
func histQuantile(before, after map[string]float64, name string, q float64) (v float64, n float64, ok bool) {
	type bucket struct{ le, n float64 }
	byLE := map[float64]float64{}
	for k, a := range after {
		if !strings.HasPrefix(k, name+"_bucket{") {
			continue
		}
		i := strings.Index(k, `le="`)
		if i < 0 {
			continue
		}
		leStr := k[i+4:]
		leStr = leStr[:strings.IndexByte(leStr, '"')]
		le, err := strconv.ParseFloat(leStr, 64)
		if err != nil {
			continue
		}
		byLE[le] += a - before[k]
		ok = true
	}
	if !ok {
		return math.NaN(), 0, false
	}
	var bs []bucket
	for le, c := range byLE {
		bs = append(bs, bucket{le, c})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	total := bs[len(bs)-1].n
	if total == 0 {
		return math.NaN(), 0, true
	}
	rank := q * total
	prevLE, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLE, total, true
			}
			if b.n == prevN {
				return b.le, total, true
			}
			return prevLE + (b.le-prevLE)*(rank-prevN)/(b.n-prevN), total, true
		}
		prevLE, prevN = b.le, b.n
	}
	return math.NaN(), total, true
}
