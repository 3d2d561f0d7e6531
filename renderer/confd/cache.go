package confd

import "sync/atomic"

// renderCache carries what one render of a Resource worked out to the next:
// each dir's instances, reused while the dir holds the same parsed pairs
// (NewKV), and the size of the output. With one resource for 1,000 apps a
// change touches one dir; the other 999 cost a comparison of pointers, not
// a new sorted slice each. Renders of one Resource may run at once: each
// reads the cache as it was when it started and replaces it when done.
type renderCache struct {
	dirs atomic.Pointer[map[string]cachedDir]
	size atomic.Int64 // the last output's length: the next buffer's size
}

// cachedDir is one dir's instances and the parses they were made from, in
// the dir's order. A parse (*instanceInfo) belongs to one key and value,
// so the same pointers mean the same pairs. from is nil when the instances
// may not be reused (lookup then matches only a dir that has no pairs).
type cachedDir struct {
	from []*instanceInfo
	is   []Instance
}

// lookup returns what is cached for dir if its pairs (idx into pairs) are
// the ones it was made from.
func (c *renderCache) lookup(dir string, pairs []pair, idx []int) (cachedDir, bool) {
	if c == nil {
		return cachedDir{}, false
	}
	m := c.dirs.Load()
	if m == nil {
		return cachedDir{}, false
	}
	d, ok := (*m)[dir]
	if !ok || len(d.from) != len(idx) {
		return cachedDir{}, false
	}
	for k, i := range idx {
		if pairs[i].inst != d.from[k] {
			return cachedDir{}, false
		}
	}
	return d, true
}

// cacheable returns the parses of dir's pairs when every one has been
// parsed once and for all (NewKV) and none was refused: only then do the
// same parses mean the same instances and no refusal to report again.
func cacheable(pairs []pair, idx []int, skipped int) []*instanceInfo {
	if skipped > 0 || len(idx) > 0 && pairs[idx[0]].inst == nil { // literal pairs: nothing to compare by
		return nil
	}
	from := make([]*instanceInfo, len(idx))
	for k, i := range idx {
		if pairs[i].inst == nil {
			return nil
		}
		from[k] = pairs[i].inst
	}
	return from
}

// store replaces the cache with the dirs this render used.
func (c *renderCache) store(dirs map[string]cachedDir, size int) {
	if c == nil {
		return
	}
	c.dirs.Store(&dirs)
	c.size.Store(int64(size))
}

// sizeHint is the buffer size for the next output.
func (c *renderCache) sizeHint() int {
	if c == nil {
		return 0
	}
	return int(c.size.Load())
}
