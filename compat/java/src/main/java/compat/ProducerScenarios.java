package compat;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.ConsumeOrderlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.consumer.listener.MessageListenerOrderly;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendCallback;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.protocol.heartbeat.MessageModel;

/** DefaultMQProducer's ways to send: sync, async, oneway, batch, and to a selected queue. */
final class ProducerScenarios {
    static final int QUEUES = 4;
    static final int COUNT = 40;
    static final long DELIVERY_MS = 30_000;

    private ProducerScenarios() {
    }

    static void register(Map<String, Main.Scenario> all) {
        all.put("producer-sync", ProducerScenarios::sync);
        // The same with -Drocketmq.serialize.type=ROCKETMQ (scenarios.toml): binary headers.
        all.put("producer-sync-binary-headers", ctx -> {
            ctx.checkBinaryHeaders();
            sync(ctx);
        });
        all.put("producer-async", ProducerScenarios::async);
        all.put("producer-oneway", ProducerScenarios::oneway);
        all.put("producer-batch", ProducerScenarios::batch);
        all.put("producer-ordered", ProducerScenarios::ordered);
    }

    /** Consumes `topic` from the start in a group of its own until `expected` all arrived; checks and observes them. */
    static Received consumeAll(Ctx ctx, String topic, Set<Integer> expected) throws Exception {
        Received received = new Received();
        DefaultMQPushConsumer consumer = ctx.pushConsumer(ctx.group("consumer"), MessageModel.CLUSTERING,
                (MessageListenerConcurrently) (messages, context) -> {
                    received.addAll(messages);
                    return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
                });
        consumer.subscribe(topic, "*");
        consumer.start();
        received.awaitAll(expected, DELIVERY_MS);
        received.checkExactly(expected, true);
        ctx.observe("received", Msgs.describeSorted(received.all()));
        return received;
    }

    /**
     * Per queue, the offsets the broker acknowledged; each queue's must run 0, 1, 2, ... With
     * `observe`, reports how many messages each queue got (deterministic only for sends from one
     * thread: the client picks queues round robin per sending thread).
     */
    static void checkQueueOffsets(Ctx ctx, List<SendResult> results, boolean observe) {
        Map<Integer, List<Long>> offsets = new TreeMap<>();
        for (SendResult result : results) {
            offsets.computeIfAbsent(result.getMessageQueue().getQueueId(), q -> new ArrayList<>())
                    .add(result.getQueueOffset());
        }
        List<Integer> perQueue = new ArrayList<>();
        offsets.forEach((queue, list) -> {
            Collections.sort(list);
            for (int i = 0; i < list.size(); i++) {
                Ctx.check(list.get(i) == i, "queue %d acknowledged offsets %s, expected 0..%d", queue, list,
                        list.size() - 1);
            }
            perQueue.add(list.size());
        });
        Collections.sort(perQueue);
        if (observe) {
            ctx.observe("messagesPerQueue", perQueue);
        }
    }

    private static void checkSendOk(SendResult result) {
        Ctx.check(result.getSendStatus() == SendStatus.SEND_OK, "send answered %s", result.getSendStatus());
        Ctx.check(result.getMsgId() != null && !result.getMsgId().isEmpty(), "send answered no message id");
        // A batch answers its messages' offset ids joined by commas.
        for (String offsetId : String.valueOf(result.getOffsetMsgId()).split(",")) {
            Ctx.check(offsetId.matches("[0-9A-F]{32}"), "send answered offset message id %s, expected 32 hex digits",
                    offsetId);
        }
    }

    static void sync(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, QUEUES);
        DefaultMQProducer producer = ctx.producer();
        List<SendResult> results = new ArrayList<>();
        for (Message message : Msgs.make(topic, 0, COUNT, "TagA", "TagB")) {
            SendResult result = producer.send(message);
            checkSendOk(result);
            results.add(result);
        }
        ctx.observe("sendStatuses", results.stream().map(r -> r.getSendStatus().name()).distinct().toList());
        checkQueueOffsets(ctx, results, true);
        consumeAll(ctx, topic, Received.range(0, COUNT));
    }

    static void async(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, QUEUES);
        DefaultMQProducer producer = ctx.producer();
        CountDownLatch done = new CountDownLatch(COUNT);
        List<SendResult> results = Collections.synchronizedList(new ArrayList<>());
        List<String> failures = Collections.synchronizedList(new ArrayList<>());
        for (Message message : Msgs.make(topic, 0, COUNT, "TagA")) {
            producer.send(message, new SendCallback() {
                @Override
                public void onSuccess(SendResult result) {
                    results.add(result);
                    done.countDown();
                }

                @Override
                public void onException(Throwable error) {
                    failures.add(error.toString());
                    done.countDown();
                }
            });
        }
        Ctx.check(done.await(DELIVERY_MS, TimeUnit.MILLISECONDS), "%d async sends never called back",
                done.getCount());
        Ctx.check(failures.isEmpty(), "async sends failed: %s", failures);
        results.forEach(ProducerScenarios::checkSendOk);
        ctx.observe("sendStatuses", results.stream().map(r -> r.getSendStatus().name()).distinct().toList());
        // Async sends pick their queue on the client's async executor threads, each thread with
        // its own round-robin position: the split between queues varies from run to run.
        checkQueueOffsets(ctx, results, false);
        consumeAll(ctx, topic, Received.range(0, COUNT));
    }

    static void oneway(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, QUEUES);
        DefaultMQProducer producer = ctx.producer();
        for (Message message : Msgs.make(topic, 0, COUNT, "TagA", "TagB")) {
            producer.sendOneway(message);
        }
        consumeAll(ctx, topic, Received.range(0, COUNT));
    }

    static void batch(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, QUEUES);
        DefaultMQProducer producer = ctx.producer();
        int batchSize = 20;
        List<Integer> firstOffsets = new ArrayList<>();
        for (int from = 0; from < COUNT; from += batchSize) {
            SendResult result = producer.send(Msgs.make(topic, from, batchSize, "TagA"));
            checkSendOk(result);
            Ctx.check(result.getMsgId().split(",").length == batchSize,
                    "a batch of %d answered %d message ids", batchSize, result.getMsgId().split(",").length);
            firstOffsets.add((int) result.getQueueOffset());
        }
        ctx.observe("batchFirstOffsets", firstOffsets.stream().sorted().toList());
        Received received = consumeAll(ctx, topic, Received.range(0, COUNT));
        // A batch lands in one queue at consecutive offsets, in the order it was built.
        for (int from = 0; from < COUNT; from += batchSize) {
            List<MessageExt> batch = new ArrayList<>();
            for (MessageExt message : received.firstArrivals()) {
                if (Msgs.idx(message) >= from && Msgs.idx(message) < from + batchSize) {
                    batch.add(message);
                }
            }
            batch.sort((a, b) -> Integer.compare(Msgs.idx(a), Msgs.idx(b)));
            for (int i = 1; i < batch.size(); i++) {
                Ctx.check(batch.get(i).getQueueId() == batch.get(0).getQueueId(),
                        "batch from %d spread over queues %d and %d", from, batch.get(0).getQueueId(),
                        batch.get(i).getQueueId());
                Ctx.check(batch.get(i).getQueueOffset() == batch.get(0).getQueueOffset() + i,
                        "batch from %d: message %d at offset %d, expected %d", from, Msgs.idx(batch.get(i)),
                        batch.get(i).getQueueOffset(), batch.get(0).getQueueOffset() + i);
            }
        }
    }

    static void ordered(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, QUEUES);
        DefaultMQProducer producer = ctx.producer();
        int orders = 6;
        int steps = 8;
        Map<Integer, Integer> queueOfOrder = new TreeMap<>();
        // Step-major: every order's step 0, then every order's step 1, ... so orders interleave.
        for (int step = 0; step < steps; step++) {
            for (int order = 0; order < orders; order++) {
                int idx = order * steps + step;
                SendResult result = producer.send(Msgs.make(topic, idx, "TagA"),
                        (queues, message, arg) -> queues.get((Integer) arg % queues.size()), order);
                checkSendOk(result);
                Integer previous = queueOfOrder.put(order, result.getMessageQueue().getQueueId());
                Ctx.check(previous == null || previous == result.getMessageQueue().getQueueId(),
                        "order %d was sent to queues %d and %d", order, previous,
                        result.getMessageQueue().getQueueId());
            }
        }
        ctx.observe("queueOfOrder", queueOfOrder);

        Map<Integer, List<Integer>> stepsSeen = new TreeMap<>();
        Received received = new Received();
        DefaultMQPushConsumer consumer = ctx.pushConsumer(ctx.group("consumer"), MessageModel.CLUSTERING,
                (MessageListenerOrderly) (messages, context) -> {
                    synchronized (stepsSeen) {
                        for (MessageExt message : messages) {
                            int idx = Msgs.idx(message);
                            stepsSeen.computeIfAbsent(idx / steps, o -> new ArrayList<>()).add(idx % steps);
                        }
                    }
                    received.addAll(messages);
                    return ConsumeOrderlyStatus.SUCCESS;
                });
        consumer.subscribe(topic, "*");
        consumer.start();
        received.awaitAll(Received.range(0, orders * steps), DELIVERY_MS);
        received.checkExactly(Received.range(0, orders * steps), true);
        synchronized (stepsSeen) {
            for (Map.Entry<Integer, List<Integer>> order : stepsSeen.entrySet()) {
                List<Integer> sorted = new ArrayList<>(order.getValue());
                Collections.sort(sorted);
                Ctx.check(order.getValue().equals(sorted), "order %d consumed out of sequence: steps %s",
                        order.getKey(), order.getValue());
            }
            ctx.observe("stepsPerOrder", stepsSeen);
        }
    }
}
