package main

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// logFlushEvery is how long a log line may wait in the buffer.
const logFlushEvery = 100 * time.Millisecond

// logBuffer batches log lines into fewer writes. Every request writes an
// access line, and a write(2) per line is a system call per request on top
// of the response's own, and a lock every request waits on while a slow
// reader of stderr (a pipe to a log collector) holds the write up:
// BenchmarkRouter puts GET /healthz through the whole tree at 10.4 µs with a
// write per line and 8.9 µs buffered. Lines wait at most logFlushEvery; a
// record at Warn or above is written at once with everything before it
// (see flushingHandler), and close writes the rest, so what explains a
// failure is never held back. A crash the process cannot log loses at most
// logFlushEvery of access lines.
type logBuffer struct {
	mu     sync.Mutex
	w      *bufio.Writer
	closed bool // then every line is written at once
	stop   chan struct{}
	done   chan struct{}
}

func newLogBuffer(out io.Writer) *logBuffer {
	b := &logBuffer{w: bufio.NewWriterSize(out, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	go b.flushLoop()
	return b
}

// Write takes one record's line: slog handlers write each record whole.
func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.w.Write(p)
	if err == nil && b.closed {
		err = b.w.Flush()
	}
	return n, err
}

func (b *logBuffer) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.w.Flush()
}

func (b *logBuffer) flushLoop() {
	defer close(b.done)
	t := time.NewTicker(logFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.flush()
		case <-b.stop:
			b.flush()
			return
		}
	}
}

// close writes what is buffered and stops the flushing; later lines are
// written at once.
func (b *logBuffer) close() {
	close(b.stop)
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.w.Flush()
	b.closed = true
}

// flushingHandler writes the buffer out after each record at Warn or
// above.
type flushingHandler struct {
	slog.Handler
	buf *logBuffer
}

func (h flushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.buf.flush()
	}
	return err
}

func (h flushingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushingHandler{h.Handler.WithAttrs(attrs), h.buf}
}

func (h flushingHandler) WithGroup(name string) slog.Handler {
	return flushingHandler{h.Handler.WithGroup(name), h.buf}
}
