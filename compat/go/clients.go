package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	rocketmq "github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

// newProducer starts a producer of its own client instance (instance name = group), so that
// producers and consumers of one scenario do not share, and shut down, one another's connections.
func newProducer(env *environment, group string, extra ...producer.Option) (rocketmq.Producer, error) {
	opts := append([]producer.Option{
		producer.WithNsResolver(primitive.NewPassthroughResolver([]string{env.namesrv})),
		producer.WithGroupName(group),
		producer.WithInstanceName(group),
		producer.WithRetry(2),
	}, extra...)
	p, err := rocketmq.NewProducer(opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot create producer %s: %w", group, err)
	}
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("cannot start producer %s: %w", group, err)
	}
	return p, nil
}

// received is one delivered message as a user sees it.
type received struct {
	Body  string
	Tag   string
	Keys  string
	Idx   string // the "idx" user property
	Queue int    // diagnostics only: queue counts differ between brokers
}

func (r received) tuple() [4]string { return [4]string{r.Body, r.Tag, r.Keys, r.Idx} }

// inbox collects what a push consumer's listener was handed.
type inbox struct {
	mu     sync.Mutex
	all    []received
	counts map[[4]string]int
}

func newInbox() *inbox { return &inbox{counts: map[[4]string]int{}} }

func (in *inbox) listener(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, m := range msgs {
		queue := -1
		if m.Queue != nil {
			queue = m.Queue.QueueId
		}
		r := received{Body: string(m.Body), Tag: m.GetTags(), Keys: m.GetKeys(), Idx: m.GetProperty("idx"), Queue: queue}
		in.all = append(in.all, r)
		in.counts[r.tuple()]++
		if in.counts[r.tuple()] > 1 {
			logf("delivered again (%d times): %v queue %d offset %d reconsumeTimes %d",
				in.counts[r.tuple()], r.tuple(), queue, m.QueueOffset, m.ReconsumeTimes)
		}
	}
	return consumer.ConsumeSuccess, nil
}

// count returns how many times the tuple was delivered.
func (in *inbox) count(t [4]string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.counts[t]
}

// countWhere counts the distinct tuples satisfying pred.
func (in *inbox) countWhere(pred func([4]string) bool) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := 0
	for t := range in.counts {
		if pred(t) {
			n++
		}
	}
	return n
}

func (in *inbox) snapshot() (all []received, counts map[[4]string]int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	counts = make(map[[4]string]int, len(in.counts))
	for k, v := range in.counts {
		counts[k] = v
	}
	return append([]received(nil), in.all...), counts
}

// sortTuples orders tuples by their idx property (numerically), then by the other fields.
func sortTuples(ts [][4]string) {
	sort.Slice(ts, func(i, j int) bool {
		a, errA := strconv.Atoi(ts[i][3])
		b, errB := strconv.Atoi(ts[j][3])
		if errA == nil && errB == nil && a != b {
			return a < b
		}
		for k := 0; k < 4; k++ {
			if ts[i][k] != ts[j][k] {
				return ts[i][k] < ts[j][k]
			}
		}
		return false
	})
}

// startPushConsumer starts a clustering push consumer of `group` on `topic`.
//
// The Go client refuses to start a consumer whose topic has no route on the NameServer yet
// ("route info not found"); a broker registers an auto-created topic with the NameServer
// shortly after the first send, so the start is retried (each time with a fresh client
// instance, since a failed start shuts its instance down) until the deadline.
func startPushConsumer(env *environment, group, topic string, selector consumer.MessageSelector,
	in *inbox, deadline time.Time) (rocketmq.PushConsumer, error) {
	var lastErr error
	for attempt := 1; ; attempt++ {
		c, err := rocketmq.NewPushConsumer(
			consumer.WithNsResolver(primitive.NewPassthroughResolver([]string{env.namesrv})),
			consumer.WithGroupName(group),
			consumer.WithInstance(fmt.Sprintf("%s-%d", group, attempt)),
			consumer.WithConsumerModel(consumer.Clustering),
			consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset),
		)
		if err != nil {
			return nil, fmt.Errorf("cannot create push consumer %s: %w", group, err)
		}
		if err := c.Subscribe(topic, selector, in.listener); err != nil {
			return nil, fmt.Errorf("cannot subscribe %s to %s: %w", group, topic, err)
		}
		if err = c.Start(); err == nil {
			if attempt > 1 {
				logf("push consumer %s started at attempt %d", group, attempt)
			}
			return c, nil
		}
		lastErr = err
		logf("push consumer %s start attempt %d: %v", group, attempt, err)
		shutdownBounded("push consumer "+group, c.Shutdown)
		if !time.Now().Add(500 * time.Millisecond).Before(deadline) {
			return nil, fmt.Errorf("the push consumer of %s could not start: %v", topic, lastErr)
		}
		time.Sleep(500 * time.Millisecond) // back-off between bounded start attempts
	}
}
