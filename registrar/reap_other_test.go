//go:build unix && !linux

package registrar

// reaperMain: child subreapers are Linux-only.
func reaperMain([]string) int { return 99 }
