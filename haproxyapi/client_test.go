package haproxyapi

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI answers each request line with "<n commands>\n" and closes, as
// HAProxy's CLI does in non-interactive mode; it records the lines.
func fakeAPI(t *testing.T) (Client, func() []string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		lines []string
		wg    sync.WaitGroup
	)
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			mu.Lock()
			lines = append(lines, line)
			mu.Unlock()
			c.Write([]byte(strings.Repeat("\n", strings.Count(line, ";")+1)))
			c.Close()
		}
	})
	return Client{Network: "tcp", Address: ln.Addr().String()}, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), lines...)
	}
}

func TestClientRun(t *testing.T) {
	c, lines := fakeAPI(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := c.Run(ctx, "show servers state", "show stat -1 4 -1"); err != nil {
		t.Fatal(err)
	}
	if got := lines(); len(got) != 1 || got[0] != "show servers state;show stat -1 4 -1\n" {
		t.Errorf("sent %q; want one line with both commands", got)
	}
	var many []string
	for range 1000 { // about 40 kB: several requests under maxLine each
		many = append(many, "set server web_prod/s100 addr 10.0.0.100 port 8080")
	}
	out, err := c.Run(ctx, many...)
	if err != nil {
		t.Fatal(err)
	}
	sent := lines()[1:]
	if len(sent) < 5 || strings.Count(out, "\n") != 1000 {
		t.Errorf("1000 commands in %d requests, %d answers", len(sent), strings.Count(out, "\n"))
	}
	for _, l := range sent {
		if len(l) > maxLine+1 || strings.Count(l, "\n") != 1 {
			t.Errorf("request of %d bytes, %d newlines", len(l), strings.Count(l, "\n"))
		}
	}
	if _, err := c.Run(ctx, "show stat\nshutdown frontend x"); err == nil {
		t.Error("a command with a newline was sent")
	}
}
