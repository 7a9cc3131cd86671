package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

const (
	pcTopic          = "CompatGoProduceConsume"
	pcProducerGroup  = "compat-go-produce-consume-producer"
	pcSentinelGroup  = "compat-go-produce-consume-sentinel"
	pcConsumerGroup  = "compat-go-produce-consume-consumer"
	pcSyncCount      = 30
	pcAsyncCount     = 30
	pcSentinelPrefix = "sentinel-"
)

var pcTags = []string{"TagA", "TagB", "TagC"}

func pcMessage(i int) *primitive.Message {
	msg := primitive.NewMessage(pcTopic, []byte(fmt.Sprintf("body-%d-é✓", i)))
	msg.WithTag(pcTags[i%len(pcTags)])
	msg.WithKeys([]string{fmt.Sprintf("key-%d", i)})
	msg.WithProperty("idx", strconv.Itoa(i))
	return msg
}

func pcTuple(i int) [4]string {
	return [4]string{fmt.Sprintf("body-%d-é✓", i), pcTags[i%len(pcTags)], fmt.Sprintf("key-%d", i), strconv.Itoa(i)}
}

type sendOutcome struct {
	status string // SEND_OK, ... or "ERROR"
	queue  *primitive.MessageQueue
	err    error
}

// go-produce-consume: 30 SendSync and 30 SendAsync sends with tags TagA/TagB/TagC, keys, a user
// property and a non-ASCII body, all SEND_OK; a push consumer subscribed to "TagA || TagB" gets
// each TagA and TagB message exactly once with its fields intact, and never a TagC message.
func produceConsume(env *environment, deadline time.Time) error {
	p, err := newProducer(env, pcProducerGroup)
	if err != nil {
		return err
	}
	atExit("producer", p.Shutdown)

	total := pcSyncCount + pcAsyncCount
	outcomes := make([]sendOutcome, total)

	// SendSync, one at a time.
	sendDeadline := earlier(deadline, 20*time.Second)
	for i := 0; i < pcSyncCount; i++ {
		res, err := sendSyncWithin(p, pcMessage(i), sendDeadline)
		if err != nil {
			logf("SendSync %d: %v", i, err)
			outcomes[i] = sendOutcome{status: "ERROR", err: err}
			continue
		}
		outcomes[i] = sendOutcome{status: statusName(res.Status), queue: res.MessageQueue}
	}

	// SendAsync, all in flight together. v2.1.2 may call the callback twice for one failed send
	// (once with the error, once more while decoding the missing response), so only the first
	// call per message counts.
	var mu sync.Mutex
	answered := 0
	once := make([]sync.Once, total)
	expectedAnswers := 0
	for i := pcSyncCount; i < total; i++ {
		i := i
		callback := func(_ context.Context, res *primitive.SendResult, err error) {
			once[i].Do(func() {
				mu.Lock()
				defer mu.Unlock()
				answered++
				if err != nil || res == nil {
					logf("SendAsync %d callback: %v", i, err)
					outcomes[i] = sendOutcome{status: "ERROR", err: err}
					return
				}
				outcomes[i] = sendOutcome{status: statusName(res.Status), queue: res.MessageQueue}
			})
		}
		if err := p.SendAsync(context.Background(), callback, pcMessage(i)); err != nil {
			logf("SendAsync %d: %v", i, err)
			mu.Lock()
			outcomes[i] = sendOutcome{status: "ERROR", err: err}
			mu.Unlock()
			continue
		}
		expectedAnswers++
	}
	callbacksErr := waitFor(earlier(deadline, 15*time.Second), "the SendAsync callbacks",
		func() bool { mu.Lock(); defer mu.Unlock(); return answered >= expectedAnswers },
		func() string {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Sprintf("%d of %d answered", answered, expectedAnswers)
		})

	mu.Lock()
	syncStatuses, asyncStatuses := map[string]int{}, map[string]int{}
	var sendProblems []string
	for i, o := range outcomes {
		status := o.status
		if status == "" {
			status = "NO_CALLBACK"
		}
		if i < pcSyncCount {
			syncStatuses[status]++
		} else {
			asyncStatuses[status]++
		}
		if status != "SEND_OK" && len(sendProblems) < 3 {
			method := "SendSync"
			if i >= pcSyncCount {
				method = "SendAsync"
			}
			detail := status
			if o.err != nil {
				detail = o.err.Error()
			}
			sendProblems = append(sendProblems, fmt.Sprintf("%s of message %d: %s", method, i, detail))
		}
	}
	mu.Unlock()
	observe(map[string]any{"send_sync_status": syncStatuses, "send_async_status": asyncStatuses})
	if callbacksErr != nil {
		return callbacksErr
	}
	if syncStatuses["SEND_OK"] != pcSyncCount || asyncStatuses["SEND_OK"] != pcAsyncCount {
		return fmt.Errorf("not every send was SEND_OK: SendSync %v, SendAsync %v; first problems: %s",
			syncStatuses, asyncStatuses, strings.Join(sendProblems, "; "))
	}

	// Consume with the tag selector.
	expected := map[[4]string]bool{}
	for i := 0; i < total; i++ {
		if tag := pcTags[i%len(pcTags)]; tag == "TagA" || tag == "TagB" {
			expected[pcTuple(i)] = true
		}
	}
	in := newInbox()
	c, err := startPushConsumer(env, pcConsumerGroup, pcTopic,
		consumer.MessageSelector{Type: consumer.TAG, Expression: "TagA || TagB"}, in, earlier(deadline, 15*time.Second))
	if err != nil {
		return err
	}
	atExit("push consumer", c.Shutdown)

	allExpected := func() bool {
		for t := range expected {
			if in.count(t) == 0 {
				return false
			}
		}
		return true
	}
	deliveredExpected := func() string {
		n := in.countWhere(func(t [4]string) bool { return expected[t] })
		return fmt.Sprintf("%d of %d TagA/TagB messages delivered", n, len(expected))
	}
	waitErr := waitFor(earlier(deadline, 25*time.Second), "the TagA and TagB messages", allExpected, deliveredExpected)

	// Proving that no TagC message reaches the user's handler. (The Go client re-checks tags
	// itself, so this is what a user sees, not what the broker sends; the broker's own tag
	// filtering is checked by its tests.) A fixed quiet period proves nothing by itself,
	// and one sentinel proves little because nothing orders deliveries across queues. But within
	// one queue a pull returns messages in offset order and the consumer only moves past what a
	// pull returned: so once a message sent to queue q after every TagC message of q has been
	// delivered, the consumer has pulled past all of q's TagC messages, and any of them the
	// broker (or the client's own tag re-check) let through was handed to the consumer in the
	// same pull or an earlier one. Hence one TagA sentinel is sent to each queue that holds TagC
	// messages (the queues the send results named; how many there are depends on the broker's
	// queue count, so sentinels are left out of the observations). The listener runs each
	// message of a pull on its own goroutine, so a TagC message of the sentinel's own pull could
	// still be on its way; a short window after the last sentinel covers that.
	var sentinelErr error
	sentinels := map[[4]string]bool{}
	if waitErr == nil {
		sentinelErr = sendSentinels(env, outcomes, sentinels, deadline)
		if sentinelErr == nil {
			sentinelErr = waitFor(earlier(deadline, 20*time.Second), "the per-queue sentinel messages",
				func() bool {
					for t := range sentinels {
						if in.count(t) == 0 {
							return false
						}
					}
					return true
				},
				func() string {
					return fmt.Sprintf("%d of %d delivered", in.countWhere(func(t [4]string) bool { return sentinels[t] }), len(sentinels))
				})
		}
		if sentinelErr == nil {
			// Bounded observation window: stops early if a TagC message shows up.
			_ = waitFor(earlier(deadline, time.Second), "a TagC message",
				func() bool { return in.countWhere(func(t [4]string) bool { return t[1] == "TagC" }) > 0 }, nil)
		}
	}

	// Checks and observations.
	all, counts := in.snapshot()
	got := [][4]string{}
	tagCounts := map[string]int{}
	duplicates, tagC := 0, 0
	var missing, unexpected, duplicated [][4]string
	for _, r := range all {
		if strings.HasPrefix(r.Keys, pcSentinelPrefix) {
			continue
		}
		got = append(got, r.tuple())
		tagCounts[r.Tag]++
		if r.Tag == "TagC" {
			tagC++
		}
	}
	for t, n := range counts {
		if sentinels[t] {
			if n > 1 {
				duplicated = append(duplicated, t)
			}
			continue
		}
		if n > 1 {
			duplicates += n - 1
			duplicated = append(duplicated, t)
		}
		if !expected[t] {
			unexpected = append(unexpected, t)
		}
	}
	for t := range expected {
		if counts[t] == 0 {
			missing = append(missing, t)
		}
	}
	sortTuples(got)
	sortTuples(missing)
	sortTuples(unexpected)
	sortTuples(duplicated)
	observe(map[string]any{
		"received":             got,
		"received_count":       len(got),
		"received_tag_counts":  tagCounts,
		"duplicate_deliveries": duplicates,
	})
	logf("deliveries: %d (sentinels %d), per queue: %s", len(all), len(sentinels), perQueue(all))

	if len(unexpected) > 0 {
		return fmt.Errorf("the consumer got %d message(s) that do not match what was sent for \"TagA || TagB\", e.g. %s",
			len(unexpected), describeUnexpected(unexpected[0]))
	}
	if tagC > 0 {
		return fmt.Errorf("the consumer subscribed to \"TagA || TagB\" got %d TagC message(s)", tagC)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d TagA/TagB messages never reached the consumer, e.g. %q (%v)",
			len(missing), len(expected), missing[0][0], waitErr)
	}
	if len(duplicated) > 0 {
		return fmt.Errorf("%d message(s) were delivered more than once to the only consumer, e.g. %q", len(duplicated), duplicated[0][0])
	}
	if waitErr != nil {
		return waitErr
	}
	if sentinelErr != nil {
		return sentinelErr
	}
	return nil
}

// sendSentinels sends one TagA message to each queue that holds TagC messages, with a producer
// whose queue selector takes the queue from the message, and records the sentinels' tuples.
func sendSentinels(env *environment, outcomes []sendOutcome, sentinels map[[4]string]bool, deadline time.Time) error {
	queues := map[int]*primitive.MessageQueue{}
	for i, o := range outcomes {
		if pcTags[i%len(pcTags)] == "TagC" && o.queue != nil {
			queues[o.queue.QueueId] = o.queue
		}
	}
	ids := make([]int, 0, len(queues))
	for id := range queues {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	p, err := newProducer(env, pcSentinelGroup, producer.WithQueueSelector(producer.NewManualQueueSelector()))
	if err != nil {
		return err
	}
	defer shutdownBounded("sentinel producer", p.Shutdown)
	sendDeadline := earlier(deadline, 10*time.Second)
	for _, id := range ids {
		key := fmt.Sprintf("%s%d", pcSentinelPrefix, id)
		msg := primitive.NewMessage(pcTopic, []byte(key))
		msg.WithTag("TagA")
		msg.WithKeys([]string{key})
		msg.Queue = queues[id]
		res, err := sendSyncWithin(p, msg, sendDeadline)
		if err != nil {
			return fmt.Errorf("the sentinel message to queue %d could not be sent: %v", id, err)
		}
		if res.Status != primitive.SendOK {
			return fmt.Errorf("the sentinel message to queue %d was %s, not SEND_OK", id, statusName(res.Status))
		}
		if res.MessageQueue != nil && res.MessageQueue.QueueId != id {
			return fmt.Errorf("the sentinel message for queue %d was stored in queue %d", id, res.MessageQueue.QueueId)
		}
		sentinels[[4]string{key, "TagA", key, ""}] = true
	}
	logf("sent %d sentinel(s) to queues %v", len(ids), ids)
	return nil
}

// describeUnexpected names a delivered tuple that was not expected, next to what was sent with
// the same key (when there is one).
func describeUnexpected(t [4]string) string {
	got := fmt.Sprintf("body %q tag %q keys %q idx %q", t[0], t[1], t[2], t[3])
	if n, ok := strings.CutPrefix(t[2], "key-"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < pcSyncCount+pcAsyncCount {
			s := pcTuple(i)
			return fmt.Sprintf("%s, but it was sent as body %q tag %q keys %q idx %q", got, s[0], s[1], s[2], s[3])
		}
	}
	return got
}

func perQueue(all []received) string {
	byQueue := map[int]int{}
	for _, r := range all {
		byQueue[r.Queue]++
	}
	ids := make([]int, 0, len(byQueue))
	for id := range byQueue {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	parts := make([]string, 0, len(ids))
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("q%d=%d", id, byQueue[id]))
	}
	return strings.Join(parts, " ")
}
