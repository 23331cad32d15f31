// Command loadclient opens many SSE streams and measures what arrives.
//
// It is driven over a tiny loopback HTTP control API by bench/run.py:
//
//	POST /open?n=N&from=I&count=K&stall=S   open N streams using tokens[I..I+K) round robin;
//	     [&src=A&tag=T]                     the first S of them stop reading (tiny SO_RCVBUF);
//	                                        src: their source address instead of 127.0.0.2..;
//	                                        tag: a name for /close
//	POST /close?tag=T                       close the streams opened with tag T (not counted
//	                                        as closed by the server)
//	POST /churn?rate=R&from=I&count=K&hold_ms=H
//	                                        open R streams/s (tokens[I..I+K) round robin),
//	                                        each closed H ms after its stream-open, apart
//	                                        from the streams above; rate=0 stops and waits
//	                                        for the churn streams to end
//	GET  /stats                             counters and latency percentiles (JSON)
//	POST /reset                             zero counters and the histogram
//	POST /disconnect                        close every stream, keep them for /storm
//	POST /storm?replay=R                    close every stream, reopen them all at once; with
//	                                        R=1 each sends Last-Event-ID (the last id: it saw)
//	                                        and the body's "uid seq" lines are the seq each
//	                                        user's streams must reach to count as caught up
//	POST /closeall                          close every stream
//	POST /quit                              exit
//
// Each data frame carries "seq" (per user, from 1) and "t_ns" (producer wall clock, ns).
// Latency is now - t_ns (same host, same clock). Gaps and duplicates are judged per stream
// from seq. Only the Go standard library is used.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/bits"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const nBuckets = 128 + 50*64

type histogram struct{ b [nBuckets]atomic.Uint64 }

func bucketOf(v uint64) int {
	if v < 128 {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v in [2^k, 2^(k+1))
	shift := k - 6
	idx := 128 + (k-7)*64 + int(v>>uint(shift)) - 64
	if idx >= nBuckets {
		idx = nBuckets - 1
	}
	return idx
}

func bucketValue(i int) uint64 {
	if i < 128 {
		return uint64(i)
	}
	k := (i-128)/64 + 7
	sub := uint64((i-128)%64 + 64)
	return sub << uint(k-6)
}

func (h *histogram) add(v uint64) { h.b[bucketOf(v)].Add(1) }
func (h *histogram) reset() {
	for i := range h.b {
		h.b[i].Store(0)
	}
}

func (h *histogram) quantiles(qs []float64) (uint64, []uint64) {
	var counts [nBuckets]uint64
	var total uint64
	for i := range h.b {
		counts[i] = h.b[i].Load()
		total += counts[i]
	}
	out := make([]uint64, len(qs))
	if total == 0 {
		return 0, out
	}
	for j, q := range qs {
		target := uint64(q*float64(total) + 0.5)
		if target < 1 {
			target = 1
		}
		var acc uint64
		for i := 0; i < nBuckets; i++ {
			acc += counts[i]
			if acc >= target {
				out[j] = bucketValue(i)
				break
			}
		}
	}
	return total, out
}

// spec is one stream to keep open; it outlives its connections, so a reconnect (storm)
// resumes from what the previous connection saw.
type spec struct {
	uid, token string
	stall      bool
	src        net.IP // source address (nil: 127.0.0.2.. by index)
	tag        string
	lastID     string // the SSE last event id (Taskstream: a cursor)
	lastSeq    int64  // highest seq seen on this spec's connections
}

type stream struct {
	*spec
	idx      int
	conn     net.Conn
	lastSeq  int64
	opened   bool
	gotData  bool
	replay   bool  // sent Last-Event-ID
	target   int64 // caught up once lastSeq reaches this (0: not tracked)
	caughtUp bool
	closing  atomic.Bool // closed by /close: not counted as closed by the server
}

type client struct {
	addr, path string
	srcIPs     int
	tokens     [][2]string
	conc       int

	mu      sync.Mutex
	streams map[*stream]struct{}
	specs   []*spec
	targets map[string]int64 // storm with replay: uid -> seq to reach
	nextIdx int
	gen     atomic.Int64 // bumped by closeall/storm: old streams stop counting

	lat, connectLat                                 histogram
	open, connecting, connectErrors, closedByServer atomic.Int64
	events, gaps, dups, heartbeats, otherEvents     atomic.Int64
	firstNs, lastNs                                 atomic.Int64
	stormT0, stormAllOpenNs, stormAllFirstEventNs   atomic.Int64
	stormOpened, stormFirstEvent                    atomic.Int64
	stormCaughtUp, stormAllCaughtUpNs, stormResumed atomic.Int64
	stormResets, stormReplayed                      atomic.Int64

	churn churner
}

// churner opens streams at a steady rate and closes each hold after its stream-open.
type churner struct {
	mu                              sync.Mutex
	stop                            chan struct{}
	done                            sync.WaitGroup
	started, opened, closed, errors atomic.Int64
	skipped, inflight               atomic.Int64
	openLat                         histogram
}

func (c *client) dial(s *stream) (net.Conn, error) {
	ip := net.IPv4(127, 0, 0, byte(2+s.idx%c.srcIPs))
	if s.spec.src != nil {
		ip = s.spec.src
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	if s.stall {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			})
		}
	}
	return d.Dial("tcp", c.addr)
}

func markMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

func markMin(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if (old != 0 && v >= old) || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// run keeps one stream open until its generation ends; it does not reconnect by itself.
func (c *client) run(s *stream, gen int64, start time.Time, sem chan struct{}) {
	sem <- struct{}{}
	held := true
	release := func() {
		if held {
			held = false
			<-sem
		}
	}
	defer release()
	c.connecting.Add(1)
	conn, err := c.dial(s)
	if err == nil {
		path := strings.ReplaceAll(c.path, "{uid}", s.uid)
		req := "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
		if s.token != "" {
			req += "Authorization: Bearer " + s.token + "\r\n"
		}
		if s.replay && s.spec.lastID != "" {
			req += "Last-Event-ID: " + s.spec.lastID + "\r\n"
		}
		_, err = conn.Write([]byte(req + "\r\n"))
	}
	c.connecting.Add(-1)
	if err != nil {
		c.connectErrors.Add(1)
		if conn != nil {
			conn.Close()
		}
		return
	}
	c.mu.Lock()
	s.conn = conn
	c.streams[s] = struct{}{}
	c.mu.Unlock()
	defer func() {
		conn.Close()
		c.mu.Lock()
		delete(c.streams, s)
		c.mu.Unlock()
		if s.opened {
			c.open.Add(-1)
		}
	}()
	bufSize := 4096
	br := bufio.NewReaderSize(conn, bufSize)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		c.connectErrors.Add(1)
		return
	}
	if s.replay && s.spec.lastID != "" && resp.Header.Get("Taskstream-Resumed-From") == s.spec.lastID {
		c.stormResumed.Add(1)
	}
	body := bufio.NewReaderSize(resp.Body, bufSize)
	var event, data, id []byte
	hasID := false
	var line []byte
	for {
		line, err = readLine(body, line[:0])
		if err != nil {
			if c.gen.Load() == gen && !s.closing.Load() {
				c.closedByServer.Add(1)
			}
			return
		}
		if len(line) > 0 {
			switch {
			case bytes.HasPrefix(line, []byte("data:")):
				data = append(data[:0], line[5:]...)
			case bytes.HasPrefix(line, []byte("event:")):
				event = append(event[:0], bytes.TrimSpace(line[6:])...)
			case bytes.HasPrefix(line, []byte("id:")):
				id = append(id[:0], bytes.TrimPrefix(line[3:], []byte(" "))...)
				hasID = true
			}
			continue
		}
		// blank line: dispatch the frame (the last event id updates even without data)
		now := time.Now()
		if hasID {
			s.spec.lastID = string(id)
			hasID = false
		}
		if string(event) == "stream-open" && !s.opened {
			s.opened = true
			release()
			c.open.Add(1)
			c.connectLat.add(uint64(now.Sub(start).Microseconds()))
			if t0 := c.stormT0.Load(); t0 != 0 {
				c.stormOpened.Add(1)
				markMax(&c.stormAllOpenNs, now.UnixNano()-t0)
				c.checkCaughtUp(s, now.UnixNano())
			}
			if s.stall {
				// Stop reading: the server's writes pile up behind a 4 KiB receive buffer.
				for c.gen.Load() == gen {
					time.Sleep(200 * time.Millisecond)
				}
				return
			}
		} else if len(data) > 0 {
			t := jsonInt(data, []byte(`"t_ns":`))
			if t > 0 {
				nowNs := now.UnixNano()
				seq := jsonInt(data, []byte(`"seq":`))
				c.events.Add(1)
				if nowNs > t {
					c.lat.add(uint64((nowNs - t) / 1000))
				}
				markMin(&c.firstNs, nowNs)
				markMax(&c.lastNs, nowNs)
				switch {
				case s.lastSeq == 0 || seq == s.lastSeq+1:
				case seq <= s.lastSeq:
					c.dups.Add(1)
				default:
					c.gaps.Add(seq - s.lastSeq - 1)
				}
				if seq > s.lastSeq {
					s.lastSeq = seq
					s.spec.lastSeq = seq
				}
				if s.replay {
					c.stormReplayed.Add(1)
				}
				c.checkCaughtUp(s, nowNs)
				if !s.gotData {
					s.gotData = true
					if t0 := c.stormT0.Load(); t0 != 0 {
						c.stormFirstEvent.Add(1)
						markMax(&c.stormAllFirstEventNs, nowNs-t0)
					}
				}
			} else if string(event) == "stream-reset" {
				c.stormResets.Add(1)
			} else if bytes.Contains(event, []byte("heartbeat")) || bytes.Contains(event, []byte("keep-alive")) {
				c.heartbeats.Add(1)
			} else {
				c.otherEvents.Add(1)
			}
		}
		event, data = event[:0], data[:0]
	}
}

// checkCaughtUp counts a storm stream once it has every event its user had when it
// reconnected (lastSeq reached the target; gaps and duplicates are counted separately).
func (c *client) checkCaughtUp(s *stream, nowNs int64) {
	t0 := c.stormT0.Load()
	if s.caughtUp || s.target == 0 || t0 == 0 || s.lastSeq < s.target {
		return
	}
	s.caughtUp = true
	c.stormCaughtUp.Add(1)
	markMax(&c.stormAllCaughtUpNs, nowNs-t0)
}

func readLine(r *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return buf, err
		}
	}
	buf = bytes.TrimRight(buf, "\r\n")
	return buf, nil
}

func jsonInt(data, key []byte) int64 {
	i := bytes.Index(data, key)
	if i < 0 {
		return 0
	}
	var v int64
	for _, ch := range data[i+len(key):] {
		if ch == ' ' {
			continue
		}
		if ch < '0' || ch > '9' {
			break
		}
		v = v*10 + int64(ch-'0')
	}
	return v
}

// openSpecs starts the streams with at most conc of them between dial and stream-open.
func (c *client) openSpecs(specs []*spec, conc int, replay bool) {
	if conc < 1 {
		conc = 1
	}
	sem := make(chan struct{}, conc)
	gen := c.gen.Load()
	start := time.Now()
	for _, sp := range specs {
		c.mu.Lock()
		s := &stream{spec: sp, idx: c.nextIdx, replay: replay, lastSeq: sp.lastSeq}
		if c.targets != nil {
			s.target = c.targets[sp.uid]
		}
		c.nextIdx++
		c.mu.Unlock()
		go c.run(s, gen, start, sem)
	}
}

// closeTag closes the streams opened with tag and forgets their specs.
func (c *client) closeTag(tag string) int {
	c.mu.Lock()
	n := 0
	for s := range c.streams {
		if s.spec.tag == tag {
			s.closing.Store(true)
			s.conn.Close()
			n++
		}
	}
	kept := c.specs[:0]
	for _, sp := range c.specs {
		if sp.tag != tag {
			kept = append(kept, sp)
		}
	}
	c.specs = kept
	c.mu.Unlock()
	return n
}

// churnOne opens one stream, waits for its stream-open, reads for hold, then closes it.
func (c *client) churnOne(idx int, tok [2]string, hold time.Duration) {
	ch := &c.churn
	defer ch.done.Done()
	defer ch.inflight.Add(-1)
	start := time.Now()
	ip := net.IPv4(127, 0, 0, byte(2+idx%c.srcIPs))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", c.addr)
	if err != nil {
		ch.errors.Add(1)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(start.Add(10 * time.Second))
	path := strings.ReplaceAll(c.path, "{uid}", tok[0])
	req := "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
	if tok[1] != "" {
		req += "Authorization: Bearer " + tok[1] + "\r\n"
	}
	if _, err = conn.Write([]byte(req + "\r\n")); err != nil {
		ch.errors.Add(1)
		return
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		ch.errors.Add(1)
		return
	}
	body := bufio.NewReaderSize(resp.Body, 4096)
	var line []byte
	for {
		line, err = readLine(body, line[:0])
		if err != nil {
			ch.errors.Add(1)
			return
		}
		if bytes.HasPrefix(line, []byte("event:")) && bytes.Contains(line, []byte("stream-open")) {
			break
		}
	}
	ch.opened.Add(1)
	ch.openLat.add(uint64(time.Since(start).Microseconds()))
	_ = conn.SetDeadline(time.Now().Add(hold))
	_, _ = io.Copy(io.Discard, body) // until the hold's deadline (or the server ends it)
	ch.closed.Add(1)
}

// startChurn opens rate streams/s until stopChurn; at most 4 x rate x (hold + 1 s) at once.
func (c *client) startChurn(rate float64, from, count int, hold time.Duration) {
	c.stopChurn()
	ch := &c.churn
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for _, a := range []*atomic.Int64{&ch.started, &ch.opened, &ch.closed, &ch.errors, &ch.skipped} {
		a.Store(0)
	}
	ch.openLat.reset()
	if rate <= 0 || count < 1 {
		return
	}
	stop := make(chan struct{})
	ch.stop = stop
	maxInflight := int64(4 * rate * (hold.Seconds() + 1))
	ch.done.Add(1)
	go func() {
		defer ch.done.Done()
		start := time.Now()
		n := 0
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			due := int(rate * time.Since(start).Seconds())
			for ; n < due; n++ {
				if ch.inflight.Load() >= maxInflight {
					ch.skipped.Add(1)
					continue
				}
				ch.started.Add(1)
				ch.inflight.Add(1)
				ch.done.Add(1)
				go c.churnOne(n, c.tokens[(from+n%count)%len(c.tokens)], hold)
			}
		}
	}()
}

// stopChurn stops opening churn streams and waits for those open to end.
func (c *client) stopChurn() {
	ch := &c.churn
	ch.mu.Lock()
	if ch.stop != nil {
		close(ch.stop)
		ch.stop = nil
	}
	ch.mu.Unlock()
	ch.done.Wait()
}

func (c *client) closeAll() {
	c.gen.Add(1)
	c.mu.Lock()
	for s := range c.streams {
		s.conn.Close()
	}
	c.mu.Unlock()
	for i := 0; i < 500; i++ {
		c.mu.Lock()
		n := len(c.streams)
		c.mu.Unlock()
		if n == 0 && c.connecting.Load() == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.open.Store(0)
}

func (c *client) reset() {
	c.lat.reset()
	c.connectLat.reset()
	for _, a := range []*atomic.Int64{&c.connectErrors, &c.closedByServer, &c.events, &c.gaps, &c.dups,
		&c.heartbeats, &c.otherEvents, &c.firstNs, &c.lastNs, &c.stormT0, &c.stormAllOpenNs,
		&c.stormAllFirstEventNs, &c.stormOpened, &c.stormFirstEvent, &c.stormCaughtUp,
		&c.stormAllCaughtUpNs, &c.stormResumed, &c.stormResets, &c.stormReplayed} {
		a.Store(0)
	}
}

func (c *client) stats() map[string]any {
	qs := []float64{0.5, 0.9, 0.99, 0.999, 1.0}
	n, lq := c.lat.quantiles(qs)
	cn, cq := c.connectLat.quantiles(qs)
	chn, chq := c.churn.openLat.quantiles(qs)
	c.mu.Lock()
	nstreams := len(c.streams)
	c.mu.Unlock()
	return map[string]any{
		"open": c.open.Load(), "streams": nstreams, "connecting": c.connecting.Load(),
		"connect_errors": c.connectErrors.Load(), "closed_by_server": c.closedByServer.Load(),
		"events": c.events.Load(), "gaps": c.gaps.Load(), "dups": c.dups.Load(),
		"heartbeats": c.heartbeats.Load(), "other_events": c.otherEvents.Load(),
		"first_ns": c.firstNs.Load(), "last_ns": c.lastNs.Load(),
		"lat_count": n, "lat_us": lq, "connect_count": cn, "connect_us": cq,
		"storm_t0": c.stormT0.Load(), "storm_opened": c.stormOpened.Load(),
		"storm_all_open_ns": c.stormAllOpenNs.Load(), "storm_first_event": c.stormFirstEvent.Load(),
		"storm_all_first_event_ns": c.stormAllFirstEventNs.Load(),
		"storm_caught_up":          c.stormCaughtUp.Load(), "storm_all_caught_up_ns": c.stormAllCaughtUpNs.Load(),
		"storm_resumed": c.stormResumed.Load(), "storm_resets": c.stormResets.Load(),
		"storm_replayed_events": c.stormReplayed.Load(),
		"churn_started":         c.churn.started.Load(), "churn_opened": c.churn.opened.Load(),
		"churn_closed": c.churn.closed.Load(), "churn_errors": c.churn.errors.Load(),
		"churn_skipped": c.churn.skipped.Load(), "churn_inflight": c.churn.inflight.Load(),
		"churn_open_count": chn, "churn_open_us": chq,
	}
}

func intArg(r *http.Request, name string, def int) int {
	v, err := strconv.Atoi(r.URL.Query().Get(name))
	if err != nil {
		return def
	}
	return v
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "server host:port")
	path := flag.String("path", "/api/v1/events/stream", "stream path; {uid} is replaced")
	tokens := flag.String("tokens", "", "file of 'uid token' lines")
	ctl := flag.String("ctl", "127.0.0.1:7070", "control listen address")
	srcIPs := flag.Int("srcips", 8, "source addresses 127.0.0.2..")
	conc := flag.Int("concurrency", 50, "default streams between dial and stream-open")
	life := flag.Duration("max-life", 30*time.Minute, "exit after this long whatever happens")
	flag.Parse()

	c := &client{addr: *addr, path: *path, srcIPs: *srcIPs, conc: *conc,
		streams: map[*stream]struct{}{}}
	if *tokens != "" {
		raw, err := os.ReadFile(*tokens)
		if err != nil {
			log.Fatal(err)
		}
		for _, ln := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			f := strings.Fields(ln)
			if len(f) == 2 {
				c.tokens = append(c.tokens, [2]string{f[0], f[1]})
			} else if len(f) == 1 {
				c.tokens = append(c.tokens, [2]string{f[0], ""})
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/open", func(w http.ResponseWriter, r *http.Request) {
		n, from, count, stall := intArg(r, "n", 0), intArg(r, "from", 0), intArg(r, "count", 1), intArg(r, "stall", 0)
		src := net.ParseIP(r.URL.Query().Get("src")) // nil when absent
		tag := r.URL.Query().Get("tag")
		specs := make([]*spec, n)
		for i := range specs {
			t := c.tokens[(from+i%count)%len(c.tokens)]
			specs[i] = &spec{uid: t[0], token: t[1], stall: i < stall, src: src, tag: tag}
		}
		c.mu.Lock()
		c.specs = append(c.specs, specs...)
		c.targets = nil
		c.mu.Unlock()
		c.openSpecs(specs, intArg(r, "conc", c.conc), false)
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/close", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, c.closeTag(r.URL.Query().Get("tag")))
	})
	mux.HandleFunc("/churn", func(w http.ResponseWriter, r *http.Request) {
		rate, _ := strconv.ParseFloat(r.URL.Query().Get("rate"), 64)
		hold := time.Duration(intArg(r, "hold_ms", 1000)) * time.Millisecond
		if rate > 0 {
			c.startChurn(rate, intArg(r, "from", 0), intArg(r, "count", 1), hold)
		} else {
			c.stopChurn()
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(c.stats())
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) { c.reset(); fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/closeall", func(w http.ResponseWriter, r *http.Request) {
		c.closeAll()
		c.mu.Lock()
		c.specs = nil
		c.mu.Unlock()
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/disconnect", func(w http.ResponseWriter, r *http.Request) {
		c.closeAll()
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/storm", func(w http.ResponseWriter, r *http.Request) {
		replay := intArg(r, "replay", 0) == 1
		targets := map[string]int64{}
		raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<24))
		for _, ln := range strings.Split(string(raw), "\n") {
			if f := strings.Fields(ln); len(f) == 2 {
				if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					targets[f[0]] = v
				}
			}
		}
		c.closeAll()
		c.reset()
		c.mu.Lock()
		specs := append([]*spec(nil), c.specs...)
		c.targets = targets
		c.mu.Unlock()
		c.stormT0.Store(time.Now().UnixNano())
		c.openSpecs(specs, len(specs), replay)
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/quit", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "bye")
		go func() { time.Sleep(50 * time.Millisecond); os.Exit(0) }()
	})
	go func() { time.Sleep(*life); log.Print("max-life reached"); os.Exit(2) }()
	srv := &http.Server{Addr: *ctl, Handler: mux}
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
