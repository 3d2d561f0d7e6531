package etcdclient

import (
	"context"
	"encoding/binary"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestLookupSRVThroughDNS: the real *net.Resolver (Go's own, pointed at a
// DNS server on 127.0.0.1) finds the targets of the record confd would look
// up, so the record name and the way it is queried are what DNS sees.
func TestLookupSRVThroughDNS(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		serveSRV(pc, "_etcdv3._tcp.example.com.", []srv{{10, 1, 2379, "e1.example.com"}, {20, 1, 2380, "e2.example.com"}}, asked)
	}()
	defer func() { pc.Close(); <-done }()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := LookupSRV(ctx, r, SRVRecord("etcdv3", "example.com", ""), "")
	if want := []string{"e1.example.com:2379", "e2.example.com:2380"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("LookupSRV = %q, %v; want %q", got, err, want)
	}
	if q := <-asked; q != "_etcdv3._tcp.example.com." {
		t.Errorf("DNS was asked for %q; want _etcdv3._tcp.example.com.", q)
	}
	if _, err := LookupSRV(ctx, r, "_etcd._tcp.example.org.", ""); err == nil {
		t.Error("LookupSRV(unknown record) = nil error")
	}
}

type srv struct {
	priority, weight, port uint16
	target                 string
}

// serveSRV answers SRV queries for name with targets (NXDOMAIN for any
// other name) until pc is closed, reporting each name asked. It speaks just
// enough DNS (RFC 1035) for Go's resolver.
func serveSRV(pc net.PacketConn, name string, targets []srv, asked chan<- string) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		qname, end := readName(q, 12)
		if end+4 > len(q) {
			continue
		}
		select {
		case asked <- qname:
		default:
		}
		resp := append([]byte{}, q[:2]...)    // id
		resp = append(resp, 0x81, 0x80, 0, 1) // response, recursion desired+available; one question
		resp = append(resp, 0, 0, 0, 0, 0, 0) // answers (set below), no authority, no additional
		resp = append(resp, q[12:end+4]...)   // the question
		qtype := binary.BigEndian.Uint16(q[end:])
		if !strings.EqualFold(qname, name) {
			resp[3] |= 3 // NXDOMAIN
		} else if qtype == 33 {
			binary.BigEndian.PutUint16(resp[6:], uint16(len(targets)))
			for _, s := range targets {
				rdata := binary.BigEndian.AppendUint16(nil, s.priority)
				rdata = binary.BigEndian.AppendUint16(rdata, s.weight)
				rdata = binary.BigEndian.AppendUint16(rdata, s.port)
				rdata = appendName(rdata, s.target)
				resp = append(resp, 0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 60) // name: the question's; SRV, IN, TTL 60
				resp = binary.BigEndian.AppendUint16(resp, uint16(len(rdata)))
				resp = append(resp, rdata...)
			}
		}
		if _, err := pc.WriteTo(resp, from); err != nil {
			return
		}
	}
}

// readName reads an uncompressed name at off; it returns it with a trailing
// dot and the offset after it.
func readName(b []byte, off int) (string, int) {
	var labels []string
	for off < len(b) && b[off] != 0 {
		l := int(b[off])
		if off+1+l > len(b) {
			return "", len(b)
		}
		labels = append(labels, string(b[off+1:off+1+l]))
		off += 1 + l
	}
	return strings.Join(labels, ".") + ".", off + 1
}

func appendName(b []byte, name string) []byte {
	for l := range strings.SplitSeq(strings.TrimSuffix(name, "."), ".") {
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}
