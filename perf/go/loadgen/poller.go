package main

// One reader for every connection of the worker: an epoll instance (level-triggered, one entry
// per socket) whose own fd sits in Go's netpoller, so the reading goroutine parks like any other
// instead of blocking a thread. Each readiness is one read() into a shared buffer, parsed in
// place; only a partial frame is copied into the connection's own buffer. The loop alone reads
// and closes the sockets it holds: others ask for a close with shutdown(2) and the loop sees EOF.

import (
	"os"
	"syscall"
)

type poller struct {
	epfd   int
	file   *os.File // keeps epfd registered with Go's netpoller
	conns  []*conn  // epoll data: index into conns, generation of the socket
	events []syscall.EpollEvent
	buf    []byte
}

func newPoller(conns []*conn) (*poller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	return &poller{
		epfd:   epfd,
		file:   os.NewFile(uintptr(epfd), "loadgen-epoll"),
		conns:  conns,
		events: make([]syscall.EpollEvent, 256),
		buf:    make([]byte, 64<<10),
	}, nil
}

func (p *poller) add(fd int, slot int, gen int32) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(slot), Pad: gen}
	return syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev)
}

func (p *poller) del(fd int) {
	_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
}

// run reads until the process exits.
func (p *poller) run() {
	rc, err := p.file.SyscallConn()
	if err != nil {
		logf("poller: %v", err)
		return
	}
	for {
		err := rc.Read(func(uintptr) bool {
			n, err := syscall.EpollWait(p.epfd, p.events, 0)
			if err != nil || n <= 0 {
				return err == syscall.EINTR // EINTR: try again at once; nothing ready: park
			}
			for i := 0; i < n; i++ {
				ev := &p.events[i]
				c := p.conns[ev.Fd]
				if s := c.sock.Load(); s != nil && s.gen == ev.Pad && !s.gone {
					c.readable(s, p)
				}
			}
			return true
		})
		if err != nil {
			logf("poller: %v", err)
			return
		}
	}
}

// readable: read once (again if the buffer filled up), feed the frames, close on EOF or error.
func (c *conn) readable(s *socket, p *poller) {
	for {
		n, err := syscall.Read(s.fd, p.buf)
		if n > 0 {
			if code, closed := c.feed(s, p.buf[:n]); closed {
				c.teardown(s, p, code)
				return
			}
			if n < len(p.buf) {
				return
			}
			continue
		}
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return
		}
		c.teardown(s, p, s.closeCode) // EOF (n == 0) or a socket error
		return
	}
}

// feed parses the frames in data (after any partial frame kept from the last read).
func (c *conn) feed(s *socket, data []byte) (closeCode int, closed bool) {
	b := data
	if len(s.pending) > 0 {
		s.pending = append(s.pending, data...)
		b = s.pending
	}
	for len(b) > 0 {
		fin, op, payload, n, ok, err := parseFrame(b)
		if err != nil {
			return 1002, true
		}
		if !ok {
			break
		}
		switch op {
		case opText, opBinary:
			if s.fragmented {
				return 1002, true
			}
			if fin {
				c.deliver(s, payload)
			} else {
				s.frag = append(s.frag[:0], payload...)
				s.fragmented = true
			}
		case opContinuation:
			if !s.fragmented {
				return 1002, true
			}
			s.frag = append(s.frag, payload...)
			if fin {
				s.fragmented = false
				c.deliver(s, s.frag)
				s.frag = s.frag[:0]
			}
		case opPing:
			_ = c.writeFrame(opPong, payload)
		case opPong:
		case opClose:
			code := 1005
			if len(payload) >= 2 {
				code = int(payload[0])<<8 | int(payload[1])
			}
			var echo [2]byte
			echo[0], echo[1] = byte(code>>8), byte(code)
			if code == 1005 {
				_ = c.writeFrame(opClose, nil)
			} else {
				_ = c.writeFrame(opClose, echo[:])
			}
			return code, true
		default:
			return 1002, true
		}
		b = b[n:]
	}
	// keep a partial frame for the next read (copy: b may point into the shared read buffer)
	s.pending = append(s.pending[:0], b...)
	if cap(s.pending) > 256<<10 && len(s.pending) < 4<<10 {
		s.pending = append([]byte(nil), s.pending...)
	}
	return 0, false
}

func (c *conn) deliver(s *socket, msg []byte) {
	c.w.frames.Add(1)
	s.h.frame(msg)
}

// teardown: the loop closes a socket it holds: out of epoll, fd closed, the loss reported.
func (c *conn) teardown(s *socket, p *poller, code int) {
	p.del(s.fd)
	c.wmu.Lock()
	s.gone = true
	fd := s.fd
	c.wmu.Unlock()
	_ = syscall.Close(fd)
	c.sock.CompareAndSwap(s, nil)
	if code == 0 {
		code = 1006
	}
	c.closed(s.a, code)
	close(s.done)
}
