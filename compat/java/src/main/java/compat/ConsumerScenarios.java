package compat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.impl.consumer.ProcessQueue;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.common.MixAll;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;
import org.apache.rocketmq.common.protocol.heartbeat.MessageModel;
import org.apache.rocketmq.common.protocol.route.QueueData;
import org.apache.rocketmq.common.protocol.route.TopicRouteData;

/** DefaultMQPushConsumer's models and subscriptions, retries, DLQ, DefaultLitePullConsumer, restarts. */
final class ConsumerScenarios {
    static final long DELIVERY_MS = 30_000;
    static final long REBALANCE_MS = 30_000;

    private ConsumerScenarios() {
    }

    static void register(Map<String, Main.Scenario> all) {
        all.put("consumer-clustering", ConsumerScenarios::clustering);
        all.put("consumer-broadcasting", ConsumerScenarios::broadcasting);
        all.put("consumer-tags", ConsumerScenarios::tags);
        // The same with -Drocketmq.serialize.type=ROCKETMQ (scenarios.toml): binary headers.
        all.put("consumer-binary-headers", ctx -> {
            ctx.checkBinaryHeaders();
            tags(ctx);
        });
        all.put("consumer-retry-dlq", ConsumerScenarios::retryDlq);
        all.put("lite-pull-offset-for-timestamp", ConsumerScenarios::litePullOffsetForTimestamp);
        all.put("consumer-new-group-last-offset", ConsumerScenarios::newGroupLastOffset);
        all.put("lite-pull-assign-seek", ConsumerScenarios::litePullAssignSeek);
        all.put("offsets-resume-after-restart", ConsumerScenarios::offsetsResumeAfterRestart);
    }

    /**
     * The queues of `topic` a push consumer currently holds (its rebalance result). The client
     * shows its rebalance result only through this deprecated accessor.
     */
    @SuppressWarnings("deprecation")
    static int queuesHeld(DefaultMQPushConsumer consumer, String topic) {
        int held = 0;
        for (MessageQueue queue : consumer.getDefaultMQPushConsumerImpl().getRebalanceImpl().getProcessQueueTable()
                .keySet()) {
            if (queue.getTopic().equals(topic)) {
                held++;
            }
        }
        return held;
    }

    /** The ids of the queues of `topic` a push consumer holds, sorted. */
    @SuppressWarnings("deprecation")
    static Set<Integer> queueIds(DefaultMQPushConsumer consumer, String topic) {
        Set<Integer> ids = new TreeSet<>();
        for (MessageQueue queue : consumer.getDefaultMQPushConsumerImpl().getRebalanceImpl().getProcessQueueTable()
                .keySet()) {
            if (queue.getTopic().equals(topic)) {
                ids.add(queue.getQueueId());
            }
        }
        return ids;
    }

    /** True when every message the consumer pulled has been handed to its listener and finished. */
    @SuppressWarnings("deprecation")
    static boolean drained(DefaultMQPushConsumer consumer) {
        for (ProcessQueue queue : consumer.getDefaultMQPushConsumerImpl().getRebalanceImpl().getProcessQueueTable()
                .values()) {
            if (queue.getMsgCount().get() != 0) {
                return false;
            }
        }
        return true;
    }

    static DefaultMQPushConsumer collecting(Ctx ctx, String group, MessageModel model, Received into) {
        return ctx.pushConsumer(group, model, (MessageListenerConcurrently) (messages, context) -> {
            into.addAll(messages);
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
    }

    /** A collecting push consumer of `topic` with tag expression `expression`, started. */
    static DefaultMQPushConsumer started(Ctx ctx, String group, MessageModel model, Received into, String topic,
            String expression) throws Exception {
        DefaultMQPushConsumer consumer = collecting(ctx, group, model, into);
        consumer.subscribe(topic, expression);
        consumer.start();
        return consumer;
    }

    /** Two started members of one group on `topic`, once each holds `queuesEach` of its queues. */
    static List<DefaultMQPushConsumer> twoMembers(Ctx ctx, String topic, MessageModel model, Received first,
            Received second, int queuesEach) throws Exception {
        List<DefaultMQPushConsumer> members = List.of(
                started(ctx, ctx.group("consumer"), model, first, topic, "*"),
                started(ctx, ctx.group("consumer"), model, second, topic, "*"));
        Ctx.waitUntil("each consumer holding " + queuesEach + " queues", REBALANCE_MS,
                () -> queuesHeld(members.get(0), topic) == queuesEach
                        && queuesHeld(members.get(1), topic) == queuesEach);
        return members;
    }

    static void send(DefaultMQProducer producer, List<Message> messages) throws Exception {
        for (Message message : messages) {
            producer.send(message);
        }
    }

    static void clustering(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 4);
        Received first = new Received();
        Received second = new Received();
        List<DefaultMQPushConsumer> members = twoMembers(ctx, topic, MessageModel.CLUSTERING, first, second, 2);
        DefaultMQPushConsumer one = members.get(0);
        DefaultMQPushConsumer two = members.get(1);
        int count = 60;
        send(ctx.producer(), Msgs.make(topic, 0, count, "TagA"));
        Received both = new Received();
        try {
            Ctx.waitUntil("delivery of all " + count + " messages across the group", DELIVERY_MS, () -> {
                Set<Integer> union = new TreeSet<>(first.numbers());
                union.addAll(second.numbers());
                return union.containsAll(Received.range(0, count));
            });
        } catch (Ctx.Failure failure) {
            throw new Ctx.Failure(failure.getMessage() + String.format("; consumers got %s and %s; queues %s and %s",
                    first.numbers(), second.numbers(), queueIds(one, topic), queueIds(two, topic)));
        }
        both.addAll(first.all());
        both.addAll(second.all());
        both.checkExactly(Received.range(0, count), true);
        Ctx.check(first.size() > 0 && second.size() > 0, "one consumer got nothing: %d and %d", first.size(),
                second.size());
        ctx.observe("received", Msgs.describeSorted(both.all()));
        ctx.observe("queuesPerConsumer", Arrays.asList(queuesHeld(one, topic), queuesHeld(two, topic)));
    }

    static void broadcasting(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 4);
        Received first = new Received();
        Received second = new Received();
        twoMembers(ctx, topic, MessageModel.BROADCASTING, first, second, 4);
        int count = 30;
        send(ctx.producer(), Msgs.make(topic, 0, count, "TagA", "TagB"));
        for (Received received : List.of(first, second)) {
            received.awaitAll(Received.range(0, count), DELIVERY_MS);
            received.checkExactly(Received.range(0, count), true);
        }
        ctx.observe("receivedByEach", Arrays.asList(first.size(), second.size()));
        ctx.observe("received", Msgs.describeSorted(first.all()));
    }

    static void tags(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        // One queue: once the last message is delivered, every earlier one was pulled and filtered.
        // The client filters tags again itself, so this shows what a user sees; the broker's own
        // filtering (what it sends at all) is checked by the broker's tests.
        ctx.createTopic(topic, 1);
        Received received = new Received();
        DefaultMQPushConsumer consumer = started(ctx, ctx.group("consumer"), MessageModel.CLUSTERING, received,
                topic, "TagA || TagB");
        int count = 30;
        DefaultMQProducer producer = ctx.producer();
        send(producer, Msgs.make(topic, 0, count, "TagA", "TagB", "TagC"));
        int last = count;
        producer.send(Msgs.make(topic, last, "TagB"));
        Set<Integer> expected = new TreeSet<>();
        for (int idx = 0; idx <= last; idx++) {
            if (idx == last || idx % 3 != 2) {
                expected.add(idx);
            }
        }
        received.awaitAll(expected, DELIVERY_MS);
        Ctx.waitUntil("the consumer finishing what it pulled", DELIVERY_MS, () -> drained(consumer));
        received.checkExactly(expected, true);
        for (MessageExt message : received.all()) {
            Ctx.check(!"TagC".equals(message.getTags()), "a TagC message (%d) reached \"TagA || TagB\"",
                    Msgs.idx(message));
        }
        ctx.observe("received", Msgs.describeSorted(received.all()));
    }

    static void retryDlq(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        String group = ctx.group("consumer");
        int count = 10;
        int maxReconsumeTimes = 2;
        // Even messages always fail: delivered 1 + maxReconsumeTimes times, then dead-lettered.
        // Odd messages fail once: delivered twice, then done.
        Map<Integer, List<Integer>> attempts = new TreeMap<>();
        List<String> damaged = new ArrayList<>();
        DefaultMQPushConsumer consumer = ctx.pushConsumer(group, MessageModel.CLUSTERING,
                (MessageListenerConcurrently) (messages, context) -> {
                    ConsumeConcurrentlyStatus status = ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
                    synchronized (attempts) {
                        for (MessageExt message : messages) {
                            String damage = Msgs.damage(message);
                            if (damage != null || !message.getTopic().equals(topic)) {
                                damaged.add(damage != null ? damage : "redelivered on topic " + message.getTopic());
                            }
                            int idx = Msgs.idx(message);
                            attempts.computeIfAbsent(idx, i -> new ArrayList<>()).add(message.getReconsumeTimes());
                            if (idx % 2 == 0 || message.getReconsumeTimes() == 0) {
                                status = ConsumeConcurrentlyStatus.RECONSUME_LATER;
                            }
                        }
                    }
                    return status;
                });
        consumer.setMaxReconsumeTimes(maxReconsumeTimes);
        consumer.setConsumeMessageBatchMaxSize(1);
        consumer.subscribe(topic, "*");
        consumer.start();
        send(ctx.producer(), Msgs.make(topic, 0, count, "TagA"));

        Ctx.waitUntil("every message's deliveries (3 for failing ones, 2 for those failing once)", 60_000, () -> {
            synchronized (attempts) {
                if (attempts.size() < count) {
                    return false;
                }
                for (Map.Entry<Integer, List<Integer>> entry : attempts.entrySet()) {
                    int expected = entry.getKey() % 2 == 0 ? 1 + maxReconsumeTimes : 2;
                    if (entry.getValue().size() < expected) {
                        return false;
                    }
                }
                return true;
            }
        });
        String dlq = MixAll.getDLQTopic(group);
        Ctx.waitUntil("the " + count / 2 + " always-failing messages in " + dlq, 30_000,
                () -> messagesIn(ctx, dlq) == count / 2);
        synchronized (attempts) {
            Ctx.check(damaged.isEmpty(), "redelivered messages were damaged: %s", damaged);
            for (Map.Entry<Integer, List<Integer>> entry : attempts.entrySet()) {
                List<Integer> expected = entry.getKey() % 2 == 0 ? List.of(0, 1, 2) : List.of(0, 1);
                Ctx.check(entry.getValue().equals(expected), "message %d delivered with reconsumeTimes %s, expected %s",
                        entry.getKey(), entry.getValue(), expected);
            }
            ctx.observe("reconsumeTimesPerMessage", attempts);
        }
        ctx.observe("deadLettered", messagesIn(ctx, dlq));
    }

    static void litePullOffsetForTimestamp(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 1);
        int count = 10;
        DefaultMQProducer producer = ctx.producer();
        send(producer, Msgs.make(topic, 0, count, "TagA"));
        // Store times are in ms; leave a gap so the boundary falls between the two batches.
        long boundary = System.currentTimeMillis() + 50;
        Ctx.waitUntil("the clock passing the boundary", 2_000, () -> System.currentTimeMillis() > boundary + 50);
        send(producer, Msgs.make(topic, count, count, "TagA"));

        DefaultLitePullConsumer consumer = ctx.litePullConsumer();
        Collection<MessageQueue> queues = consumer.fetchMessageQueues(topic);
        MessageQueue queue = queues.iterator().next();
        consumer.assign(queues);
        Map<String, Long> offsets = new TreeMap<>();
        offsets.put("epoch", consumer.offsetForTimestamp(queue, 0L));
        offsets.put("boundary", consumer.offsetForTimestamp(queue, boundary));
        offsets.put("future", consumer.offsetForTimestamp(queue, System.currentTimeMillis() + 3_600_000L));
        ctx.observe("offsetForTimestamp", offsets);
        Ctx.check(offsets.get("epoch") == 0 && offsets.get("boundary") == count && offsets.get("future") == 2L * count,
                "offsetForTimestamp gave %s, expected epoch 0, boundary %d, future %d", offsets, count, 2 * count);
        ctx.observe("polledFromBoundary", pollFrom(consumer, queue, offsets.get("boundary"), 2 * count, true));
    }

    /**
     * A group with no committed offset that starts from the last offset still gets the messages
     * of a queue that holds its first message (RocketMQ answers offset 0 for such a queue), so a
     * consumer started just after its producers misses nothing.
     */
    static void newGroupLastOffset(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        int count = 10;
        DefaultMQProducer producer = ctx.producer();
        send(producer, Msgs.make(topic, 0, count, "TagA"));
        Received received = new Received();
        DefaultMQPushConsumer consumer = collecting(ctx, ctx.group("consumer"), MessageModel.CLUSTERING, received);
        consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET);
        consumer.subscribe(topic, "*");
        consumer.start();
        Ctx.waitUntil("the consumer holding both queues", REBALANCE_MS, () -> queuesHeld(consumer, topic) == 2);
        send(producer, Msgs.make(topic, count, count, "TagA"));
        received.awaitAll(Received.range(0, 2 * count), DELIVERY_MS);
        Ctx.waitUntil("the consumer finishing what it pulled", DELIVERY_MS, () -> drained(consumer));
        received.checkExactly(Received.range(0, 2 * count), true);
        ctx.observe("received", Msgs.describeSorted(received.all()));
    }

    /** Messages stored in `topic` across its queues (max minus min offset), through the admin API. */
    static long messagesIn(Ctx ctx, String topic) throws Exception {
        TopicRouteData route = ctx.admin().examineTopicRouteInfo(topic);
        long total = 0;
        for (QueueData data : route.getQueueDatas()) {
            for (int queue = 0; queue < data.getReadQueueNums(); queue++) {
                MessageQueue mq = new MessageQueue(topic, data.getBrokerName(), queue);
                total += ctx.admin().maxOffset(mq) - ctx.admin().minOffset(mq);
            }
        }
        return total;
    }

    static void litePullAssignSeek(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 1);
        int count = 20;
        send(ctx.producer(), Msgs.make(topic, 0, count, "TagA"));

        DefaultLitePullConsumer consumer = ctx.litePullConsumer();
        Collection<MessageQueue> queues = consumer.fetchMessageQueues(topic);
        Ctx.check(queues.size() == 1, "fetchMessageQueues gave %d queues, the topic has 1", queues.size());
        MessageQueue queue = queues.iterator().next();
        consumer.assign(queues);

        List<Integer> afterSeek5 = pollFrom(consumer, queue, 5, count, true);
        List<Integer> afterSeek12 = pollFrom(consumer, queue, 12, count, false);
        ctx.observe("afterSeek5", afterSeek5);
        ctx.observe("afterSeek12", afterSeek12);
    }

    /**
     * Seeks to `offset` and polls until the queue's end; checks offsets and numbers run in order.
     * With `firstSeek`, messages below `offset` that come before the first one at it are skipped:
     * the 4.9.8 client can hand out what a pull started before the seek returned (its own race,
     * not the broker's). Later seeks, made when no such pull can be in flight, are strict.
     */
    static List<Integer> pollFrom(DefaultLitePullConsumer consumer, MessageQueue queue, long offset, int end,
            boolean firstSeek) throws Exception {
        consumer.seek(queue, offset);
        List<Integer> numbers = new ArrayList<>();
        long expectedOffset = offset;
        long deadline = System.currentTimeMillis() + Ctx.budgetMs(DELIVERY_MS);
        while (expectedOffset < end) {
            Ctx.check(System.currentTimeMillis() < deadline, "after seek(%d), polling stopped at offset %d of %d",
                    offset, expectedOffset, end);
            for (MessageExt message : consumer.poll(1000)) {
                if (firstSeek && expectedOffset == offset && message.getQueueOffset() < offset) {
                    continue;
                }
                Ctx.check(message.getQueueOffset() == expectedOffset,
                        "after seek(%d), poll gave offset %d, expected %d", offset, message.getQueueOffset(),
                        expectedOffset);
                Ctx.check(Msgs.idx(message) == expectedOffset, "offset %d holds message %d", expectedOffset,
                        Msgs.idx(message));
                String damage = Msgs.damage(message);
                Ctx.check(damage == null, "polled damaged: %s", damage);
                numbers.add(Msgs.idx(message));
                expectedOffset++;
            }
        }
        return numbers;
    }

    static void offsetsResumeAfterRestart(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        String group = ctx.group("consumer");
        int count = 20;
        DefaultMQProducer producer = ctx.producer();
        send(producer, Msgs.make(topic, 0, count, "TagA"));

        Received before = new Received();
        DefaultMQPushConsumer first = started(ctx, group, MessageModel.CLUSTERING, before, topic, "TagA");
        before.awaitAll(Received.range(0, count), DELIVERY_MS);
        Ctx.waitUntil("the consumer finishing what it pulled", DELIVERY_MS, () -> drained(first));
        first.shutdown();
        before.checkExactly(Received.range(0, count), true);
        // The client commits offsets oneway: see them on the broker before restarting it.
        Ctx.waitUntil("the group's offsets committed at the end of both queues", DELIVERY_MS,
                () -> ctx.committedOffset(group, topic, 0) + ctx.committedOffset(group, topic, 1) == count);

        ctx.restartBroker();

        // A probe, outside what the group subscribes, until a send goes through again.
        Ctx.waitUntil("a send after the restart", 30_000, () -> {
            producer.send(Msgs.make(topic, 1000, "Probe"));
            return true;
        });
        send(producer, Msgs.make(topic, count, count, "TagA"));
        Received after = new Received();
        DefaultMQPushConsumer second = started(ctx, group, MessageModel.CLUSTERING, after, topic, "TagA");
        after.awaitAll(Received.range(count, count), DELIVERY_MS);
        Ctx.waitUntil("the consumer finishing what it pulled", DELIVERY_MS, () -> drained(second));
        Set<Integer> redelivered = new TreeSet<>(after.numbers());
        redelivered.retainAll(Received.range(0, count));
        Ctx.check(redelivered.isEmpty(), "after the restart the group got again messages it had consumed: %s",
                redelivered);
        after.checkExactly(Received.range(count, count), true);
        ctx.observe("receivedAfterRestart", Msgs.describeSorted(after.all()));
    }
}
