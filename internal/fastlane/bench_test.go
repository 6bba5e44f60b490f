package fastlane

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkServe: one keep-alive GET /auth and its answer over loopback,
// answered by net/http alone and by the lane, with a handler that sets the
// headers /auth answers a signed-in user with. The client (in this
// process too) reads each answer before sending the next request, one
// connection per parallel goroutine.
func BenchmarkServe(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr := w.Header()
		hdr["X-Auth-User-Id"] = userID
		hdr["X-Auth-Email"] = email
		hdr["X-Auth-Claim-Role"] = role
		hdr["Cache-Control"] = noStore
		w.WriteHeader(http.StatusOK)
	})
	ref, lane, _ := servers(b, h, nil)
	for _, bc := range []struct{ name, addr string }{{"net-http", ref}, {"fastlane", lane}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", bc.addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				req := []byte("GET /auth HTTP/1.1\r\nHost: broker\r\nCookie: auth_session=0123456789abcdefghijklmnopqrstuvwxyzABCD\r\nX-Forwarded-Host: app.example.com\r\nX-Forwarded-Uri: /dashboard\r\n\r\n")
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil || resp.StatusCode != http.StatusOK {
						b.Errorf("answer: %v %v", resp, err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

var (
	userID  = []string{"u_0123456789abcdef"}
	email   = []string{"user1234@bench.example"}
	role    = []string{"member"}
	noStore = []string{"no-store"}
)
