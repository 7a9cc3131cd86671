//! Request handling: one command in, one response frame out (docs/protocol.md §3.3, §7).

use std::time::Instant;

use bytes::BytesMut;
use ringmq_protocol::{
    Command, CommandHead, RequestCode, ResponseCode,
    body::{self, DataVersion, KvTable, RegisterBrokerBody},
    encode_frame,
    header::{
        DeleteKvConfigRequestHeader, DeleteTopicFromNamesrvRequestHeader, GetKvConfigRequestHeader,
        GetKvConfigResponseHeader, GetKvListByNamespaceRequestHeader, GetRouteInfoRequestHeader,
        PutKvConfigRequestHeader, QueryDataVersionRequestHeader, QueryDataVersionResponseHeader,
        RegisterBrokerRequestHeader, RegisterBrokerResponseHeader, UnregisterBrokerRequestHeader,
    },
    message::body_crc,
};

use crate::{
    registry::{ConnectionId, Registration},
    state::Shared,
};

/// KV namespace whose table REGISTER_BROKER returns (RocketMQ's ordered-topic configuration).
const ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

/// Handles one request and appends its response to `out` (nothing for oneway requests).
pub(crate) fn handle(
    shared: &Shared,
    command: &Command,
    connection: ConnectionId,
    out: &mut BytesMut,
) {
    if command.is_response() {
        return; // nothing is ever asked of the peer, so there is nothing to match
    }
    let mut response = BytesMut::new();
    let out_ref = if command.is_oneway() {
        &mut response
    } else {
        &mut *out
    };
    if let Err(error) = dispatch(shared, command, connection, out_ref) {
        let head = CommandHead::response_to(command, error.code).with_remark(&error.remark);
        encode_frame(&head, &(), &[], out_ref);
    }
}

/// An error answer.
struct Refusal {
    code: ResponseCode,
    remark: String,
}

impl Refusal {
    fn system(remark: impl Into<String>) -> Self {
        Self {
            code: ResponseCode::SystemError,
            remark: remark.into(),
        }
    }
}

impl From<ringmq_protocol::FieldError> for Refusal {
    fn from(err: ringmq_protocol::FieldError) -> Self {
        Self::system(err.to_string())
    }
}

fn dispatch(
    shared: &Shared,
    command: &Command,
    connection: ConnectionId,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let ok = CommandHead::response_to(command, ResponseCode::Success);
    match command.request_code() {
        RequestCode::GetRouteinfoByTopic => route(shared, command, out)?,
        RequestCode::RegisterBroker => register_broker(shared, command, connection, out)?,
        RequestCode::UnregisterBroker => {
            let header: UnregisterBrokerRequestHeader<'_> = command.header()?;
            let mut registry = shared.registry();
            let changed =
                registry.unregister(header.broker_name, header.broker_addr, header.broker_id);
            shared.publish(&registry, &changed);
            drop(registry);
            tracing::info!(
                broker = header.broker_addr,
                name = header.broker_name,
                "broker unregistered"
            );
            encode_frame(&ok, &(), &[], out);
        }
        RequestCode::QueryDataVersion => {
            let header: QueryDataVersionRequestHeader<'_> = command.header()?;
            let version: DataVersion = if command.body.is_empty() {
                DataVersion::default()
            } else {
                body::decode(&command.body, "DataVersion")
                    .map_err(|e| Refusal::system(e.to_string()))?
            };
            let (changed, held) =
                shared
                    .registry()
                    .query_data_version(header.broker_addr, version, Instant::now());
            let reply = QueryDataVersionResponseHeader { changed };
            let held = held.map(|v| body::to_vec(&v)).unwrap_or_default();
            encode_frame(&ok, &reply, &held, out);
        }
        RequestCode::GetBrokerClusterInfo => {
            let info = shared.registry().cluster_info();
            encode_frame(&ok, &(), &body::to_vec(&info), out);
        }
        RequestCode::GetAllTopicListFromNameserver => {
            let list = shared.registry().topic_list();
            encode_frame(&ok, &(), &body::to_vec(&list), out);
        }
        RequestCode::DeleteTopicInNamesrv => {
            let header: DeleteTopicFromNamesrvRequestHeader<'_> = command.header()?;
            let mut registry = shared.registry();
            let changed = registry.delete_topic(header.topic, header.cluster_name);
            shared.publish(&registry, &changed);
            drop(registry);
            encode_frame(&ok, &(), &[], out);
        }
        RequestCode::PutKvConfig
        | RequestCode::GetKvConfig
        | RequestCode::DeleteKvConfig
        | RequestCode::GetKvlistByNamespace => kv_config(shared, command, out)?,
        _ => {
            return Err(Refusal {
                code: ResponseCode::RequestCodeNotSupported,
                remark: format!(" request type {} not supported", command.code),
            });
        }
    }
    Ok(())
}

/// GET_ROUTEINFO_BY_TOPIC: the pre-encoded body from the current snapshot.
fn route(shared: &Shared, command: &Command, out: &mut BytesMut) -> Result<(), Refusal> {
    let header: GetRouteInfoRequestHeader<'_> = command.header()?;
    let routes = shared.routes();
    if let Some(route) = routes.routes.get(header.topic) {
        let ok = CommandHead::response_to(command, ResponseCode::Success);
        encode_frame(&ok, &(), route, out);
    } else {
        let remark = format!(
            "No topic route info in name server for the topic: {}",
            header.topic
        );
        let head =
            CommandHead::response_to(command, ResponseCode::TopicNotExist).with_remark(&remark);
        encode_frame(&head, &(), &[], out);
    }
    Ok(())
}

/// The KV-config commands.
fn kv_config(shared: &Shared, command: &Command, out: &mut BytesMut) -> Result<(), Refusal> {
    let ok = CommandHead::response_to(command, ResponseCode::Success);
    let not_found = |remark: String, out: &mut BytesMut| {
        let head =
            CommandHead::response_to(command, ResponseCode::QueryNotFound).with_remark(&remark);
        encode_frame(&head, &(), &[], out);
    };
    match command.request_code() {
        RequestCode::PutKvConfig => {
            let header: PutKvConfigRequestHeader<'_> = command.header()?;
            shared
                .registry()
                .put_kv(header.namespace, header.key, header.value);
            encode_frame(&ok, &(), &[], out);
        }
        RequestCode::GetKvConfig => {
            let header: GetKvConfigRequestHeader<'_> = command.header()?;
            let registry = shared.registry();
            if let Some(value) = registry.get_kv(header.namespace, header.key) {
                let reply = GetKvConfigResponseHeader { value: Some(value) };
                encode_frame(&ok, &reply, &[], out);
            } else {
                not_found(
                    format!(
                        "No config item, Namespace: {} Key: {}",
                        header.namespace, header.key
                    ),
                    out,
                );
            }
        }
        RequestCode::DeleteKvConfig => {
            let header: DeleteKvConfigRequestHeader<'_> = command.header()?;
            shared.registry().delete_kv(header.namespace, header.key);
            encode_frame(&ok, &(), &[], out);
        }
        _ => {
            let header: GetKvListByNamespaceRequestHeader<'_> = command.header()?;
            let registry = shared.registry();
            if let Some(table) = registry.kv_namespace(header.namespace) {
                let body = body::to_vec(&KvTable {
                    table: table.clone(),
                });
                encode_frame(&ok, &(), &body, out);
            } else {
                not_found(
                    format!("No config item, Namespace: {}", header.namespace),
                    out,
                );
            }
        }
    }
    Ok(())
}

fn register_broker(
    shared: &Shared,
    command: &Command,
    connection: ConnectionId,
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let header: RegisterBrokerRequestHeader<'_> = command.header()?;
    if let Some(expected) = header.body_crc32.filter(|&crc| crc != 0) {
        let actual = body_crc(&command.body);
        if actual != expected {
            tracing::warn!(
                broker = header.broker_addr,
                expected,
                actual,
                "REGISTER_BROKER body CRC mismatch"
            );
            return Err(Refusal::system("crc32 not match"));
        }
    }
    // Decoding (up to megabytes of JSON) happens before the registry is locked.
    let body = if command.body.is_empty() {
        None
    } else {
        Some(
            RegisterBrokerBody::decode_request(
                &command.body,
                header.compressed.unwrap_or(false),
                command.version,
            )
            .map_err(|e| Refusal::system(format!("bad REGISTER_BROKER body: {e}")))?,
        )
    };
    let registration = Registration {
        cluster: header.cluster_name,
        broker_name: header.broker_name,
        broker_addr: header.broker_addr,
        broker_id: header.broker_id,
        ha_server_addr: header.ha_server_addr,
        topics: body.as_ref().map(|b| &b.topic_config_serialize_wrapper),
        connection,
    };
    let mut registry = shared.registry();
    let (outcome, changed) = registry.register(&registration, Instant::now());
    shared.publish(&registry, &changed);
    let order_topics = registry
        .kv_namespace(ORDER_TOPIC_CONFIG)
        .map(|table| {
            body::to_vec(&KvTable {
                table: table.clone(),
            })
        })
        .unwrap_or_default();
    drop(registry);
    if !changed.is_empty() {
        tracing::info!(
            broker = header.broker_addr,
            name = header.broker_name,
            cluster = header.cluster_name,
            id = header.broker_id,
            routes_changed = changed.len(),
            "broker registered"
        );
    }
    let reply = RegisterBrokerResponseHeader {
        ha_server_addr: outcome.ha_server_addr.as_deref(),
        master_addr: outcome.master_addr.as_deref(),
    };
    let ok = CommandHead::response_to(command, ResponseCode::Success);
    encode_frame(&ok, &reply, &order_topics, out);
    Ok(())
}
