package main

// Minimal WebSocket client (RFC 6455) for the load generator: the opening handshake over Go's net
// (dial from an explicit source address/port, deadlines), then the socket's fd leaves Go's
// netpoller for the worker's own epoll loop (poller.go). Frames: masked client frames out;
// unmasked server frames in, parsed in place from the read buffer (fragmentation, ping/pong and
// close handled); no extensions (no permessage-deflate, as the Node worker).

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	maxFrame = 16 << 20 // a server frame larger than this is a protocol error
)

var errProtocol = errors.New("websocket protocol error")

// appendClientFrame appends one final client frame (masked with key) carrying payload.
func appendClientFrame(dst []byte, op byte, payload []byte, key uint32) []byte {
	dst = append(dst, 0x80|op)
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n < 1<<16:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	m := [4]byte{byte(key), byte(key >> 8), byte(key >> 16), byte(key >> 24)}
	dst = append(dst, m[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	p := dst[start:]
	for i := range p {
		p[i] ^= m[i&3]
	}
	return dst
}

// parseFrame reads one frame from the start of p. ok=false: incomplete (wait for more bytes).
// A masked server frame is unmasked in place.
func parseFrame(p []byte) (fin bool, op byte, payload []byte, n int, ok bool, err error) {
	if len(p) < 2 {
		return false, 0, nil, 0, false, nil
	}
	fin = p[0]&0x80 != 0
	if p[0]&0x70 != 0 {
		return false, 0, nil, 0, false, errProtocol // RSV bits without an extension
	}
	op = p[0] & 0x0f
	masked := p[1]&0x80 != 0
	l := uint64(p[1] & 0x7f)
	h := 2
	switch l {
	case 126:
		if len(p) < 4 {
			return false, 0, nil, 0, false, nil
		}
		l = uint64(p[2])<<8 | uint64(p[3])
		h = 4
	case 127:
		if len(p) < 10 {
			return false, 0, nil, 0, false, nil
		}
		l = 0
		for i := 2; i < 10; i++ {
			l = l<<8 | uint64(p[i])
		}
		h = 10
	}
	if l > maxFrame {
		return false, 0, nil, 0, false, errProtocol
	}
	if op >= opClose && (l > 125 || !fin) {
		return false, 0, nil, 0, false, errProtocol
	}
	var m []byte
	if masked {
		if len(p) < h+4 {
			return false, 0, nil, 0, false, nil
		}
		m = p[h : h+4]
		h += 4
	}
	if uint64(len(p)-h) < l {
		return false, 0, nil, 0, false, nil
	}
	payload = p[h : h+int(l)]
	if masked {
		for i := range payload {
			payload[i] ^= m[i&3]
		}
	}
	return fin, op, payload, h + int(l), true, nil
}

// target: a ws:// URL split for the handshake.
type target struct {
	hostPort string
	host     string // Host header
	path     string // request-target
}

func parseTarget(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, err
	}
	if u.Scheme != "ws" && u.Scheme != "http" {
		return target{}, fmt.Errorf("unsupported URL scheme %q (ws:// only)", u.Scheme)
	}
	hp := u.Host
	if u.Port() == "" {
		hp = net.JoinHostPort(u.Hostname(), "80")
	}
	p := u.RequestURI()
	if p == "" {
		p = "/"
	}
	return target{hostPort: hp, host: u.Host, path: p}, nil
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// handshake dials t from local (SO_REUSEADDR like libuv) and upgrades to WebSocket; it returns the
// detached socket fd (non-blocking, no longer in Go's netpoller) and any bytes read past the
// response head.
func handshake(ctx context.Context, t target, local *net.TCPAddr) (fd int, rest []byte, err error) {
	network := "tcp4"
	if local.IP.To4() == nil {
		network = "tcp6"
	}
	nd := net.Dialer{LocalAddr: local, Control: dialControl(local.Port == 0)}
	nc, err := nd.DialContext(ctx, network, t.hostPort)
	if err != nil {
		return -1, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = nc.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		_ = nc.SetDeadline(dl)
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET " + t.path + " HTTP/1.1\r\nHost: " + t.host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " +
		key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err = nc.Write([]byte(req)); err != nil {
		return -1, nil, err
	}
	buf := make([]byte, 0, 1024)
	var end int
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= 16<<10 {
				return -1, nil, errors.New("handshake response head too large")
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, rerr := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			end = i + 4
			break
		}
		if rerr != nil {
			return -1, nil, rerr
		}
	}
	head := string(buf[:end])
	lines := strings.Split(head, "\r\n")
	status := strings.Fields(lines[0])
	if len(status) < 2 || !strings.HasPrefix(status[0], "HTTP/1.") {
		return -1, nil, errors.New("Invalid HTTP response")
	}
	if code, _ := strconv.Atoi(status[1]); code != 101 {
		return -1, nil, fmt.Errorf("Unexpected server response: %d", code)
	}
	accept := ""
	for _, l := range lines[1:] {
		if i := strings.IndexByte(l, ':'); i > 0 && strings.EqualFold(strings.TrimSpace(l[:i]), "Sec-WebSocket-Accept") {
			accept = strings.TrimSpace(l[i+1:])
		}
	}
	if accept != acceptKey(key) {
		return -1, nil, errors.New("Invalid Sec-WebSocket-Accept header")
	}
	rest = append([]byte(nil), buf[end:]...)
	// detach: a duplicate of the fd (sharing O_NONBLOCK) for the epoll loop; closing the net.Conn
	// takes the original out of Go's netpoller without closing the socket
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		return -1, nil, err
	}
	nfd := -1
	var derr error
	if err = rc.Control(func(f uintptr) { nfd, derr = syscall.Dup(int(f)) }); err != nil {
		return -1, nil, err
	}
	if derr != nil {
		return -1, nil, derr
	}
	syscall.CloseOnExec(nfd)
	_ = nc.SetDeadline(time.Time{})
	ok = true
	_ = nc.Close()
	return nfd, rest, nil
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (not in package syscall).
const ipBindAddressNoPort = 24

// dialControl binds a connecting socket's local address with SO_REUSEADDR, as libuv does. With no
// port given it also defers the port's choice from bind to connect (IP_BIND_ADDRESS_NO_PORT): bind
// must find a port free for every destination, a search through every port the address holds,
// while connect needs one free for this destination only. In a reconnect storm of 10,000
// connections per source address that search took ~45% of the machine's CPU (perf record:
// inet_bhash2_conflict under __sys_bind), so the generator, not the server, set the pace.
func dialControl(anyPort bool) func(_, _ string, rc syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			if serr == nil && anyPort {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IP, ipBindAddressNoPort, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}
