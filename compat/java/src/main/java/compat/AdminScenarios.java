package compat;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.apache.rocketmq.client.QueryResult;
import org.apache.rocketmq.client.exception.MQClientException;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.protocol.ResponseCode;
import org.apache.rocketmq.common.protocol.body.ClusterInfo;
import org.apache.rocketmq.common.protocol.route.BrokerData;
import org.apache.rocketmq.common.protocol.route.QueueData;
import org.apache.rocketmq.common.protocol.route.TopicRouteData;
import org.apache.rocketmq.tools.admin.DefaultMQAdminExt;

/** DefaultMQAdminExt, the API mqadmin and the dashboard are built on. */
final class AdminScenarios {
    /** Runtime keys mqadmin brokerStatus and the dashboard show that a RocketMQ user reads first. */
    static final List<String> RUNTIME_KEYS =
            List.of("brokerVersion", "brokerVersionDesc", "bootTimestamp", "msgPutTotalTodayNow",
                    "msgGetTotalTodayNow", "commitLogMinOffset", "commitLogMaxOffset");

    private AdminScenarios() {
    }

    static void register(Map<String, Main.Scenario> all) {
        all.put("admin-cluster-and-topics", AdminScenarios::clusterAndTopics);
        all.put("admin-delete-topic", AdminScenarios::deleteTopic);
        all.put("admin-broker-runtime", AdminScenarios::brokerRuntime);
        all.put("admin-view-and-query-message", AdminScenarios::viewAndQueryMessage);
    }

    static void clusterAndTopics(Ctx ctx) throws Exception {
        DefaultMQAdminExt admin = ctx.admin();
        ClusterInfo cluster = admin.examineBrokerClusterInfo();
        Set<String> brokers = cluster.getClusterAddrTable().get("DefaultCluster");
        Ctx.check(brokers != null && brokers.contains("broker-a"), "cluster DefaultCluster lists brokers %s",
                brokers);
        BrokerData broker = cluster.getBrokerAddrTable().get("broker-a");
        Ctx.check(broker != null && ctx.broker.equals(broker.getBrokerAddrs().get(0L)),
                "broker-a's master address is %s, expected %s", broker == null ? null : broker.getBrokerAddrs(),
                ctx.broker);
        ctx.observe("clusters", new TreeSet<>(cluster.getClusterAddrTable().keySet()));
        ctx.observe("brokersOfCluster", new TreeSet<>(brokers));

        String topic = ctx.topic("");
        ctx.createTopic(topic, 3);
        TopicRouteData route = admin.examineTopicRouteInfo(topic);
        Ctx.check(route.getQueueDatas().size() == 1, "route lists %d queue datas", route.getQueueDatas().size());
        QueueData queues = route.getQueueDatas().get(0);
        Ctx.check(queues.getReadQueueNums() == 3 && queues.getWriteQueueNums() == 3 && queues.getPerm() == 6,
                "route queues: read %d, write %d, perm %d; created with 3, 3, 6", queues.getReadQueueNums(),
                queues.getWriteQueueNums(), queues.getPerm());
        Ctx.check(route.getBrokerDatas().size() == 1
                        && ctx.broker.equals(route.getBrokerDatas().get(0).getBrokerAddrs().get(0L)),
                "route brokers: %s", route.getBrokerDatas());
        ctx.observe("route", Map.of("brokerName", queues.getBrokerName(), "readQueueNums", queues.getReadQueueNums(),
                "writeQueueNums", queues.getWriteQueueNums(), "perm", queues.getPerm(), "topicSysFlag",
                queues.getTopicSysFlag()));
        Set<String> listed = admin.fetchAllTopicList().getTopicList();
        Ctx.check(listed.contains(topic), "fetchAllTopicList lacks %s", topic);
        ctx.observe("topicListed", listed.contains(topic));
    }

    static void deleteTopic(Ctx ctx) throws Exception {
        DefaultMQAdminExt admin = ctx.admin();
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        admin.deleteTopicInBroker(Collections.singleton(ctx.broker), topic);
        admin.deleteTopicInNameServer(Collections.singleton(ctx.namesrv), topic, "DefaultCluster");
        int code = -1;
        String route = null;
        try {
            route = admin.examineTopicRouteInfo(topic).toString();
        } catch (MQClientException error) {
            code = error.getResponseCode();
        }
        Ctx.check(route == null, "the NameServer still routes the deleted topic: %s", route);
        Ctx.check(code == ResponseCode.TOPIC_NOT_EXIST, "the route of a deleted topic answered code %d, expected %d",
                code, ResponseCode.TOPIC_NOT_EXIST);
        ctx.observe("routeCodeAfterDelete", code);
        Set<String> listed = admin.fetchAllTopicList().getTopicList();
        Ctx.check(!listed.contains(topic), "fetchAllTopicList still lists the deleted %s", topic);
        ctx.observe("listedAfterDelete", listed.contains(topic));
    }

    static void brokerRuntime(Ctx ctx) throws Exception {
        Map<String, String> table = ctx.admin().fetchBrokerRuntimeStats(ctx.broker).getTable();
        List<String> missing = new ArrayList<>();
        for (String key : RUNTIME_KEYS) {
            if (!table.containsKey(key)) {
                missing.add(key);
            }
        }
        Ctx.check(missing.isEmpty(), "runtime stats lack %s (have %s)", missing, new TreeSet<>(table.keySet()));
        Ctx.check(table.get("brokerVersionDesc").startsWith("V4_"), "brokerVersionDesc is %s",
                table.get("brokerVersionDesc"));
        // Apache names one key after the store's path (commitLogDiskRatio_/path/to/commitlog).
        Set<String> keys = new TreeSet<>();
        for (String key : table.keySet()) {
            keys.add(key.startsWith("commitLogDiskRatio_") ? "commitLogDiskRatio_<path>" : key);
        }
        ctx.observe("allKeys", keys);
    }

    static void viewAndQueryMessage(Ctx ctx) throws Exception {
        String topic = ctx.topic("");
        ctx.createTopic(topic, 2);
        SendResult sent = ctx.producer().send(Msgs.make(topic, 7, "TagQ"));
        DefaultMQAdminExt admin = ctx.admin();

        MessageExt byOffsetId = admin.viewMessage(topic, sent.getOffsetMsgId());
        Ctx.check(Msgs.damage(byOffsetId) == null && Msgs.idx(byOffsetId) == 7, "viewMessage(offsetMsgId) gave %s",
                Msgs.damage(byOffsetId));
        // By the client's unique id the broker searches its key index, which may lag the send.
        MessageExt[] byUniqueKeyFound = new MessageExt[1];
        Ctx.waitUntil("viewMessage(msgId) finding the message", 15_000, () -> {
            byUniqueKeyFound[0] = admin.viewMessage(topic, sent.getMsgId());
            return byUniqueKeyFound[0] != null;
        });
        MessageExt byUniqueKey = byUniqueKeyFound[0];
        Ctx.check(Msgs.damage(byUniqueKey) == null && Msgs.idx(byUniqueKey) == 7,
                "viewMessage(msgId) gave %s", Msgs.damage(byUniqueKey));
        ctx.observe("viewed", Arrays.asList(Msgs.describe(byOffsetId), Msgs.describe(byUniqueKey)));

        List<Map<String, Object>> found = new ArrayList<>();
        Ctx.waitUntil("queryMessage by key finding the message", 15_000, () -> {
            QueryResult result = admin.queryMessage(topic, "key-7", 32, 0, System.currentTimeMillis() + 60_000);
            found.clear();
            for (MessageExt message : result.getMessageList()) {
                found.add(Msgs.describe(message));
            }
            return !found.isEmpty();
        });
        Ctx.check(found.size() == 1, "queryMessage by key found %d messages, sent 1", found.size());
        Ctx.check(new String(byOffsetId.getBody(), StandardCharsets.UTF_8).equals(found.get(0).get("body")),
                "queryMessage by key found %s", found);
        ctx.observe("queriedByKey", found);
    }
}
