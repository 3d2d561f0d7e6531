package nginxreload

import (
	"reflect"
	"testing"
)

func TestParseShowProc(t *testing.T) {
	t.Parallel()
	const head = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
	for _, tc := range []struct {
		name, out string
		want      Procs
		err       bool
	}{
		{"fresh", head + "12679 master 0 [failed: 0] 0d00h00m05s 2.6.12\n# workers\n12703 worker 0 0d00h00m05s 2.6.12\n# programs\n",
			Procs{Master: 12679, Workers: []int{12703}}, false},
		{"old workers", head + "12679 master 3 [failed: 0] 0d00h10m23s 2.6.12\n# workers\n30458 worker 0 0d00h00m00s 2.6.12\n30457 worker 0 0d00h00m00s 2.6.12\n# old workers\n23015 worker 1 0d00h00m12s 2.6.12\n# programs\n",
			Procs{Master: 12679, Reloads: 3, Workers: []int{30457, 30458}, Old: []int{23015}}, false},
		{"refused", head + "12679 master 2 [failed: 1] 0d00h10m23s 2.6.12\n# workers\n23015 worker 1 0d00h00m12s 2.6.12\n# programs\n",
			Procs{Master: 12679, Reloads: 2, Failed: 1, Workers: []int{23015}}, false},
		{"no master", head + "# workers\n23015 worker 1 0d00h00m12s 2.6.12\n", Procs{}, true},
		{"bad pid", head + "x master 0 [failed: 0] 0d 2.6\n", Procs{}, true},
		{"bad reloads", head + "1 master x [failed: 0] 0d 2.6\n", Procs{}, true},
		{"bad failed", head + "1 master 0 [failed: x] 0d 2.6\n", Procs{}, true},
		{"short line", head + "1 master\n", Procs{}, true},
		{"empty", "", Procs{}, true},
	} {
		got, err := parseShowProc(tc.out)
		if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: parseShowProc = %+v, %v; want %+v, error %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}
