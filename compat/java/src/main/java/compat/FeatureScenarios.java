package compat;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.MessageSelector;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.LocalTransactionState;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.client.producer.TransactionListener;
import org.apache.rocketmq.client.producer.TransactionMQProducer;
import org.apache.rocketmq.client.producer.TransactionSendResult;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.protocol.heartbeat.MessageModel;

/** Transactions, delay levels and SQL92 filters, as RocketMQ users use them. */
final class FeatureScenarios {
    static final long DELIVERY_MS = 40_000;

    private FeatureScenarios() {
    }

    static void register(Map<String, Main.Scenario> all) {
        all.put("transaction", FeatureScenarios::transaction);
        all.put("delay-level", FeatureScenarios::delayLevel);
        all.put("sql92-filter", FeatureScenarios::sql92Filter);
    }

    /**
     * What the local transaction of message `idx` decides: 0 commit, 1 roll back, 2 unknown
     * (checked back, then committed).
     */
    static LocalTransactionState decide(int idx) {
        switch (idx % 3) {
            case 0:
                return LocalTransactionState.COMMIT_MESSAGE;
            case 1:
                return LocalTransactionState.ROLLBACK_MESSAGE;
            default:
                return LocalTransactionState.UNKNOW;
        }
    }

    static void transaction(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        Set<Integer> checkedBack = new TreeSet<>();
        TransactionMQProducer producer = new TransactionMQProducer(ctx.group("producer"));
        producer.setNamesrvAddr(ctx.namesrv);
        producer.setInstanceName(ctx.scenario);
        producer.setTransactionListener(new TransactionListener() {
            @Override
            public LocalTransactionState executeLocalTransaction(Message message, Object arg) {
                return decide(Integer.parseInt(message.getUserProperty("idx")));
            }

            @Override
            public LocalTransactionState checkLocalTransaction(MessageExt message) {
                int idx = Msgs.idx(message);
                synchronized (checkedBack) {
                    checkedBack.add(idx);
                }
                // The unknown ones are committed when asked; the others answer as they decided.
                LocalTransactionState decided = decide(idx);
                return decided == LocalTransactionState.UNKNOW ? LocalTransactionState.COMMIT_MESSAGE : decided;
            }
        });
        producer.start();
        ctx.onClose(producer::shutdown);

        int count = 9;
        Map<Integer, String> states = new TreeMap<>();
        for (int idx = 0; idx < count; idx++) {
            TransactionSendResult result = producer.sendMessageInTransaction(Msgs.make(topic, idx, "TagT"), null);
            Ctx.check(result.getSendStatus() == SendStatus.SEND_OK, "half message %d: %s", idx, result.getSendStatus());
            states.put(idx, result.getLocalTransactionState().name());
        }
        ctx.observe("localStates", states);

        Set<Integer> expected = new TreeSet<>();
        for (int idx = 0; idx < count; idx++) {
            if (decide(idx) != LocalTransactionState.ROLLBACK_MESSAGE) {
                expected.add(idx);
            }
        }
        Received received = new Received();
        DefaultMQPushConsumer consumer = ConsumerScenarios.started(ctx, ctx.group("consumer"),
                MessageModel.CLUSTERING, received, topic, "*");
        received.awaitAll(expected, DELIVERY_MS);
        Ctx.waitUntil("the consumer finishing what it pulled", DELIVERY_MS, () -> ConsumerScenarios.drained(consumer));
        received.checkExactly(expected, true);
        synchronized (checkedBack) {
            Set<Integer> unknown = new TreeSet<>();
            expected.stream().filter(idx -> decide(idx) == LocalTransactionState.UNKNOW).forEach(unknown::add);
            Ctx.check(checkedBack.equals(unknown), "the broker checked back %s, the unknown ones are %s",
                    checkedBack, unknown);
        }
        ctx.observe("received", Msgs.describeSorted(received.all()));
    }

    static void delayLevel(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        Map<Integer, Long> sentAt = new TreeMap<>();
        Map<Integer, Long> delayMs = new TreeMap<>();
        List<String> damaged = new ArrayList<>();
        DefaultMQPushConsumer consumer = ctx.pushConsumer(ctx.group("consumer"), MessageModel.CLUSTERING,
                (MessageListenerConcurrently) (messages, context) -> {
                    long now = System.currentTimeMillis();
                    synchronized (delayMs) {
                        for (MessageExt message : messages) {
                            String damage = Msgs.damage(message);
                            if (damage != null) {
                                damaged.add(damage);
                            }
                            Long sent = sentAt.get(Msgs.idx(message));
                            if (delayMs.put(Msgs.idx(message), sent == null ? -1 : now - sent) != null) {
                                damaged.add("message " + Msgs.idx(message) + " delivered twice");
                            }
                        }
                    }
                    return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
                });
        consumer.subscribe(topic, "*");
        consumer.start();
        var producer = ctx.producer();
        int count = 4;
        for (int idx = 0; idx < count; idx++) {
            Message message = Msgs.make(topic, idx, "TagD");
            message.setDelayTimeLevel(1);
            synchronized (delayMs) {
                sentAt.put(idx, System.currentTimeMillis());
            }
            SendResult result = producer.send(message);
            Ctx.check(result.getSendStatus() == SendStatus.SEND_OK, "delayed send: %s", result.getSendStatus());
        }
        Ctx.waitUntil("delivery of the delayed messages", DELIVERY_MS, () -> {
            synchronized (delayMs) {
                return delayMs.size() == count;
            }
        });
        synchronized (delayMs) {
            Ctx.check(damaged.isEmpty(), "delayed messages delivered damaged or twice: %s", damaged);
            for (Map.Entry<Integer, Long> entry : delayMs.entrySet()) {
                // Level 1 is one second; allow 100 ms for clocks read on different threads.
                Ctx.check(entry.getValue() >= 900, "message %d with delay level 1 delivered %d ms after the send",
                        entry.getKey(), entry.getValue());
            }
            ctx.observe("delivered", delayMs.size());
        }
    }

    static void sql92Filter(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 1);
        Received received = new Received();
        DefaultMQPushConsumer consumer = ConsumerScenarios.collecting(ctx, ctx.group("consumer"),
                MessageModel.CLUSTERING, received);
        consumer.subscribe(topic, MessageSelector.bySql("a BETWEEN 3 AND 6"));
        consumer.start();
        var producer = ctx.producer();
        int count = 10;
        for (int idx = 0; idx < count; idx++) {
            Message message = Msgs.make(topic, idx, "TagS");
            message.putUserProperty("a", Integer.toString(idx));
            producer.send(message);
        }
        // The last one matches: once it is delivered, everything before it on the one queue was filtered.
        Message last = Msgs.make(topic, count, "TagS");
        last.putUserProperty("a", "5");
        producer.send(last);
        Set<Integer> expected = new TreeSet<>(List.of(3, 4, 5, 6, count));
        received.awaitAll(expected, DELIVERY_MS);
        Ctx.waitUntil("the consumer finishing what it pulled", DELIVERY_MS, () -> ConsumerScenarios.drained(consumer));
        received.checkExactly(expected, true);
        ctx.observe("received", Msgs.describeSorted(received.all()));
    }
}
