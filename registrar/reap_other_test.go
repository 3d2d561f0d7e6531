//go:build unix && !linux

package registrar

// reaperMain: child subreapers are Linux-only.
func reaperMain([]string) int { return 99 }

// pid1Main: PID namespaces are Linux-only.
func pid1Main([]string) int { return 99 }
