package registrar

import (
	"slices"
	"syscall"
	"testing"
)

func TestChildEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		base    []string
		portEnv []string
		want    []string
	}{
		{"default", []string{"HOME=/root", "PORT=1"}, []string{"PORT"},
			[]string{"HOME=/root", "PORT=8080", "HOST_IP=10.0.0.5"}},
		{"several vars", []string{"A=1"}, []string{"PORT", "SERVER_PORT"},
			[]string{"A=1", "PORT=8080", "SERVER_PORT=8080", "HOST_IP=10.0.0.5"}},
		{"password dropped", []string{"ETCD_PASSWORD=s3cret", "ETCD_USER=u", "HOST_IP=1.1.1.1"}, []string{"PORT"},
			[]string{"ETCD_USER=u", "PORT=8080", "HOST_IP=10.0.0.5"}},
		{"duplicate names", nil, []string{"PORT", "PORT", "HOST_IP"},
			[]string{"PORT=8080", "HOST_IP=10.0.0.5"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := childEnv(tc.base, tc.portEnv, "10.0.0.5", 8080)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("childEnv(%q, %q) = %q; want %q", tc.base, tc.portEnv, got, tc.want)
			}
		})
	}
}

func TestStatusExitCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s    Status
		want int
		str  string
	}{
		{Status{Code: 0}, 0, "exit 0"},
		{Status{Code: 7}, 7, "exit 7"},
		{Status{Signal: syscall.SIGKILL}, 137, "killed by SIGKILL"},
		{Status{Signal: syscall.SIGTERM}, 143, "killed by SIGTERM"},
	}
	for _, tc := range tests {
		if got := tc.s.ExitCode(); got != tc.want || tc.s.String() != tc.str {
			t.Errorf("%#v: ExitCode() = %d, String() = %q; want %d, %q", tc.s, got, tc.s.String(), tc.want, tc.str)
		}
	}
}
