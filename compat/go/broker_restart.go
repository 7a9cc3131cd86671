package main

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
)

const (
	brTopic         = "CompatGoBrokerRestart"
	brProducerGroup = "compat-go-broker-restart-producer"
	brConsumerGroup = "compat-go-broker-restart-consumer"
	brPerPhase      = 20
)

func brMessage(phase string, i int) *primitive.Message {
	msg := primitive.NewMessage(brTopic, []byte(brBody(phase, i)))
	msg.WithTag("TagR")
	msg.WithKeys([]string{fmt.Sprintf("%s-key-%d", phase, i)})
	msg.WithProperty("idx", strconv.Itoa(i))
	return msg
}

func brBody(phase string, i int) string { return fmt.Sprintf("%s-%02d-é✓", phase, i) }

// go-broker-restart: 20 messages before and 20 after a graceful broker restart (same port, same
// store), one push consumer running throughout; it must end up with all 40 (at least once each).
// After the restart a send may fail while the client notices its connection is gone, so each
// send is retried until the deadline; how many needed a retry goes to stderr only, as it depends
// on timing.
func brokerRestart(env *environment, deadline time.Time) error {
	p, err := newProducer(env, brProducerGroup)
	if err != nil {
		return err
	}
	atExit("producer", p.Shutdown)

	before := map[string]int{}
	sendDeadline := earlier(deadline, 20*time.Second)
	for i := 0; i < brPerPhase; i++ {
		res, err := sendSyncWithin(p, brMessage("before", i), sendDeadline)
		if err != nil {
			observe(map[string]any{"send_before_restart_status": before})
			return fmt.Errorf("SendSync of message %d before the restart failed: %v", i, err)
		}
		before[statusName(res.Status)]++
	}
	observe(map[string]any{"send_before_restart_status": before})
	if before["SEND_OK"] != brPerPhase {
		return fmt.Errorf("not every send before the restart was SEND_OK: %v", before)
	}

	in := newInbox()
	c, err := startPushConsumer(env, brConsumerGroup, brTopic,
		consumer.MessageSelector{Type: consumer.TAG, Expression: "*"}, in, earlier(deadline, 15*time.Second))
	if err != nil {
		return err
	}
	atExit("push consumer", c.Shutdown)

	var wanted []string
	for i := 0; i < brPerPhase; i++ {
		wanted = append(wanted, brBody("before", i))
	}
	bodies := func() map[string]int {
		all, _ := in.snapshot()
		seen := map[string]int{}
		for _, r := range all {
			seen[r.Body]++
		}
		return seen
	}
	haveAll := func() bool {
		seen := bodies()
		for _, b := range wanted {
			if seen[b] == 0 {
				return false
			}
		}
		return true
	}
	progress := func() string {
		seen := bodies()
		n := 0
		for _, b := range wanted {
			if seen[b] > 0 {
				n++
			}
		}
		return fmt.Sprintf("%d of %d delivered", n, len(wanted))
	}
	if err := waitFor(earlier(deadline, 25*time.Second), "the messages sent before the restart", haveAll, progress); err != nil {
		observeBodies(bodies())
		return err
	}

	restartStarted := time.Now()
	if err := restartBroker(env, earlier(deadline, 70*time.Second)); err != nil {
		return err
	}
	logf("broker restarted in %.1f s", time.Since(restartStarted).Seconds())

	// Send 20 more; each send is retried on error until the deadline.
	after := map[string]int{}
	retriedSends, failedAttempts := 0, 0
	afterDeadline := earlier(deadline, 40*time.Second)
	for i := 0; i < brPerPhase; i++ {
		for attempt := 1; ; attempt++ {
			res, err := sendSyncWithin(p, brMessage("after", i), afterDeadline)
			if err == nil {
				after[statusName(res.Status)]++
				if attempt > 1 {
					retriedSends++
				}
				break
			}
			failedAttempts++
			logf("SendSync of message %d after the restart, attempt %d: %v", i, attempt, err)
			if !time.Now().Add(300 * time.Millisecond).Before(afterDeadline) {
				observe(map[string]any{"send_after_restart_status": after})
				return fmt.Errorf("after the broker restart, message %d could not be sent: %v", i, err)
			}
			time.Sleep(300 * time.Millisecond) // back-off between bounded send attempts
		}
	}
	logf("after the restart: %d of %d sends needed a retry (%d failed attempts)", retriedSends, brPerPhase, failedAttempts)
	observe(map[string]any{"send_after_restart_status": after})
	if after["SEND_OK"] != brPerPhase {
		return fmt.Errorf("not every send after the restart was SEND_OK: %v", after)
	}

	for i := 0; i < brPerPhase; i++ {
		wanted = append(wanted, brBody("after", i))
	}
	consumeStarted := time.Now()
	waitErr := waitFor(deadline, "all 40 messages after the broker restart", haveAll, progress)
	seen := bodies()
	observeBodies(seen)
	duplicates := 0
	for _, n := range seen {
		duplicates += n - 1
	}
	logf("the consumer had all messages %.1f s after the last send; %d duplicate deliveries", time.Since(consumeStarted).Seconds(), duplicates)
	if waitErr != nil {
		var missing []string
		for _, b := range wanted {
			if seen[b] == 0 {
				missing = append(missing, b)
			}
		}
		return fmt.Errorf("the consumer running across the broker restart never got %d of the 40 messages (first: %q): %v",
			len(missing), missing[0], waitErr)
	}
	for b := range seen {
		if !contains(wanted, b) {
			return fmt.Errorf("the consumer got a message that was never sent: %q", b)
		}
	}
	return nil
}

// observeBodies reports the distinct delivered bodies, sorted (each message at least once;
// duplicate counts are timing-dependent and not observed).
func observeBodies(seen map[string]int) {
	distinct := make([]string, 0, len(seen))
	for b := range seen {
		distinct = append(distinct, b)
	}
	sort.Strings(distinct)
	observe(map[string]any{"received_bodies": distinct, "received_distinct": len(distinct)})
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
