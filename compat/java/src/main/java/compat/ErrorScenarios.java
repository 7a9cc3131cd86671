package compat;

import java.util.Map;
import java.util.TreeMap;
import org.apache.rocketmq.client.exception.MQBrokerException;
import org.apache.rocketmq.client.exception.MQClientException;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.common.TopicConfig;
import org.apache.rocketmq.common.constant.PermName;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageDecoder;
import org.apache.rocketmq.common.message.MessageQueue;
import org.apache.rocketmq.common.protocol.ResponseCode;

/**
 * Requests a broker or NameServer must refuse, as a Java user makes them: each must fail with the
 * response code Apache RocketMQ gives, and the broker must go on serving afterwards.
 */
final class ErrorScenarios {
    private ErrorScenarios() {
    }

    static void register(Map<String, Main.Scenario> all) {
        all.put("error-codes", ErrorScenarios::errorCodes);
        all.put("send-to-read-only-topic", ErrorScenarios::sendToReadOnlyTopic);
    }

    /**
     * A topic made read-only (perm 4, as operators do to stop its writers) takes no message, also
     * from a client that names the queue itself (an ordinary client drops unwritable queues from
     * its route and never sends).
     */
    static void sendToReadOnlyTopic(Ctx ctx) throws Exception {
        DefaultMQProducer producer = ctx.producer();
        producer.setRetryTimesWhenSendFailed(0);
        String topic = ctx.topic("");
        ctx.admin().createAndUpdateTopicConfig(ctx.broker, new TopicConfig(topic, 2, 2, PermName.PERM_READ));
        Ctx.waitUntil("a read-only route for " + topic, 30_000,
                () -> ctx.admin().examineTopicRouteInfo(topic).getQueueDatas().get(0).getPerm()
                        == PermName.PERM_READ);
        int code = refusedWith("a send to a read-only topic",
                () -> producer.send(Msgs.make(topic, 0, "TagA"), new MessageQueue(topic, "broker-a", 0)));
        ctx.observe("code", code);
        Ctx.check(code == ResponseCode.NO_PERMISSION, "a send to a read-only topic answered %d, expected %d",
                code, ResponseCode.NO_PERMISSION);
        long stored = ConsumerScenarios.messagesIn(ctx, topic);
        Ctx.check(stored == 0, "the read-only topic holds %d messages", stored);
    }

    /** A request that must fail. */
    @FunctionalInterface
    interface Refused {
        void run() throws Exception;
    }

    /** The response code in `error` or its causes: what the client reports to its user. */
    static int codeOf(Throwable error) {
        for (Throwable cause = error; cause != null; cause = cause.getCause()) {
            if (cause instanceof MQBrokerException broker) {
                return broker.getResponseCode();
            }
            if (cause instanceof MQClientException client && client.getResponseCode() > 0) {
                return client.getResponseCode();
            }
        }
        return -1;
    }

    static int refusedWith(String what, Refused request) {
        try {
            request.run();
        } catch (Exception error) {
            int code = codeOf(error);
            Ctx.check(code > 0, "%s failed without a response code: %s", what, Main.oneLine(error.toString()));
            return code;
        }
        throw new Ctx.Failure(what + " was accepted");
    }

    static void errorCodes(Ctx ctx) throws Exception {
        Map<String, Integer> codes = new TreeMap<>();
        DefaultMQProducer producer = ctx.producer();
        // The client checks the size itself; let a too-large message reach the broker.
        producer.setMaxMessageSize(8 * 1024 * 1024);
        producer.setRetryTimesWhenSendFailed(0);
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);

        // Random bytes: the client compresses bodies over 4 KiB, and zeros would shrink to nothing.
        byte[] large = new byte[5 * 1024 * 1024];
        new java.util.Random(7).nextBytes(large);
        codes.put("sendBodyOver4MiB", refusedWith("a 5 MiB message",
                () -> producer.send(new Message(topic, large))));

        codes.put("createTopicTBW102", refusedWith("creating TBW102",
                () -> ctx.admin().createAndUpdateTopicConfig(ctx.broker, new TopicConfig("TBW102", 8, 8, 7))));

        codes.put("routeOfUnknownTopic", refusedWith("the route of an unknown topic",
                () -> ctx.admin().examineTopicRouteInfo(ctx.topic("_never_created"))));

        String pastTheEnd = MessageDecoder.createMessageId(
                new java.net.InetSocketAddress("127.0.0.1", Integer.parseInt(ctx.broker.split(":")[1])),
                1L << 40);
        // With one argument the broker's own answer surfaces (with a topic the client falls back
        // to a key search and reports its own "no message").
        codes.put("viewMessagePastTheEnd", refusedWith("viewMessage past the end of the log",
                () -> ctx.admin().viewMessage(pastTheEnd)));

        // The broker still serves after all that.
        producer.setRetryTimesWhenSendFailed(2);
        Ctx.check(producer.send(Msgs.make(topic, 1, "TagA")).getSendStatus().name().equals("SEND_OK"),
                "a valid send after the refusals failed");
        ctx.log("codes: %s", codes);
        Ctx.check(codes.get("routeOfUnknownTopic") == ResponseCode.TOPIC_NOT_EXIST,
                "the route of an unknown topic answered %d, expected TOPIC_NOT_EXIST",
                codes.get("routeOfUnknownTopic"));
        ctx.observe("codes", codes);
    }
}
