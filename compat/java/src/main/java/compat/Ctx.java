package compat;

import com.alibaba.fastjson.JSON;
import com.alibaba.fastjson.serializer.SerializerFeature;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.Collections;
import java.util.Deque;
import org.apache.rocketmq.client.ClientConfig;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.MessageListener;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.consumer.listener.MessageListenerOrderly;
import org.apache.rocketmq.client.exception.MQBrokerException;
import org.apache.rocketmq.client.impl.MQClientAPIImpl;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.protocol.header.QueryConsumerOffsetRequestHeader;
import org.apache.rocketmq.common.protocol.heartbeat.MessageModel;
import org.apache.rocketmq.common.protocol.route.QueueData;
import org.apache.rocketmq.common.protocol.route.TopicRouteData;
import org.apache.rocketmq.remoting.netty.NettyClientConfig;
import org.apache.rocketmq.remoting.protocol.RemotingCommand;
import org.apache.rocketmq.remoting.protocol.SerializeType;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

/**
 * What a scenario gets from the harness: the cluster's addresses, names of its own, started
 * clients that are shut down when it ends, checks, observations and the broker restart hook.
 */
final class Ctx implements AutoCloseable {
    /** A check that failed; the message is what a user of the client would notice. */
    static final class Failure extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Failure(String message) {
            super(message);
        }
    }

    /** A condition polled until it holds or its deadline passes. */
    @FunctionalInterface
    interface Condition {
        boolean holds() throws Exception;
    }

    static final long POLL_MS = 50;
    /** Time left at the end of the harness's limit to report a failure rather than be killed. */
    static final long MARGIN_MS = 4_000;
    /** When the scenario must have given its verdict (System.nanoTime); set from COMPAT_TIMEOUT_S. */
    private static long scenarioDeadlineNanos = Long.MAX_VALUE;

    final String scenario;
    final String namesrv;
    final String broker;
    final String target;
    private final BufferedReader harness =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    private final Deque<Runnable> shutdowns = new ArrayDeque<>();
    private DefaultMQAdminExt admin;
    private MQClientAPIImpl remoting;
    private int instances;

    Ctx(String scenario) {
        this.scenario = scenario;
        this.namesrv = env("COMPAT_NAMESRV");
        this.broker = env("COMPAT_BROKER");
        this.target = env("COMPAT_TARGET");
        String limit = System.getenv("COMPAT_TIMEOUT_S");
        if (limit != null) {
            long limitMs = (long) (Double.parseDouble(limit) * 1000);
            scenarioDeadlineNanos = System.nanoTime() + Math.max(0, limitMs - MARGIN_MS) * 1_000_000L;
        }
    }

    /** `timeoutMs`, or less when the scenario's own time runs out first. */
    static long budgetMs(long timeoutMs) {
        long leftMs = (scenarioDeadlineNanos - System.nanoTime()) / 1_000_000L;
        return Math.max(0, Math.min(timeoutMs, leftMs));
    }

    private static String env(String name) {
        String value = System.getenv(name);
        if (value == null || value.isEmpty()) {
            throw new Failure(name + " is not set: run scenarios through compat/run.py");
        }
        return value;
    }

    /** A topic name of this scenario's own ("Compat_producer_sync" + suffix). */
    String topic(String suffix) {
        return "Compat_" + scenario.replace('-', '_') + suffix;
    }

    /** A group name of this scenario's own. */
    String group(String role) {
        return "compat-" + scenario + "-" + role;
    }

    void log(String format, Object... args) {
        System.err.println(String.format(format, args));
    }

    static void check(boolean holds, String format, Object... args) {
        if (!holds) {
            throw new Failure(String.format(format, args));
        }
    }

    /** Reports a fact the differential run compares with Apache RocketMQ's. */
    void observe(String key, Object value) {
        String json = JSON.toJSONString(Collections.singletonMap(key, value), SerializerFeature.MapSortField,
                SerializerFeature.SortField, SerializerFeature.WriteNonStringKeyAsString);
        System.out.println("OBSERVE " + json);
        System.out.flush();
    }

    /**
     * Polls `condition` every 50 ms until it holds; fails with `what` after `timeoutMs`, or
     * earlier when the scenario's time limit would pass first.
     */
    static void waitUntil(String what, long timeoutMs, Condition condition) throws Exception {
        timeoutMs = budgetMs(timeoutMs);
        long deadline = System.nanoTime() + timeoutMs * 1_000_000L;
        Exception last = null;
        while (true) {
            try {
                if (condition.holds()) {
                    return;
                }
            } catch (Failure failure) {
                throw failure;
            } catch (Exception error) {
                last = error;
            }
            if (System.nanoTime() > deadline) {
                throw new Failure(what + " did not happen within " + timeoutMs + " ms"
                        + (last == null ? "" : " (last error: " + Main.oneLine(last.toString()) + ")"));
            }
            Thread.sleep(POLL_MS);
        }
    }

    /** Asks the harness to restart the broker (graceful stop, same port) and waits until it has. */
    void restartBroker() throws IOException {
        System.out.println("RESTART_BROKER");
        System.out.flush();
        String answer = harness.readLine();
        check("RESTARTED".equals(answer), "the harness could not restart the broker: %s", answer);
    }

    /**
     * For the scenarios run with -Drocketmq.serialize.type=ROCKETMQ: fails unless the client really
     * encodes its request headers in the binary form (a mistyped property would silently rerun
     * the JSON case).
     */
    void checkBinaryHeaders() {
        SerializeType type = RemotingCommand.createRequestCommand(0, null).getSerializeTypeCurrentRPC();
        check(type == SerializeType.ROCKETMQ, "the client encodes headers as %s, expected ROCKETMQ", type);
        observe("headerEncoding", type.name());
    }

    /** Runs `shutdown` when the scenario ends, last registered first. */
    void onClose(Runnable shutdown) {
        shutdowns.push(shutdown);
    }

    private String nextInstance() {
        return scenario + "-" + (++instances);
    }

    /**
     * The offset `group` has committed for a queue, asked of the broker itself (QUERY_CONSUMER_OFFSET)
     * through a bare remoting client that joins no group; -1 when none is committed.
     */
    long committedOffset(String group, String topic, int queueId) throws Exception {
        if (remoting == null) {
            MQClientAPIImpl client = new MQClientAPIImpl(new NettyClientConfig(), null, null, new ClientConfig());
            client.start();
            onClose(client::shutdown);
            remoting = client;
        }
        QueryConsumerOffsetRequestHeader header = new QueryConsumerOffsetRequestHeader();
        header.setConsumerGroup(group);
        header.setTopic(topic);
        header.setQueueId(queueId);
        try {
            return remoting.queryConsumerOffset(broker, header, 5_000);
        } catch (MQBrokerException notFound) {
            return -1;
        }
    }

    DefaultMQProducer producer() throws Exception {
        DefaultMQProducer producer = new DefaultMQProducer(group("producer"));
        producer.setNamesrvAddr(namesrv);
        producer.setInstanceName(nextInstance());
        producer.setSendMsgTimeout(5000);
        producer.start();
        onClose(producer::shutdown);
        return producer;
    }

    /** A started lite pull consumer of this scenario's group that commits nothing by itself. */
    DefaultLitePullConsumer litePullConsumer() throws Exception {
        DefaultLitePullConsumer consumer = new DefaultLitePullConsumer(group("consumer"));
        consumer.setNamesrvAddr(namesrv);
        consumer.setInstanceName(nextInstance());
        consumer.setAutoCommit(false);
        consumer.start();
        onClose(consumer::shutdown);
        return consumer;
    }

    /** A push consumer from the first offset, not started: the scenario subscribes and starts it. */
    DefaultMQPushConsumer pushConsumer(String group, MessageModel model, MessageListener listener) {
        DefaultMQPushConsumer consumer = new DefaultMQPushConsumer(group);
        consumer.setNamesrvAddr(namesrv);
        consumer.setInstanceName(nextInstance());
        consumer.setMessageModel(model);
        consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        // Offsets are committed every second (the default is 5 s): scenarios that wait for a
        // commit wait less.
        consumer.setPersistConsumerOffsetInterval(1000);
        if (listener instanceof MessageListenerOrderly orderly) {
            consumer.registerMessageListener(orderly);
        } else {
            consumer.registerMessageListener((MessageListenerConcurrently) listener);
        }
        onClose(consumer::shutdown);
        return consumer;
    }

    DefaultMQAdminExt admin() throws Exception {
        if (admin == null) {
            DefaultMQAdminExt started = new DefaultMQAdminExt(5000);
            started.setNamesrvAddr(namesrv);
            started.setInstanceName(nextInstance());
            started.start();
            onClose(started::shutdown);
            admin = started;
        }
        return admin;
    }

    /** Creates `topic` on the broker with `queues` read and write queues; returns once routed. */
    void createTopic(String topic, int queues) throws Exception {
        TopicConfig config = new TopicConfig(topic, queues, queues, 6);
        admin().createAndUpdateTopicConfig(broker, config);
        waitUntil("a route for " + topic + " with " + queues + " queues", 30_000, () -> {
            TopicRouteData route = admin().examineTopicRouteInfo(topic);
            return route.getQueueDatas().stream().mapToInt(QueueData::getWriteQueueNums).sum() == queues;
        });
    }

    @Override
    public void close() {
        while (!shutdowns.isEmpty()) {
            try {
                shutdowns.pop().run();
            } catch (RuntimeException error) {
                log("shutdown: %s", error);
            }
        }
    }
}
