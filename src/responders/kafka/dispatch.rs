//! From a request frame to its reply: decoding, the rules' faults
//! (latency, disconnect, error), then one match over the API keys handing
//! each request to its family's handler (`metadata`, `produce`, `fetch`,
//! `admin`, `groups`) and encoding the response. Kept apart from the
//! handlers so the table of APIs reads on one screen.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;

use super::cluster::Cluster;
use super::metadata::{self, api_versions};
use super::{
    api_name, faults, groups, pick_latency, wire, KafkaFaultKind, KafkaService, Reply, ServeCtx,
    NETWORK_EXCEPTION, NONE, REQUEST_TIMED_OUT, UNSUPPORTED_VERSION,
};

/// Decodes one request frame and answers it.
pub(super) async fn handle_frame(
    svc: &KafkaService,
    ctx: &ServeCtx,
    frame: Bytes,
    started: Instant,
) -> Reply {
    let req = match wire::decode(frame) {
        Ok(r) => r,
        Err(wire::DecodeError::ApiVersionsTooNew { correlation_id }) => {
            // Kafka answers with the v0 body listing its ranges; the
            // client then retries with a version it shares.
            let mut resp = api_versions();
            resp.error_code = UNSUPPORTED_VERSION;
            svc.record_api(ctx, "api_versions", UNSUPPORTED_VERSION, started);
            return encode(correlation_id, ApiKey::ApiVersions, 0, &resp);
        }
        Err(wire::DecodeError::Close) => return Reply::Close,
    };
    let v = req.version;
    let cid = req.correlation_id;
    let api = api_name(req.api_key);
    let cluster = Cluster::of(&svc.spec, ctx);
    match svc.pick_fault(api) {
        None => {}
        Some(KafkaFaultKind::Latency(l)) => tokio::time::sleep(pick_latency(l)).await,
        Some(KafkaFaultKind::Reset) => {
            svc.record_api(ctx, api, NETWORK_EXCEPTION, started);
            return Reply::Disconnect;
        }
        Some(KafkaFaultKind::Hang) => {
            svc.record_api(ctx, api, REQUEST_TIMED_OUT, started);
            return Reply::Hang;
        }
        Some(KafkaFaultKind::Error(code)) => {
            return faults::error_reply(svc, ctx, &cluster, &req, *code, started);
        }
    }
    match req.body {
        // Discovery (metadata.rs).
        wire::Body::ApiVersions(_) => {
            svc.record_api(ctx, "api_versions", NONE, started);
            encode(cid, ApiKey::ApiVersions, v, &api_versions())
        }
        wire::Body::Metadata(r) => {
            let resp = svc.metadata(&cluster, &r, v);
            svc.record_api(ctx, "metadata", NONE, started);
            encode(cid, ApiKey::Metadata, v, &resp)
        }
        wire::Body::DescribeCluster(_) => {
            let resp = metadata::describe_cluster(&cluster);
            svc.record_api(ctx, "describe_cluster", NONE, started);
            encode(cid, ApiKey::DescribeCluster, v, &resp)
        }
        wire::Body::FindCoordinator(r) => {
            let resp = metadata::find_coordinator(&cluster, &r, v);
            svc.record_api(ctx, "find_coordinator", NONE, started);
            encode(cid, ApiKey::FindCoordinator, v, &resp)
        }
        // Writes (produce.rs).
        wire::Body::Produce(r) => {
            let acks = r.acks;
            let resp = svc.produce(ctx, &cluster, r, started);
            if acks == 0 {
                Reply::None
            } else {
                encode(cid, ApiKey::Produce, v, &resp)
            }
        }
        wire::Body::InitProducerId(_) => {
            let resp = svc.init_producer_id();
            svc.record_api(ctx, "init_producer_id", NONE, started);
            encode(cid, ApiKey::InitProducerId, v, &resp)
        }
        // Reads (fetch.rs).
        wire::Body::Fetch(r) => {
            let resp = svc.fetch(ctx, &cluster, &r, started).await;
            encode(cid, ApiKey::Fetch, v, &resp)
        }
        wire::Body::ListOffsets(r) => {
            let resp = svc.list_offsets(ctx, &cluster, &r, v, started);
            encode(cid, ApiKey::ListOffsets, v, &resp)
        }
        wire::Body::OffsetForLeaderEpoch(r) => {
            let resp = svc.offset_for_leader_epoch(ctx, &cluster, &r, started);
            encode(cid, ApiKey::OffsetForLeaderEpoch, v, &resp)
        }
        // Topic administration (admin.rs).
        wire::Body::CreateTopics(r) => {
            let resp = svc.create_topics(ctx, r, started);
            encode(cid, ApiKey::CreateTopics, v, &resp)
        }
        wire::Body::DeleteTopics(r) => {
            let resp = svc.delete_topics(ctx, r, started);
            encode(cid, ApiKey::DeleteTopics, v, &resp)
        }
        wire::Body::CreatePartitions(r) => {
            let resp = svc.create_partitions(ctx, r, started);
            encode(cid, ApiKey::CreatePartitions, v, &resp)
        }
        wire::Body::DescribeConfigs(r) => {
            let resp = svc.describe_configs(ctx, &r, started);
            encode(cid, ApiKey::DescribeConfigs, v, &resp)
        }
        // Consumer groups (groups/).
        wire::Body::JoinGroup(r) => {
            let resp = groups::join(svc, r, v).await;
            svc.record_api(ctx, "join_group", resp.error_code, started);
            encode(cid, ApiKey::JoinGroup, v, &resp)
        }
        wire::Body::SyncGroup(r) => {
            let resp = groups::sync(svc, r).await;
            svc.record_api(ctx, "sync_group", resp.error_code, started);
            encode(cid, ApiKey::SyncGroup, v, &resp)
        }
        wire::Body::Heartbeat(r) => {
            let code = groups::heartbeat(svc, &r);
            svc.record_api(ctx, "heartbeat", code, started);
            encode(
                cid,
                ApiKey::Heartbeat,
                v,
                &HeartbeatResponse::default().with_error_code(code),
            )
        }
        wire::Body::LeaveGroup(r) => {
            let resp = groups::leave(svc, &r, v);
            svc.record_api(ctx, "leave_group", resp.error_code, started);
            encode(cid, ApiKey::LeaveGroup, v, &resp)
        }
        wire::Body::DescribeGroups(r) => {
            let resp = groups::describe(svc, &r);
            svc.record_api(ctx, "describe_groups", NONE, started);
            encode(cid, ApiKey::DescribeGroups, v, &resp)
        }
        wire::Body::ListGroups(_) => {
            let resp = groups::list(svc);
            svc.record_api(ctx, "list_groups", NONE, started);
            encode(cid, ApiKey::ListGroups, v, &resp)
        }
        wire::Body::DeleteGroups(r) => {
            let resp = groups::delete(svc, &r);
            for g in &resp.results {
                svc.record_api(ctx, "delete_groups", g.error_code, started);
            }
            encode(cid, ApiKey::DeleteGroups, v, &resp)
        }
        wire::Body::OffsetCommit(r) => {
            let resp = groups::commit(svc, &r);
            svc.record_api(ctx, "offset_commit", NONE, started);
            encode(cid, ApiKey::OffsetCommit, v, &resp)
        }
        wire::Body::OffsetFetch(r) => {
            let resp = groups::fetch_offsets(svc, &r, v);
            svc.record_api(ctx, "offset_fetch", NONE, started);
            encode(cid, ApiKey::OffsetFetch, v, &resp)
        }
    }
}

/// Encodes a response with its header.
pub(super) fn encode<R: Encodable>(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &R,
) -> Reply {
    let mut out = BytesMut::with_capacity(256);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let hv = key.response_header_version(version);
    if let Err(e) = header
        .encode(&mut out, hv)
        .and_then(|_| body.encode(&mut out, version))
    {
        tracing::warn!("kafka: cannot encode the {key:?} v{version} response: {e}");
        return Reply::Close;
    }
    Reply::Body(out)
}
