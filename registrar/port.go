package registrar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/rollcall/rollcall/registry"
)

// choosePort returns --port, or picks one, and the lease its claim is on (0:
// none): the lease is granted first so the claim lives on it, and the keeper
// takes it over. Without etcd the port is picked by local checks alone.
func choosePort(ctx context.Context, cfg Config, etcd *conn, log *slog.Logger) (uint16, clientv3.LeaseID, error) {
	c := &claimer{conn: etcd, ttl: cfg.TTL, opTimeout: cfg.DialTimeout, log: log}
	ctx, cancel := context.WithCancel(ctx)
	defer c.wg.Wait()
	defer cancel() // ends the pick's keep-alive
	service := registry.Service(cfg.App, cfg.Env)
	if cfg.Port != 0 {
		if err := bindFree(cfg.IP, cfg.Port); err != nil {
			log.Warn("fixed port looks busy", "port", cfg.Port, "err", err)
		}
		claimKey := registry.PortClaimKey(cfg.Prefix, cfg.IP, cfg.Port)
		ok, err := c.claim(ctx, claimKey, service)
		switch {
		case err != nil:
			log.Warn("etcd unreachable at start: the app starts anyway, registration follows when etcd answers", "err", err)
		case !ok:
			log.Warn("fixed port is claimed by another instance", "key", claimKey)
		}
		return cfg.Port, c.lease, nil
	}
	p := portPick{IP: cfg.IP, Range: cfg.PortRange, ClaimDir: registry.PortsDir(cfg.Prefix, cfg.IP),
		Service: service, Claim: c.claim}
	port, err := pickPort(ctx, p, log)
	if err != nil {
		c.release(ctx)
		return 0, 0, err
	}
	log.Info("port picked", "port", port, "range", cfg.PortRange.String(), "claimed", c.lease != 0)
	return port, c.lease, nil
}

// errNoLease marks a claim that failed for want of a lease: etcd did not
// answer a Grant, which is not worth retrying at start.
var errNoLease = errors.New("no lease")

// claimer claims ports for the pick on the instance's lease, which it grants
// on first use (again, if it expired during a slow pick) and keeps alive
// until the pick's ctx ends: the pick may outlast a TTL.
type claimer struct {
	conn           *conn
	ttl, opTimeout time.Duration
	log            *slog.Logger
	lease          clientv3.LeaseID // 0: none
	wg             sync.WaitGroup   // the keep-alive reader
}

// claim creates key = value on the lease unless another lease holds it.
func (c *claimer) claim(ctx context.Context, key, value string) (bool, error) {
	cli, err := c.conn.get()
	if err != nil {
		return false, fmt.Errorf("%w: %w", errNoLease, err)
	}
	if c.lease == 0 {
		if c.lease, err = grantLease(ctx, cli, c.ttl, c.opTimeout, c.log); err != nil {
			return false, fmt.Errorf("%w: %w", errNoLease, err)
		}
		ka, err := cli.KeepAlive(ctx, c.lease)
		if err != nil {
			c.lease = 0
			return false, fmt.Errorf("keep lease alive: %w", err)
		}
		// etcd's contract: keep-alive responses must be consumed, or the
		// client drops them and warns. The channel closes when ctx ends.
		c.wg.Go(func() {
			for range ka {
			}
		})
	}
	tctx, cancel := context.WithTimeout(ctx, c.opTimeout)
	defer cancel()
	ok, err := claimTxn(cli, c.lease)(tctx, key, value)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		c.lease = 0
	}
	return ok, err
}

// release revokes the pick's lease (and the claims on it) when no port was
// picked; a failure is logged, the lease expires by itself.
func (c *claimer) release(ctx context.Context) {
	if c.lease == 0 {
		return
	}
	cli, err := c.conn.get()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opTimeout)
		defer cancel()
		_, err = cli.Revoke(ctx, c.lease)
	}
	if err != nil {
		c.log.Warn("revoke the pick's lease: it expires by itself", "lease", fmt.Sprintf("%x", c.lease), "err", err)
	}
	c.lease = 0
}

// portPick says where and how to pick a port.
type portPick struct {
	IP       netip.Addr
	Range    PortRange
	ClaimDir string // registry.PortsDir(prefix, ip)
	Service  string // claim value: "<app>_<env>"
	// Claim is nil when etcd is unreachable: local checks only.
	Claim func(ctx context.Context, key, value string) (bool, error)
	// Listening lists the host's listening ports; nil: listeningPorts.
	Listening func() (map[uint16]bool, error)
}

// pickPort returns a random port in p.Range that passes the local checks and,
// when p.Claim is set, whose claim key it created. An etcd error mid-way
// falls back to local checks and says so.
func pickPort(ctx context.Context, p portPick, log *slog.Logger) (uint16, error) {
	list := p.Listening
	if list == nil {
		list = listeningPorts
	}
	listening, err := list()
	if err != nil {
		log.Warn("cannot read listening sockets, relying on bind tests", "err", err)
	}
	for _, i := range rand.Perm(p.Range.Size()) {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		port := p.Range.Lo + uint16(i)
		if listening[port] || bindFree(p.IP, port) != nil {
			continue
		}
		if p.Claim == nil {
			return port, nil
		}
		ok, err := p.claim(ctx, port)
		if err != nil {
			log.Warn("etcd unreachable: port picked by local checks only, claim follows when etcd answers",
				"port", port, "err", err)
			return port, nil
		}
		if ok {
			return port, nil
		}
		log.Debug("port claimed by another instance", "port", port)
	}
	return 0, fmt.Errorf("no free port in %s on %s", p.Range, p.IP)
}

// claimTries is how often a claim that errs is tried before etcd counts as
// unreachable: a slow etcd is not a missing one. An etcd that grants no
// lease (errNoLease) counts as unreachable at once.
const claimTries = 3

// claim tries to claim port, retrying errors with backoff.
func (p portPick) claim(ctx context.Context, port uint16) (bool, error) {
	key := p.ClaimDir + strconv.Itoa(int(port))
	var err error
	for attempt := range claimTries {
		var ok bool
		if ok, err = p.Claim(ctx, key, p.Service); err == nil {
			return ok, nil
		}
		if errors.Is(err, errNoLease) {
			return false, err
		}
		if attempt < claimTries-1 && sleepCtx(ctx, backoff(attempt, time.Second)) != nil {
			return false, ctx.Err()
		}
	}
	return false, err
}

// claimTxn creates key with value on lease only if key does not exist. A
// key already on lease is ours too: a retried Txn whose first try timed out
// after it had committed.
func claimTxn(kv clientv3.KV, lease clientv3.LeaseID) func(ctx context.Context, key, value string) (bool, error) {
	return func(ctx context.Context, key, value string) (bool, error) {
		resp, err := kv.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(lease))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return false, fmt.Errorf("claim %s: %w", key, err)
		}
		if resp.Succeeded {
			return true, nil
		}
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		return len(kvs) == 1 && kvs[0].Lease == int64(lease), nil
	}
}

// bindFree binds port on ip and on the wildcard address and releases both.
// An advertised ip that is not local (NAT) is skipped.
func bindFree(ip netip.Addr, port uint16) error {
	wild := "0.0.0.0"
	if ip.Is6() {
		wild = "::"
	}
	for _, h := range []string{ip.String(), wild} {
		l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(int(port))))
		if errors.Is(err, syscall.EADDRNOTAVAIL) && h != wild {
			continue
		}
		if err != nil {
			return err
		}
		if err := l.Close(); err != nil {
			return fmt.Errorf("release test bind %s: %w", l.Addr(), err)
		}
	}
	return nil
}

// tcpListen is the LISTEN state in /proc/net/tcp.
const tcpListen = "0A"

// listeningPorts returns every local port in LISTEN state on any address,
// from /proc/net/tcp and /proc/net/tcp6: a socket that lets a bind test pass
// (SO_REUSEPORT, another address) still owns the port.
func listeningPorts() (map[uint16]bool, error) {
	ports := map[uint16]bool{}
	var errs []error
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) || name == "/proc/net/tcp" {
				errs = append(errs, err)
			}
			continue
		}
		err = errors.Join(parseProcNet(f, ports), f.Close())
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return ports, errors.Join(errs...)
}

// parseProcNet adds the local ports of LISTEN sockets in a /proc/net/tcp
// table ("sl local_address rem_address st ...", address "HEXIP:HEXPORT").
func parseProcNet(r io.Reader, ports map[uint16]bool) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			return fmt.Errorf("short line %q", sc.Text())
		}
		if f[3] != tcpListen {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if !ok || err != nil {
			return fmt.Errorf("bad local address %q", f[1])
		}
		ports[uint16(p)] = true
	}
	return sc.Err()
}

// primaryIPv4 is the source address of the default IPv4 route (no packet is
// sent), else the first up non-loopback IPv4 address.
func primaryIPv4() (netip.Addr, error) {
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		defer c.Close()
		if a, ok := netip.AddrFromSlice(c.LocalAddr().(*net.UDPAddr).IP); ok {
			if a = a.Unmap(); a.Is4() && !a.IsUnspecified() {
				return a, nil
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find primary IPv4: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil { // an interface we cannot read is not the one to advertise
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
					return ip.Unmap(), nil
				}
			}
		}
	}
	return netip.Addr{}, errors.New("find primary IPv4: no up non-loopback IPv4 address; set --ip")
}
