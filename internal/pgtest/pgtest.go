// Package pgtest runs a private PostgreSQL cluster for tests that need to
// stop, kill and restart the database without touching the shared test
// server (BROKER_TEST_DATABASE_URL).
//
// [Start] creates a cluster with initdb in a temporary directory owned by
// the postgres user, on a free loopback port, with its Unix socket in that
// directory, and removes everything when the test ends. The PostgreSQL server
// binaries are looked up under /usr/lib/postgresql/<version>/bin (the highest
// version wins); they need not be on PATH.
//
// initdb and postgres refuse to run as root, so the tests must run as root
// (as CI does) and the cluster runs as the postgres user: initdb through
// runuser, the postmaster as a direct child of the test process with the
// postgres user's credentials. Being our own child, the postmaster is reaped
// by us, so [Cluster.Kill] (a crash) and [Cluster.Start] (a restart on the
// same data directory and port) do not depend on what init does with
// orphans. When the tests do not run as root, or initdb, runuser or the
// postgres user are missing, [Start] skips the test, or fails it when
// CI=true.
//
// The cluster runs with fsync=off (a process crash loses nothing the kernel
// has accepted; only a machine crash would) and trust authentication for
// user postgres over TCP on 127.0.0.1.
package pgtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Cluster is a private PostgreSQL server. Its methods are safe for
// concurrent use, and Stop, Kill and Start report errors instead of failing
// the test, so they may be called from any goroutine.
type Cluster struct {
	t       testing.TB
	bin     string // directory of initdb, postgres
	base    string // temporary directory, owned by postgres
	data    string // data directory
	sock    string // Unix socket directory
	logPath string
	uid     uint32
	gid     uint32

	mu   sync.Mutex
	port int
	cmd  *exec.Cmd     // the running postmaster, nil when stopped
	done chan struct{} // closed when cmd has exited and been reaped
	log  *os.File
}

// startTimeout bounds how long the postmaster may take to accept
// connections (crash recovery included) and to shut down.
const startTimeout = 60 * time.Second

// Start creates and starts a private cluster; it is stopped and its
// directory removed when the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, reason := prepare()
	if reason != "" {
		msg := "pgtest: no private PostgreSQL cluster: " + reason
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	c.t = t
	t.Cleanup(c.cleanup)
	if out, err := c.asPostgres(filepath.Join(c.bin, "initdb"), "-D", c.data, "-A", "trust", "-U", "postgres",
		"--no-sync", "-E", "UTF8", "--locale=C").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	var err error
	if c.log, err = os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// A free port may be taken by someone else before the postmaster binds
	// it; try a few.
	for attempt := 0; ; attempt++ {
		if c.port, err = freePort(); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		err = c.Start()
		if err == nil {
			return c
		}
		if attempt == 2 || !strings.Contains(c.Log(), "could not bind") {
			t.Fatalf("pgtest: %v", err)
		}
	}
}

// prepare finds what a cluster needs and creates its directories. It
// returns a reason when a cluster cannot be made here.
func prepare() (*Cluster, string) {
	if os.Geteuid() != 0 {
		return nil, "the tests must run as root, to run initdb and postgres as the postgres user (initdb refuses to run as root)"
	}
	bin := serverBinaries()
	if bin == "" {
		return nil, "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
	}
	if runuserPath() == "" {
		return nil, "runuser (util-linux) is not installed"
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, "no postgres user: " + err.Error()
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Sprintf("postgres user has uid %q gid %q", u.Uid, u.Gid)
	}
	// t.TempDir() is private to root (0700); the postgres user must be able
	// to reach its directory, so it goes under a world-traversable base.
	root := ""
	for _, d := range []string{os.TempDir(), "/tmp", "/var/tmp"} {
		if traversable(d) {
			root = d
			break
		}
	}
	if root == "" {
		return nil, "no temporary directory the postgres user can reach"
	}
	base, err := os.MkdirTemp(root, "pgtest-")
	if err != nil {
		return nil, err.Error()
	}
	c := &Cluster{
		bin: bin, base: base,
		data: filepath.Join(base, "data"), sock: filepath.Join(base, "sock"), logPath: filepath.Join(base, "postgres.log"),
		uid: uint32(uid), gid: uint32(gid),
	}
	err = os.Mkdir(c.sock, 0o700)
	if err == nil {
		err = errors.Join(os.Chown(base, int(c.uid), int(c.gid)), os.Chown(c.sock, int(c.uid), int(c.gid)))
	}
	if err != nil {
		os.RemoveAll(base)
		return nil, err.Error()
	}
	return c, ""
}

// serverBinaries returns the bin directory of the highest installed
// PostgreSQL version, or "".
func serverBinaries() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	var best string
	var bestVer []int
	for _, p := range dirs {
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err != nil {
			continue
		}
		var ver []int
		for f := range strings.SplitSeq(filepath.Base(filepath.Dir(filepath.Dir(p))), ".") {
			n, err := strconv.Atoi(f)
			if err != nil {
				ver = nil
				break
			}
			ver = append(ver, n)
		}
		if ver != nil && (bestVer == nil || slices.Compare(ver, bestVer) > 0) {
			best, bestVer = filepath.Dir(p), ver
		}
	}
	return best
}

func runuserPath() string {
	if p, err := exec.LookPath("runuser"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// traversable reports whether every directory from / to dir lets others
// through.
func traversable(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) asPostgres(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(runuserPath(), append([]string{"-u", "postgres", "--", name}, args...)...)
	cmd.Dir = c.base
	return cmd
}

// URL is the cluster's connection URL: user postgres, database postgres,
// over TCP on 127.0.0.1.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port())
}

// Port is the TCP port the cluster listens on (the same across restarts).
func (c *Cluster) Port() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.port
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.data }

// Log returns what the server has logged so far.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logPath)
	return string(b)
}

// Running reports whether the postmaster is running.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cmd != nil
}

// Start starts the stopped (or killed) cluster again on the same data
// directory and port, and waits until it accepts connections, after crash
// recovery when it was killed.
func (c *Cluster) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil {
		return errors.New("pgtest: start: already running")
	}
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), "-D", c.data,
		"-p", strconv.Itoa(c.port), "-k", c.sock,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
		"-c", "shared_buffers=16MB", "-c", "max_connections=100")
	cmd.Dir = c.base
	cmd.Stdout, cmd.Stderr = c.log, c.log
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: []uint32{}},
		Setpgid:    true,
		// If the test binary dies, take the cluster down with it
		// (SIGQUIT is PostgreSQL's immediate shutdown).
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	if err := c.waitReady(cmd.Process.Pid, done); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return err
	}
	c.cmd, c.done = cmd, done
	return nil
}

// waitReady polls postmaster.pid until the postmaster with pid reports
// "ready" (what pg_ctl -w waits for), or fails when it exits.
func (c *Cluster) waitReady(pid int, done <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	for {
		if b, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid")); err == nil {
			lines := strings.Split(string(b), "\n")
			if len(lines) >= 8 && strings.TrimSpace(lines[0]) == strconv.Itoa(pid) && strings.TrimSpace(lines[7]) == "ready" {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("pgtest: postgres exited at start:\n%s", tail(c.Log(), 20))
		case <-time.After(20 * time.Millisecond): // polling a process we do not control
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres not ready after %v:\n%s", startTimeout, tail(c.Log(), 20))
		}
	}
}

// Stop shuts the cluster down cleanly with a fast shutdown (as
// pg_ctl stop -m fast: sessions are terminated, open transactions rolled
// back) and waits until the postmaster has exited.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return errors.New("pgtest: stop: not running")
	}
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return fmt.Errorf("pgtest: stop: %w", err)
	}
	select {
	case <-c.done:
	case <-time.After(startTimeout):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.cmd = nil
		return errors.New("pgtest: stop: postgres did not shut down; killed")
	}
	c.cmd = nil
	return nil
}

// Kill crashes the cluster: the postmaster and every one of its processes
// get SIGKILL, leaving the data directory as a power cut would leave it
// (minus what the kernel already holds). The next [Cluster.Start] runs
// crash recovery.
func (c *Cluster) Kill() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return errors.New("pgtest: kill: not running")
	}
	pid := c.cmd.Process.Pid
	// Freeze the postmaster so that it forks no new backend while we list
	// its children; they run in sessions of their own, so no process group
	// covers them all.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	children := childrenOf(pid)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("pgtest: kill: %w", err)
	}
	for _, ch := range children {
		_ = syscall.Kill(ch, syscall.SIGKILL)
	}
	<-c.done
	c.cmd = nil
	// The shared memory is free for the next postmaster once every child
	// is gone (or a zombie, which holds none).
	deadline := time.Now().Add(startTimeout)
	for _, ch := range children {
		for alive(ch) {
			if time.Now().After(deadline) {
				return fmt.Errorf("pgtest: kill: postgres process %d survived SIGKILL", ch)
			}
			time.Sleep(10 * time.Millisecond) // polling the kernel for the process's end
		}
	}
	return nil
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(n); ok && ppid == pid {
			out = append(out, n)
		}
	}
	return out
}

// procStat reads the parent pid and state of process pid.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err == nil
}

func alive(pid int) bool {
	_, state, ok := procStat(pid)
	return ok && state != 'Z' && state != 'X'
}

func (c *Cluster) cleanup() {
	c.mu.Lock()
	running := c.cmd != nil
	c.mu.Unlock()
	if running {
		if err := c.Stop(); err != nil {
			c.t.Errorf("%v", err)
		}
	}
	if c.t != nil && c.t.Failed() {
		c.t.Logf("pgtest: PostgreSQL log (last lines):\n%s", tail(c.Log(), 40))
	}
	if c.log != nil {
		c.log.Close()
	}
	if err := os.RemoveAll(c.base); err != nil {
		c.t.Errorf("pgtest: %v", err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
