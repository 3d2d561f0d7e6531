package renderer

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Pushes apart from the loop: a push endpoint that hangs (nginx's Lua
// endpoint accepting and never answering, HAProxy's runtime socket the
// same) delays only its own resource until --command-timeout, never
// another resource's batch, acknowledgement, watch event or configuration
// reload.
//
// A pushing resource is busy in the scheduler while its push is out, so
// its pushes never overlap and go in order: a change that comes meanwhile
// makes it due again once the push lands, with the newest snapshot (the
// changes in between coalesced). Pushes to one target (an nginx endpoint,
// a HAProxy socket) take turns. The delta base (pusher.last) is taken
// out on the loop when a push leaves and put back when nginx confirmed it.
//
// A batch's flight waits for the batch's pushes, up to pushOrderWait, so
// an app that appears has its peers in nginx before the reload that adds
// its upstream; a resource already failing is not waited for.

// pushOrderWait bounds how long a batch's checks, installs and reloads wait
// for the batch's pushes (which take milliseconds when their endpoint
// answers).
const pushOrderWait = time.Second

// pushAll starts the pushing resources of sts at snap apart and returns
// the rest, with the pushes the batch's flight waits for. Failed renders
// are settled in res.
func (l *lanes) pushAll(ctx context.Context, snap *snapshot, sts []*resState, res *batchResult) (rest []*resState, ids []string, after []<-chan struct{}) {
	pjs, rest := l.r.preparePushes(ctx, snap, sts)
	failing := l.r.sched.FailingIDs()
	for _, pj := range pjs {
		if pj.err != nil {
			l.r.pushLanded(pj, res)
			continue
		}
		id := pj.st.res.Path
		ids = append(ids, id)
		done := l.push(ctx, pj)
		if !slices.Contains(failing, id) {
			after = append(after, done)
		}
	}
	return rest, ids, after
}

// push sends pj apart, after the pushes to its target before it; the
// channel is closed once it is sent (or given up).
func (l *lanes) push(ctx context.Context, pj *pushJob) <-chan struct{} {
	t := pj.target()
	lock := l.pushLocks[t]
	if lock == nil {
		lock = make(chan struct{}, 1)
		l.pushLocks[t] = lock
	}
	l.pushing[pj.st.res.Path] = true
	sent := make(chan struct{})
	l.wg.Go(func() {
		select {
		case lock <- struct{}{}:
			l.r.sendPush(ctx, pj)
			<-lock
		case <-ctx.Done():
			pj.err = fmt.Errorf("push to %s: %w", t, context.Cause(ctx))
		}
		close(sent)
		select {
		case l.pushed <- pj:
		case <-ctx.Done():
		}
	})
	return sent
}

// PushLanded takes a push back on the loop (to the resource now loaded at
// its path: the configuration may have been reloaded meanwhile).
func (l *lanes) PushLanded(now time.Time, pj *pushJob) {
	id := pj.st.res.Path
	delete(l.pushing, id)
	if len(l.pushing) == 0 {
		clear(l.pushLocks) // none held: forget targets no longer used
	}
	if cur := l.r.byID[id]; cur != nil && cur.res.Dest == pj.st.res.Dest && cur.res.Push == pj.st.res.Push {
		pj.st = cur
	}
	var res batchResult
	l.r.pushLanded(pj, &res)
	l.settle(now, itemsAt(res.ok, pj.rev), itemsAt(res.failed, pj.rev))
}

// Pushing reports whether st's push is out.
func (l *lanes) Pushing(st *resState) bool { return l != nil && l.pushing[st.res.Path] }

// waitPushes waits for the pushes in after, at most d in all, or for ctx.
func waitPushes(ctx context.Context, after []<-chan struct{}, d time.Duration) {
	if len(after) == 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for _, c := range after {
		select {
		case <-c:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
