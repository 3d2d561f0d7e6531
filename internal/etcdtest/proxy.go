package etcdtest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// clientProxy forwards TCP connections from a cluster member's public client
// endpoint to its real listener. Held, it refuses connections, so a test
// decides which members a client can reach (and so where its streams go).
type clientProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	held  bool
	conns map[net.Conn]bool // open connections: true = a client's, false = to the member
	wg    sync.WaitGroup
}

func newClientProxy(t testing.TB, addr, target string) *clientProxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &clientProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p
}

func (p *clientProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.mu.Lock()
		if p.held {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c] = true
		p.wg.Go(func() { p.pipe(c) })
		p.mu.Unlock()
	}
}

// pipe copies both ways until either side closes.
func (p *clientProxy) pipe(c net.Conn) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	p.conns[s] = false
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, s)
		p.mu.Unlock()
		s.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); done <- struct{}{} }() // owned: pipe waits for one, closing both ends the other
	go func() { io.Copy(c, s); done <- struct{}{} }()
	<-done
	c.Close()
	s.Close()
	<-done
}

// hold refuses new connections and closes the open ones (true), or accepts
// again (false).
func (p *clientProxy) hold(held bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = held
	if held {
		for c := range p.conns {
			c.Close()
		}
	}
}

// active is the number of forwarded connections open.
func (p *clientProxy) active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, client := range p.conns {
		if client {
			n++
		}
	}
	return n
}

func (p *clientProxy) close() {
	p.ln.Close()
	p.hold(true)
	p.wg.Wait()
}

// peerProxy forwards raft's HTTP traffic to a member's peer listener and
// can drop it: all of it (nothing reaches the member), or what one member
// sends (raft names the sender in X-Server-From). Cutting a member off on
// every proxy isolates it while it keeps running and answering clients.
type peerProxy struct {
	srv    *http.Server
	rp     *httputil.ReverseProxy
	served chan struct{} // closed when Serve returned

	mu   sync.Mutex
	all  bool            // drop everything
	from map[string]bool // drop what these member IDs send
	live map[*peerReq]struct{}
}

type peerReq struct {
	from   string
	cancel context.CancelFunc
}

func newPeerProxy(t testing.TB, addr, target string) *peerProxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1 // raft streams: forward every write at once
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
	p := &peerProxy{rp: rp, from: map[string]bool{}, live: map[*peerReq]struct{}{}, served: make(chan struct{})}
	p.srv = &http.Server{Handler: p}
	go func() { // owned: close shuts it down and waits
		defer close(p.served)
		p.srv.Serve(ln)
	}()
	return p
}

func (p *peerProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := &peerReq{from: r.Header.Get("X-Server-From")}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	req.cancel = cancel
	p.mu.Lock()
	if p.all || p.from[req.from] {
		p.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	p.live[req] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.live, req)
		p.mu.Unlock()
	}()
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// cut drops everything (all) or what member id sends; on=false lets it
// through again. Open streams it now drops are cancelled.
func (p *peerProxy) cut(all bool, id string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if all {
		p.all = on
	} else {
		p.from[id] = on
	}
	for r := range p.live {
		if p.all || p.from[r.from] {
			r.cancel()
		}
	}
}

func (p *peerProxy) close() {
	p.srv.Close() // its only error is the listener's
	<-p.served
}
