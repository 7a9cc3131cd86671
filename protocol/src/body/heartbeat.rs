//! HeartbeatData and its parts (docs/protocol.md §4.5).

use serde::{Deserialize, Serialize};

use crate::message::tags::java_string_hash;

/// A client's periodic announcement of its producer and consumer groups.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HeartbeatData {
    /// Note the capital `ID`.
    #[serde(rename = "clientID")]
    pub client_id: String,
    pub consumer_data_set: Vec<ConsumerData>,
    /// 5.x / Rust client extra.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_fingerprint: Option<i32>,
    pub producer_data_set: Vec<ProducerData>,
    /// 5.x / Rust client extra.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_sub: Option<bool>,
}

/// A producer group of the client.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProducerData {
    pub group_name: String,
}

/// Pull (active) or push (passive) consumption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ConsumeType {
    #[serde(rename = "CONSUME_ACTIVELY")]
    Actively,
    #[default]
    #[serde(rename = "CONSUME_PASSIVELY")]
    Passively,
    /// 5.x POP consumption.
    #[serde(rename = "CONSUME_POP")]
    Pop,
}

/// Clustering (queues split between members) or broadcasting (every member gets everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MessageModel {
    #[serde(rename = "BROADCASTING")]
    Broadcasting,
    #[default]
    #[serde(rename = "CLUSTERING")]
    Clustering,
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[allow(clippy::enum_variant_names)]
pub enum ConsumeFromWhere {
    #[default]
    #[serde(rename = "CONSUME_FROM_LAST_OFFSET")]
    ConsumeFromLastOffset,
    #[serde(rename = "CONSUME_FROM_FIRST_OFFSET")]
    ConsumeFromFirstOffset,
    #[serde(rename = "CONSUME_FROM_TIMESTAMP")]
    ConsumeFromTimestamp,
    #[serde(rename = "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST")]
    ConsumeFromLastOffsetAndFromMinWhenBootFirst,
    #[serde(rename = "CONSUME_FROM_MIN_OFFSET")]
    ConsumeFromMinOffset,
    #[serde(rename = "CONSUME_FROM_MAX_OFFSET")]
    ConsumeFromMaxOffset,
}

/// A consumer group of the client with its subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConsumerData {
    pub consume_from_where: ConsumeFromWhere,
    pub consume_type: ConsumeType,
    pub group_name: String,
    pub message_model: MessageModel,
    pub subscription_data_set: Vec<SubscriptionData>,
    pub unit_mode: bool,
}

fn tag_expression_type() -> String {
    SubscriptionData::EXPRESSION_TAG.to_owned()
}

/// One topic subscription: a tag expression (or SQL92 text) and its tags' hash codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionData {
    #[serde(default)]
    pub class_filter_mode: bool,
    /// Java `String.hashCode` of each tag. The Go client writes them as strings.
    #[serde(default, deserialize_with = "super::lenient::i32_list")]
    pub code_set: Vec<i32>,
    /// `TAG` (also when absent, as ali-ons sends it) or `SQL92`.
    #[serde(default = "tag_expression_type")]
    pub expression_type: String,
    #[serde(default)]
    pub sub_string: String,
    /// Version (ms timestamp) for the SUBSCRIPTION_NOT_LATEST check.
    #[serde(default)]
    pub sub_version: i64,
    #[serde(default)]
    pub tags_set: Vec<String>,
    #[serde(default)]
    pub topic: String,
}

impl Default for SubscriptionData {
    fn default() -> Self {
        Self {
            class_filter_mode: false,
            code_set: Vec::new(),
            expression_type: tag_expression_type(),
            sub_string: Self::SUB_ALL.to_owned(),
            sub_version: 0,
            tags_set: Vec::new(),
            topic: String::new(),
        }
    }
}

impl SubscriptionData {
    /// The expression that matches every message.
    pub const SUB_ALL: &'static str = "*";
    /// Tag expression type.
    pub const EXPRESSION_TAG: &'static str = "TAG";
    /// SQL92 expression type.
    pub const EXPRESSION_SQL92: &'static str = "SQL92";

    /// Builds a TAG subscription from an expression such as `*` or `TagA || TagB`, as the broker
    /// does for pulls that carry their subscription: split on `||`, trim, drop empties, hash each
    /// tag. `*`, empty or blank means all messages (empty tag and code sets).
    pub fn from_tag_expression(topic: &str, expression: &str, sub_version: i64) -> Self {
        let expression = expression.trim();
        let mut data = Self {
            topic: topic.to_owned(),
            sub_version,
            ..Self::default()
        };
        if expression.is_empty() || expression == Self::SUB_ALL {
            return data;
        }
        expression.clone_into(&mut data.sub_string);
        for tag in expression
            .split("||")
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
        {
            data.tags_set.push(tag.to_owned());
            data.code_set.push(java_string_hash(tag));
        }
        data
    }

    /// Whether the subscription matches every message.
    pub fn is_all(&self) -> bool {
        self.sub_string.trim().is_empty() || self.sub_string.trim() == Self::SUB_ALL
    }

    /// Whether this is a TAG (not SQL92) subscription.
    pub fn is_tag_type(&self) -> bool {
        self.expression_type.is_empty() || self.expression_type == Self::EXPRESSION_TAG
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body;

    const JAVA_EXAMPLE: &str = concat!(
        r#"{"clientID":"192.168.0.20@12345#1234567890123","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","#,
        r#""consumeType":"CONSUME_PASSIVELY","groupName":"cg1","messageModel":"CLUSTERING","subscriptionDataSet":["#,
        r#"{"classFilterMode":false,"codeSet":[2598919],"expressionType":"TAG","subString":"TagA","subVersion":1700000000000,"tagsSet":["TagA"],"topic":"TopicTest"},"#,
        r#"{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"*","subVersion":1700000000001,"tagsSet":[],"topic":"%RETRY%cg1"}],"#,
        r#""unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#
    );

    #[test]
    fn documented_java_example_round_trips_byte_for_byte() {
        let data: HeartbeatData = body::decode(JAVA_EXAMPLE.as_bytes(), "HeartbeatData").unwrap();
        let consumer = &data.consumer_data_set[0];
        assert_eq!(consumer.consume_type, ConsumeType::Passively);
        assert_eq!(consumer.subscription_data_set[0].code_set, vec![2_598_919]);
        assert!(consumer.subscription_data_set[1].is_all());
        assert_eq!(
            String::from_utf8(body::to_vec(&data)).unwrap(),
            JAVA_EXAMPLE
        );
    }

    #[test]
    fn ali_ons_subscriptions_without_expression_type_are_tags() {
        let json = r#"{"clientID":"c","producerDataSet":[],"consumerDataSet":[{"groupName":"g","consumeType":"CONSUME_PASSIVELY",
            "messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","unitMode":false,
            "subscriptionDataSet":[{"topic":"t","subString":"a || b","classFilterMode":false,"tagsSet":["a","b"],"codeSet":[97,98],"subVersion":1}]}]}"#;
        let data: HeartbeatData = body::decode(json.as_bytes(), "HeartbeatData").unwrap();
        assert!(data.consumer_data_set[0].subscription_data_set[0].is_tag_type());
    }

    /// rocketmq-client-go v2 writes the tag hash codes as strings; fastjson reads them as ints.
    #[test]
    fn go_client_code_sets_written_as_strings_are_read_as_numbers() {
        let json = r#"{"clientID":"c","producerDataSet":[],"consumerDataSet":[{"groupName":"g","consumeType":"CONSUME_PASSIVELY",
            "messageModel":"CLUSTERING","consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","unitMode":false,
            "subscriptionDataSet":[{"topic":"t","subString":"TagA || TagB","classFilterMode":false,"tagsSet":["TagA","TagB"],
            "codeSet":["2598919","2598920"],"subVersion":1,"expressionType":"TAG"}]}]}"#;
        let data: HeartbeatData = body::decode(json.as_bytes(), "HeartbeatData").unwrap();
        let subscription = &data.consumer_data_set[0].subscription_data_set[0];
        assert_eq!(subscription.code_set, vec![2_598_919, 2_598_920]);

        let bad = json.replace("\"2598920\"", "\"TagB\"");
        let error = body::decode::<HeartbeatData>(bad.as_bytes(), "HeartbeatData").unwrap_err();
        assert!(error.to_string().contains("\"TagB\""), "{error}");
    }

    #[test]
    fn tag_expressions_are_split_and_hashed() {
        let data = SubscriptionData::from_tag_expression("t", " TagA || || TagB ", 5);
        assert_eq!(data.tags_set, vec!["TagA", "TagB"]);
        assert_eq!(data.code_set[0], 2_598_919);
        assert!(SubscriptionData::from_tag_expression("t", "*", 0).is_all());
        assert!(SubscriptionData::from_tag_expression("t", "  ", 0).is_all());
    }
}
