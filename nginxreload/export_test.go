package nginxreload

// Children lists a process's live children, for the external tests.
func Children(pid int) ([]int, error) {
	pids, _, err := children("/proc", pid)
	return pids, err
}
