package compat;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.protocol.heartbeat.MessageModel;
import org.apache.rocketmq.common.protocol.route.TopicRouteData;

/**
 * The mqadmin command line (org.apache.rocketmq.tools.command.MQAdminStartup), run as a user runs
 * it: a JVM per command, its output read as text. mqadmin exits 0 even when a command fails, so
 * each check looks for what the command prints on success.
 */
final class MqadminScenarios {
    static final long COMMAND_TIMEOUT_MS = 60_000;

    private MqadminScenarios() {
    }

    static void register(Map<String, Main.Scenario> all) {
        all.put("mqadmin-clusterList", MqadminScenarios::clusterList);
        all.put("mqadmin-topicList", MqadminScenarios::topicList);
        all.put("mqadmin-topicRoute", MqadminScenarios::topicRoute);
        all.put("mqadmin-updateTopic", MqadminScenarios::updateTopic);
        all.put("mqadmin-deleteTopic", MqadminScenarios::deleteTopic);
        all.put("mqadmin-brokerStatus", MqadminScenarios::brokerStatus);
        all.put("mqadmin-queryMsgById", MqadminScenarios::queryMsgById);
        all.put("mqadmin-queryMsgByKey", MqadminScenarios::queryMsgByKey);
        all.put("mqadmin-topicStatus", MqadminScenarios::topicStatus);
        all.put("mqadmin-consumerProgress", MqadminScenarios::consumerProgress);
    }

    /** Runs `mqadmin <args> -n <namesrv>` and returns what it printed (stdout and stderr). */
    static String mqadmin(Ctx ctx, String... args) throws Exception {
        List<String> command = new ArrayList<>();
        command.add(new File(System.getProperty("java.home"), "bin/java").getPath());
        command.add("-Drocketmq.home.dir=" + System.getProperty("compat.mqadminHome"));
        command.add("-Duser.home=" + System.getProperty("user.home"));
        command.add("-cp");
        command.add(System.getProperty("java.class.path"));
        command.add("org.apache.rocketmq.tools.command.MQAdminStartup");
        command.addAll(List.of(args));
        command.add("-n");
        command.add(ctx.namesrv);
        long timeoutMs = Ctx.budgetMs(COMMAND_TIMEOUT_MS);
        Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
        ByteArrayOutputStream output = new ByteArrayOutputStream();
        Thread reader = new Thread(() -> {
            try (InputStream in = process.getInputStream()) {
                in.transferTo(output);
            } catch (java.io.IOException error) {
                // The process is gone; what was read is all there is.
            }
        });
        reader.start();
        boolean exited = process.waitFor(timeoutMs, TimeUnit.MILLISECONDS);
        if (!exited) {
            process.destroyForcibly();
        }
        reader.join(5_000);
        String text = output.toString(StandardCharsets.UTF_8);
        ctx.log("$ mqadmin %s\n%s", String.join(" ", args), text);
        Ctx.check(exited, "mqadmin %s did not finish in %d ms", args[0], timeoutMs);
        Ctx.check(!text.contains("SubCommandException") && !text.contains("Exception in thread"),
                "mqadmin %s failed: %s%s", args[0], firstLines(text, 1), rootCause(text));
        return text;
    }

    /** "; caused by <the last "Caused by:" line>" of a Java stack trace, or "" without one. */
    static String rootCause(String text) {
        String cause = "";
        for (String line : text.split("\n")) {
            if (line.startsWith("Caused by: ")) {
                cause = "; caused by " + line.substring("Caused by: ".length()).strip();
            }
        }
        return cause;
    }

    static String firstLines(String text, int count) {
        String[] lines = text.strip().split("\n");
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < Math.min(count, lines.length); i++) {
            out.append(i == 0 ? "" : " | ").append(lines[i].strip());
        }
        return out.toString();
    }

    /** The whitespace-separated rows of a table mqadmin printed whose first column is `first`. */
    static List<String[]> rows(String text, String first) {
        List<String[]> rows = new ArrayList<>();
        for (String line : text.split("\n")) {
            String[] columns = line.trim().split("\\s+");
            if (columns.length > 0 && columns[0].equals(first)) {
                rows.add(columns);
            }
        }
        return rows;
    }

    static void clusterList(Ctx ctx) throws Exception {
        String text = mqadmin(ctx, "clusterList");
        List<String[]> rows = rows(text, "DefaultCluster");
        Ctx.check(rows.size() == 1, "clusterList printed %d rows for DefaultCluster: %s", rows.size(),
                firstLines(text, 4));
        String[] row = rows.get(0);
        Ctx.check(row.length > 4 && row[1].equals("broker-a") && row[2].equals("0") && row[3].equals(ctx.broker),
                "clusterList row is %s, expected DefaultCluster broker-a 0 %s ...", String.join(" ", row), ctx.broker);
        ctx.observe("row", List.of(row[0], row[1], row[2]));
    }

    static void topicList(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        String text = mqadmin(ctx, "topicList");
        boolean listed = text.lines().anyMatch(line -> line.trim().equals(topic));
        Ctx.check(listed, "topicList does not print %s", topic);
        ctx.observe("listed", listed);
    }

    static void topicRoute(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 3);
        String text = mqadmin(ctx, "topicRoute", "-t", topic);
        String json = text.substring(Math.max(0, text.indexOf('{')));
        TopicRouteData route = TopicRouteData.decode(json.getBytes(StandardCharsets.UTF_8), TopicRouteData.class);
        Ctx.check(route != null && route.getQueueDatas().size() == 1
                        && route.getQueueDatas().get(0).getReadQueueNums() == 3
                        && route.getBrokerDatas().get(0).getBrokerAddrs().get(0L).equals(ctx.broker),
                "topicRoute printed %s", firstLines(text, 20));
        ctx.observe("queues", route.getQueueDatas().get(0).getReadQueueNums());
        ctx.observe("brokerName", route.getBrokerDatas().get(0).getBrokerName());
    }

    static void updateTopic(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        String text = mqadmin(ctx, "updateTopic", "-b", ctx.broker, "-t", topic, "-r", "5", "-w", "5");
        Ctx.check(text.contains("success"), "updateTopic did not say success: %s", firstLines(text, 3));
        TopicRouteData[] route = new TopicRouteData[1];
        Ctx.waitUntil("the route of " + topic + " with 5 queues", 30_000, () -> {
            route[0] = ctx.admin().examineTopicRouteInfo(topic);
            return route[0].getQueueDatas().get(0).getWriteQueueNums() == 5;
        });
        ctx.observe("queues", List.of(route[0].getQueueDatas().get(0).getReadQueueNums(),
                route[0].getQueueDatas().get(0).getWriteQueueNums()));
    }

    static void deleteTopic(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        String text = mqadmin(ctx, "deleteTopic", "-c", "DefaultCluster", "-t", topic);
        Ctx.check(text.contains("success"), "deleteTopic did not say success: %s", firstLines(text, 3));
        boolean listed = ctx.admin().fetchAllTopicList().getTopicList().contains(topic);
        Ctx.check(!listed, "the NameServer still lists %s after deleteTopic", topic);
        ctx.observe("listedAfterDelete", listed);
    }

    static void brokerStatus(Ctx ctx) throws Exception {
        String text = mqadmin(ctx, "brokerStatus", "-b", ctx.broker);
        List<String> missing = new ArrayList<>();
        List<String> printed = new ArrayList<>();
        for (String key : AdminScenarios.RUNTIME_KEYS) {
            (rows(text, key).isEmpty() ? missing : printed).add(key);
        }
        Ctx.check(missing.isEmpty(), "brokerStatus does not print %s: %s", missing, firstLines(text, 3));
        ctx.observe("keysPrinted", printed);
    }

    static SendResult sendOne(Ctx ctx, String topic) throws Exception {
        ctx.createTopic(topic, 2);
        return ctx.producer().send(Msgs.make(topic, 3, "TagM"));
    }

    static void queryMsgById(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        SendResult sent = sendOne(ctx, topic);
        String text = mqadmin(ctx, "queryMsgById", "-i", sent.getOffsetMsgId());
        List<String> wanted = List.of(topic, "[TagM]", "[key-3]", "idx=3");
        List<String> missing = new ArrayList<>();
        List<String> printed = new ArrayList<>();
        for (String part : wanted) {
            (text.contains(part) ? printed : missing).add(part);
        }
        Ctx.check(missing.isEmpty(), "queryMsgById output lacks %s: %s", missing, firstLines(text, 4));
        ctx.observe("printed", printed.stream().map(part -> part.replace(topic, "<topic>")).toList());
    }

    static void queryMsgByKey(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        SendResult sent = sendOne(ctx, topic);
        String[] output = new String[1];
        Ctx.waitUntil("queryMsgByKey printing the message", 20_000, () -> {
            output[0] = mqadmin(ctx, "queryMsgByKey", "-t", topic, "-k", "key-3");
            return output[0].contains(sent.getMsgId());
        });
        long rows = output[0].lines().filter(line -> line.contains(sent.getMsgId())).count();
        Ctx.check(rows == 1, "queryMsgByKey printed the message %d times", rows);
        ctx.observe("rows", rows);
    }

    static void topicStatus(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        ConsumerScenarios.send(ctx.producer(), Msgs.make(topic, 0, 10, "TagA"));
        String text = mqadmin(ctx, "topicStatus", "-t", topic);
        List<String[]> rows = rows(text, "broker-a");
        Ctx.check(rows.size() == 2, "topicStatus printed %d queue rows, the topic has 2: %s", rows.size(),
                firstLines(text, 4));
        long total = 0;
        for (String[] row : rows) {
            total += Long.parseLong(row[3]) - Long.parseLong(row[2]);
        }
        Ctx.check(total == 10, "topicStatus counts %d messages (max - min), sent 10", total);
        ctx.observe("messages", total);
    }

    static void consumerProgress(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        ConsumerScenarios.send(ctx.producer(), Msgs.make(topic, 0, 10, "TagA"));
        Received received = new Received();
        String group = ctx.group("consumer");
        DefaultMQPushConsumer consumer = ConsumerScenarios.started(ctx, group, MessageModel.CLUSTERING, received,
                topic, "*");
        received.awaitAll(Received.range(0, 10), 30_000);
        String[] output = new String[1];
        Ctx.waitUntil("consumerProgress showing a lag of 0", 30_000, () -> {
            output[0] = mqadmin(ctx, "consumerProgress", "-g", group);
            return output[0].contains("Diff Total: 0");
        });
        List<String[]> rows = rows(output[0], topic);
        Ctx.check(rows.size() == 2, "consumerProgress printed %d queue rows for the topic, it has 2", rows.size());
        ctx.observe("queueRows", rows.size());
    }
}
