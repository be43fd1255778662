package relay

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawSocket reads and writes a plain TCP socket with raw system calls.
//
// Go's net package enters every read and write through the scheduler's
// entersyscall, which wakes the runtime's sysmon thread whenever it sleeps
// (a futex wake-up), and a proxy that goes idle between bursts of calls
// puts sysmon to sleep over and over: in a CPU profile of serve at c=8
// those wake-ups were ~8% of the samples. The relay's sockets are
// non-blocking (the runtime's poller owns them), so a read or write
// returns at once and the scheduler need not be told about it. Waiting
// for the socket (EAGAIN) still goes through the poller, honouring the
// connection's deadlines, by way of syscall.RawConn.
//
// Reads must come from one goroutine at a time, and so must writes (the
// relay reads each connection on its reader goroutine and writes under
// the h2writer's lock); the callbacks are made once, so a call allocates
// nothing.
type rawSocket struct {
	nc  net.Conn
	raw syscall.RawConn

	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	readFn  func(fd uintptr) bool
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool
}

// newRawSocket wraps nc when it is a plain TCP connection, else returns
// nil (TLS goes through its record layer).
func newRawSocket(nc net.Conn) *rawSocket {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &rawSocket{nc: nc, raw: raw}
	s.readFn, s.writeFn = s.doRead, s.doWrite
	return s
}

func (s *rawSocket) doRead(fd uintptr) bool {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch e {
		case 0:
			s.rn = int(r)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // the poller waits for the socket
		default:
			s.rerr = e
			return true
		}
	}
}

// Read implements io.Reader, as net.Conn's Read does.
func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = p, 0, 0
	err := s.raw.Read(s.readFn)
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case s.rerr != 0:
		return 0, s.opError("read", s.rerr)
	case s.rn == 0:
		return 0, io.EOF
	}
	return s.rn, nil
}

func (s *rawSocket) doWrite(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&s.wbuf[s.wn])), uintptr(len(s.wbuf)-s.wn))
		switch e {
		case 0:
			s.wn += int(r)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			s.werr = e
			return true
		}
	}
	return true
}

// Write implements io.Writer, as net.Conn's Write does: all of p, or an
// error.
func (s *rawSocket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wbuf, s.wn, s.werr = p, 0, 0
	err := s.raw.Write(s.writeFn)
	s.wbuf = nil
	switch {
	case err != nil:
		return s.wn, err
	case s.werr != 0:
		return s.wn, s.opError("write", s.werr)
	}
	return s.wn, nil
}

// rawTryWrite makes one non-blocking write of p to fd, without telling the
// scheduler (see rawSocket), and returns what the socket took; it never
// waits, and leaves errors to a later write that may.
func rawTryWrite(fd uintptr, p []byte) int {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			return int(r)
		case syscall.EINTR:
		default:
			return 0
		}
	}
}

func (s *rawSocket) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.nc.LocalAddr(), Addr: s.nc.RemoteAddr(), Err: os.NewSyscallError(op, e)}
}
