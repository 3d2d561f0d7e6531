package nginxtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/rollcall/rollcall/internal/waitfor"
)

func TestStartServeReload(t *testing.T) {
	s := Start(t, Config{Server: `location = /hello { return 200 "hi"; }`})
	get := func() string {
		resp, err := http.Get(s.URL("/hello"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "hi" {
		t.Fatalf("GET /hello = %q; want hi", got)
	}
	if err := s.WriteConf(Config{Server: `location = /hello { return 200 "again"; }`}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitfor.Cond(t, 5*time.Second, "reload not applied", func() error {
		if got := get(); got != "again" {
			return fmt.Errorf("GET /hello = %q", got)
		}
		return nil
	})
}
