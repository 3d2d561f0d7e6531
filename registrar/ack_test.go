package registrar

import (
	"testing"
)

// TestAckLagsPerPrefix: an ack with per-prefix applied revisions lets a
// key drain once the prefixes covering it are applied, whatever another
// prefix (a failing resource) holds back; an ack without them (an older
// renderer) is read by its revision.
func TestAckLagsPerPrefix(t *testing.T) {
	t.Parallel()
	const perPrefix = `{"revision":10,"prefixes":["/a_prod","/b_prod"],"applied":{"/a_prod":10,"/b_prod":20},"updated":"2026-01-01T00:00:00Z"}`
	const old = `{"revision":10,"prefixes":["/"],"updated":"2026-01-01T00:00:00Z"}`
	tests := []struct {
		ack, key string
		rev      int64
		want     bool
	}{
		{perPrefix, "/b_prod/10.0.0.1-80", 20, false},
		{perPrefix, "/a_prod/10.0.0.1-80", 20, true},
		{perPrefix, "/c_prod/10.0.0.1-80", 20, false}, // not covered
		{old, "/b_prod/10.0.0.1-80", 20, true},
		{old, "/b_prod/10.0.0.1-80", 10, false},
	}
	for _, tc := range tests {
		if got := ackLags(tc.key, tc.rev, []byte(tc.ack)); got != tc.want {
			t.Errorf("ackLags(%q, %d, %s) = %v; want %v", tc.key, tc.rev, tc.ack, got, tc.want)
		}
	}
}
