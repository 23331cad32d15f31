// Command gohub is peer G: a minimal Go net/http SSE hub, the compiled-code reference.
//
// One Redis SUBSCRIBE per process (a small RESP reader over net.Conn, no modules), messages
// "<user id> <sse frame>", fanned out in memory to per-connection bounded channels; a full
// channel ends that stream (never thinned). Same framing, heartbeat and HS256 JWT check
// (user_id claim) as Taskstream.
package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

type sub struct {
	ch   chan []byte
	done chan struct{}
	once sync.Once
}

type hub struct {
	mu     sync.RWMutex
	byUser map[string]map[*sub]struct{}
	limit  int
	key    []byte
}

func (h *hub) deliver(uid string, frame []byte) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.byUser[uid] {
		select {
		case s.ch <- frame:
		default:
			s.once.Do(func() { close(s.done) })
		}
	}
}

func readLine(r *bufio.Reader) (string, error) {
	l, err := r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// subscribe reads RESP pub/sub pushes forever: *3 $7 message $<chan> $<payload>.
func (h *hub) subscribe(addr, channel string) {
	for {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			log.Print(err)
			time.Sleep(time.Second)
			continue
		}
		fmt.Fprintf(conn, "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", len(channel), channel)
		r := bufio.NewReaderSize(conn, 1<<16)
		for err == nil {
			var head string
			if head, err = readLine(r); err != nil || !strings.HasPrefix(head, "*") {
				continue
			}
			n, _ := strconv.Atoi(head[1:])
			parts := make([][]byte, 0, n)
			for i := 0; i < n && err == nil; i++ {
				var l string
				if l, err = readLine(r); err != nil {
					break
				}
				if l[0] != '$' {
					parts = append(parts, []byte(l[1:]))
					continue
				}
				size, _ := strconv.Atoi(l[1:])
				buf := make([]byte, size+2)
				if _, err = io.ReadFull(r, buf); err == nil {
					parts = append(parts, buf[:size])
				}
			}
			if len(parts) == 3 && string(parts[0]) == "message" {
				if i := bytes.IndexByte(parts[2], ' '); i > 0 {
					h.deliver(string(parts[2][:i]), parts[2][i+1:])
				}
			}
		}
		log.Print("redis: ", err)
		conn.Close()
	}
}

func (h *hub) auth(r *http.Request) (string, bool) {
	a := r.Header.Get("Authorization")
	if !strings.HasPrefix(strings.ToLower(a), "bearer ") {
		return "", false
	}
	parts := strings.Split(strings.TrimSpace(a[7:]), ".")
	if len(parts) != 3 {
		return "", false
	}
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		UserID json.Number `json:"user_id"`
		Exp    float64     `json:"exp"`
	}
	if err != nil || json.Unmarshal(raw, &claims) != nil || claims.Exp < float64(time.Now().Unix()) {
		return "", false
	}
	return claims.UserID.String(), claims.UserID != ""
}

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	uid, ok := h.auth(r)
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		fmt.Fprint(w, `{"detail":"bad token","code":"token_not_valid"}`)
		return
	}
	flusher := w.(http.Flusher)
	s := &sub{ch: make(chan []byte, h.limit), done: make(chan struct{})}
	h.mu.Lock()
	if h.byUser[uid] == nil {
		h.byUser[uid] = map[*sub]struct{}{}
	}
	h.byUser[uid][s] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.byUser[uid], s)
		if len(h.byUser[uid]) == 0 {
			delete(h.byUser, uid)
		}
		h.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	fmt.Fprintf(w, "retry: 3000\n: go-min\n\nevent: stream-open\ndata: {\"user_id\": %s}\n\n", uid)
	flusher.Flush()
	beat := time.NewTicker(15 * time.Second)
	defer beat.Stop()
	for {
		select {
		case f := <-s.ch:
			w.Write(f)
			for more := true; more; {
				select {
				case f = <-s.ch:
					w.Write(f)
				default:
					more = false
				}
			}
			flusher.Flush()
		case <-beat.C:
			fmt.Fprintf(w, "event: heartbeat\ndata: {\"t\": %d}\n\n", time.Now().Unix())
			flusher.Flush()
		case <-s.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8003", "listen address")
	redis := flag.String("redis", "127.0.0.1:6380", "redis host:port")
	channel := flag.String("channel", "bench:ev", "pub/sub channel")
	key := flag.String("key", "", "HS256 key")
	limit := flag.Int("queue", 1000, "frames buffered per stream")
	flag.Parse()
	h := &hub{byUser: map[string]map[*sub]struct{}{}, limit: *limit, key: []byte(*key)}
	go h.subscribe(*redis, *channel)
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(h.serve)))
}
