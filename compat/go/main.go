// Command compat-go runs one compatibility scenario with Apache RocketMQ's Go client
// (github.com/apache/rocketmq-client-go/v2) against the cluster named in its environment.
//
// Usage: compat-go <scenario-name>
//
// Environment (set by compat/harness):
//
//	COMPAT_NAMESRV   host:port of the NameServer
//	COMPAT_BROKER    host:port of the broker (diagnostics only: the client finds it by route)
//	COMPAT_SCENARIO  the scenario's name
//	COMPAT_WORK      a scratch directory
//	COMPAT_GO_LOG_LEVEL  optional: the Go client's log level (default warn), for diagnosis
//
// Protocol on stdout (see compat/harness/scenario.py): "OBSERVE {json}" for facts a user can see,
// which must be identical on every target; "RESTART_BROKER", answered by "RESTARTED" or
// "FAILED <why>" on stdin; finally "PASS" or "FAIL <reason>". Everything else goes to stderr.
// The program never looks at COMPAT_TARGET: it must behave the same against any broker.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

// A scenario returns nil when its checks held, or an error whose text is the reason a user
// would understand. `deadline` is when it must have finished (a little before the harness's
// timeout_s, so that a slow run fails with a reason rather than being killed).
type scenarioFunc func(env *environment, deadline time.Time) error

type scenarioDef struct {
	run scenarioFunc
	// budget is the scenario's own deadline; with up to 4 s of client shutdown after it, it stays
	// below timeout_s in compat/scenarios.toml.
	budget time.Duration
}

var scenarios = map[string]scenarioDef{
	"go-produce-consume": {produceConsume, 52 * time.Second}, // timeout_s 60
	"go-broker-restart":  {brokerRestart, 110 * time.Second}, // timeout_s 120
}

type environment struct {
	namesrv string
	broker  string
	work    string
	stdin   <-chan string // lines from the harness; closed at EOF
}

func main() {
	// The client logs through logrus to stderr; keep it to warnings and worse (COMPAT_GO_LOG_LEVEL
	// = debug or info overrides this when diagnosing a run by hand).
	rlog.SetLogLevel("warn")
	if level := os.Getenv("COMPAT_GO_LOG_LEVEL"); level != "" {
		rlog.SetLogLevel(level)
	}

	if len(os.Args) != 2 {
		names := make([]string, 0, len(scenarios))
		for name := range scenarios {
			names = append(names, name)
		}
		sort.Strings(names)
		finish(fmt.Errorf("usage: %s <scenario>; scenarios: %s", os.Args[0], strings.Join(names, ", ")))
	}
	name := os.Args[1]
	def, ok := scenarios[name]
	if !ok {
		finish(fmt.Errorf("unknown scenario %q", name))
	}
	env := &environment{
		namesrv: os.Getenv("COMPAT_NAMESRV"),
		broker:  os.Getenv("COMPAT_BROKER"),
		work:    os.Getenv("COMPAT_WORK"),
		stdin:   readLines(),
	}
	if env.namesrv == "" {
		finish(fmt.Errorf("COMPAT_NAMESRV is not set"))
	}
	logf("scenario %s: namesrv %s, broker %s", name, env.namesrv, env.broker)
	started := time.Now()
	err := def.run(env, started.Add(def.budget))
	closersMu.Lock()
	registered := closers
	closersMu.Unlock()
	shutdownAll(registered, 4*time.Second)
	logf("scenario %s finished after %.1f s", name, time.Since(started).Seconds())
	finish(err)
}

// finish prints the verdict and exits: 0 after PASS, 1 after FAIL.
func finish(err error) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	if err == nil {
		fmt.Println("PASS")
		os.Exit(0)
	}
	reason := strings.Join(strings.Fields(err.Error()), " ") // one line
	fmt.Println("FAIL " + reason)
	os.Exit(1)
}

var stdoutMu sync.Mutex

// observe prints one OBSERVE line. Map keys come out sorted (encoding/json sorts them); every
// non-ASCII character is written as a \u escape so the line does not depend on the reader's
// locale.
func observe(facts map[string]any) {
	data, err := json.Marshal(facts)
	if err != nil {
		panic(err) // only plain values are observed
	}
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	fmt.Println("OBSERVE " + asciiJSON(string(data)))
}

func asciiJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x80:
			b.WriteRune(r)
		case r <= 0xFFFF:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		}
	}
	return b.String()
}

// say writes a protocol line (RESTART_BROKER) to the harness.
func say(line string) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	fmt.Println(line)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s compat-go: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func readLines() <-chan string {
	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		scanner := bufio.NewScanner(os.Stdin)
		for scanner.Scan() {
			lines <- scanner.Text()
		}
	}()
	return lines
}

// restartBroker asks the harness to restart the broker and waits for its answer.
func restartBroker(env *environment, deadline time.Time) error {
	say("RESTART_BROKER")
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case line, ok := <-env.stdin:
		switch {
		case !ok:
			return fmt.Errorf("the harness closed stdin instead of answering RESTART_BROKER")
		case line == "RESTARTED":
			return nil
		case strings.HasPrefix(line, "FAILED"):
			return fmt.Errorf("the harness could not restart the broker: %s", strings.TrimSpace(strings.TrimPrefix(line, "FAILED")))
		default:
			return fmt.Errorf("unexpected answer to RESTART_BROKER: %q", line)
		}
	case <-timer.C:
		return fmt.Errorf("the broker restart did not finish in time")
	}
}

// waitFor polls `cond` every 50 ms until it holds (nil) or the deadline passes (an error naming
// `what`, with `progress()` appended when given).
func waitFor(deadline time.Time, what string, cond func() bool, progress func() string) error {
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()
	for {
		if cond() {
			return nil
		}
		if !time.Now().Before(deadline) {
			if progress != nil {
				return fmt.Errorf("timed out waiting for %s (%s)", what, progress())
			}
			return fmt.Errorf("timed out waiting for %s", what)
		}
		<-ticker.C
	}
}

// earlier returns the earlier of the deadline and now+d.
func earlier(deadline time.Time, d time.Duration) time.Time {
	if t := time.Now().Add(d); t.Before(deadline) {
		return t
	}
	return deadline
}

// shutdownBounded calls shutdown but stops waiting after 2 s: a client that hangs while
// unregistering must not turn a verdict into a timeout.
func shutdownBounded(what string, shutdown func() error) {
	shutdownAll([]closer{{what, shutdown}}, 2*time.Second)
}

type closer struct {
	what     string
	shutdown func() error
}

var (
	closersMu sync.Mutex
	closers   []closer
)

// atExit registers a client to shut down once the scenario has returned, before the verdict.
func atExit(what string, shutdown func() error) {
	closersMu.Lock()
	defer closersMu.Unlock()
	closers = append(closers, closer{what, shutdown})
}

// shutdownAll shuts the clients down concurrently (consumers persist their offsets and
// unregister) and waits at most `limit` for them all.
func shutdownAll(list []closer, limit time.Duration) {
	var wg sync.WaitGroup
	for _, c := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.shutdown(); err != nil {
				logf("%s shutdown: %v", c.what, err)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		logf("client shutdown still running after %s; not waiting", limit)
	}
}

// statusName spells a send status as the Java client's SendStatus does.
func statusName(status primitive.SendStatus) string {
	switch status {
	case primitive.SendOK:
		return "SEND_OK"
	case primitive.SendFlushDiskTimeout:
		return "FLUSH_DISK_TIMEOUT"
	case primitive.SendFlushSlaveTimeout:
		return "FLUSH_SLAVE_TIMEOUT"
	case primitive.SendSlaveNotAvailable:
		return "SLAVE_NOT_AVAILABLE"
	default:
		return fmt.Sprintf("STATUS_%d", int(status))
	}
}

// sendSyncWithin sends one message with SendSync, bounded by the deadline.
func sendSyncWithin(p interface {
	SendSync(context.Context, ...*primitive.Message) (*primitive.SendResult, error)
}, msg *primitive.Message, deadline time.Time) (*primitive.SendResult, error) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return p.SendSync(ctx, msg)
}
