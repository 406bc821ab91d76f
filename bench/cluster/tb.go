package cluster

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Main runs f with a testing.TB for a program (the bench): Fatal stops f
// and becomes the returned error, Errorf marks it failed and is printed to
// log, TempDir lives under one directory removed at the end (unless keep),
// and Cleanup functions run when f returns, last first. Only f's own
// goroutine may call Fatal.
func Main(log io.Writer, keep bool, f func(t testing.TB)) (err error) {
	dir, err := os.MkdirTemp("", "nightshift-cluster-")
	if err != nil {
		return err
	}
	tb := &programTB{log: log, dir: dir}
	defer func() {
		r := recover()
		tb.runCleanups()
		if binPath != "" {
			os.RemoveAll(filepath.Dir(binPath)) // the nightshift binary Main's run built
		}
		if keep {
			fmt.Fprintf(log, "kept %s\n", dir)
		} else {
			os.RemoveAll(dir)
		}
		switch r := r.(type) {
		case nil:
		case stop:
			if err == nil {
				err = errors.New(string(r))
			}
			return
		default:
			panic(r)
		}
		if err == nil && tb.Failed() {
			err = errors.New("some checks failed (see above)")
		}
	}()
	f(tb)
	return nil
}

type stop string

// programTB implements the testing.TB methods the cluster helpers and
// githubtest use; the embedded nil TB satisfies the interface's private
// method (any other method panics).
type programTB struct {
	testing.TB
	log io.Writer
	dir string

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	n        int
}

func (p *programTB) Helper()      {}
func (p *programTB) Name() string { return "bench" }
func (p *programTB) Log(a ...any) { fmt.Fprintln(p.log, a...) }
func (p *programTB) Logf(format string, a ...any) {
	fmt.Fprintf(p.log, format+"\n", a...)
}
func (p *programTB) Error(a ...any) { p.Fail(); p.Log(a...) }
func (p *programTB) Errorf(format string, a ...any) {
	p.Fail()
	p.Logf(format, a...)
}
func (p *programTB) Fatal(a ...any)                 { panic(stop(fmt.Sprint(a...))) }
func (p *programTB) Fatalf(format string, a ...any) { panic(stop(fmt.Sprintf(format, a...))) }
func (p *programTB) FailNow()                       { panic(stop("failed")) }
func (p *programTB) Skip(a ...any)                  { panic(stop("skipped: " + fmt.Sprint(a...))) }
func (p *programTB) Skipf(format string, a ...any) {
	panic(stop("skipped: " + fmt.Sprintf(format, a...)))
}
func (p *programTB) SkipNow()      { panic(stop("skipped")) }
func (p *programTB) Skipped() bool { return false }

func (p *programTB) Fail() {
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
}

func (p *programTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *programTB) TempDir() string {
	p.mu.Lock()
	p.n++
	n := p.n
	p.mu.Unlock()
	d := fmt.Sprintf("%s/tmp%03d", p.dir, n)
	if err := os.MkdirAll(d, 0o700); err != nil {
		panic(stop(err.Error()))
	}
	return d
}

func (p *programTB) Cleanup(f func()) {
	p.mu.Lock()
	p.cleanups = append(p.cleanups, f)
	p.mu.Unlock()
}

func (p *programTB) runCleanups() {
	for {
		p.mu.Lock()
		if len(p.cleanups) == 0 {
			p.mu.Unlock()
			return
		}
		f := p.cleanups[len(p.cleanups)-1]
		p.cleanups = p.cleanups[:len(p.cleanups)-1]
		p.mu.Unlock()
		f()
	}
}
