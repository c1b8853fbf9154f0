//! Request framing: the header and the body of each implemented API,
//! decoded with the `kafka-protocol` crate. Anything malformed, unknown or
//! outside the advertised versions closes only its own connection.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

use super::SUPPORTED;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: i16,
    pub version: i16,
    pub correlation_id: i32,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Metadata(MetadataRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    SyncGroup(SyncGroupRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    ApiVersions(ApiVersionsRequest),
    InitProducerId(InitProducerIdRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    CreatePartitions(CreatePartitionsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    DescribeCluster(DescribeClusterRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    DeleteGroups(DeleteGroupsRequest),
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// ApiVersions above the advertised range: answer with the v0 body.
    ApiVersionsTooNew { correlation_id: i32 },
    /// Anything else that cannot be answered: close the connection.
    Close,
}

/// Decodes one frame (without its length prefix).
pub fn decode(frame: Bytes) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Close);
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api = ApiKey::try_from(key).map_err(|_| DecodeError::Close)?;
    let Some(&(_, lo, hi)) = SUPPORTED.iter().find(|(k, _, _)| *k == api) else {
        return Err(DecodeError::Close);
    };
    if version > hi && api == ApiKey::ApiVersions {
        return Err(DecodeError::ApiVersionsTooNew { correlation_id });
    }
    if version < lo || version > hi {
        return Err(DecodeError::Close);
    }
    let mut buf = frame;
    let hv = api.request_header_version(version);
    RequestHeader::decode(&mut buf, hv).map_err(|_| DecodeError::Close)?;
    fn d<T: Decodable>(b: &mut Bytes, v: i16) -> Result<T, DecodeError> {
        T::decode(b, v).map_err(|_| DecodeError::Close)
    }
    let b = &mut buf;
    let v = version;
    let body = match api {
        ApiKey::Produce => Body::Produce(d(b, v)?),
        ApiKey::Fetch => Body::Fetch(d(b, v)?),
        ApiKey::CreateTopics => Body::CreateTopics(d(b, v)?),
        ApiKey::DeleteTopics => Body::DeleteTopics(d(b, v)?),
        ApiKey::CreatePartitions => Body::CreatePartitions(d(b, v)?),
        ApiKey::DescribeConfigs => Body::DescribeConfigs(d(b, v)?),
        ApiKey::DescribeCluster => Body::DescribeCluster(d(b, v)?),
        ApiKey::OffsetForLeaderEpoch => Body::OffsetForLeaderEpoch(d(b, v)?),
        ApiKey::DeleteGroups => Body::DeleteGroups(d(b, v)?),
        ApiKey::ListOffsets => Body::ListOffsets(d(b, v)?),
        ApiKey::Metadata => Body::Metadata(d(b, v)?),
        ApiKey::OffsetCommit => Body::OffsetCommit(d(b, v)?),
        ApiKey::OffsetFetch => Body::OffsetFetch(d(b, v)?),
        ApiKey::FindCoordinator => Body::FindCoordinator(d(b, v)?),
        ApiKey::JoinGroup => Body::JoinGroup(d(b, v)?),
        ApiKey::Heartbeat => Body::Heartbeat(d(b, v)?),
        ApiKey::LeaveGroup => Body::LeaveGroup(d(b, v)?),
        ApiKey::SyncGroup => Body::SyncGroup(d(b, v)?),
        ApiKey::DescribeGroups => Body::DescribeGroups(d(b, v)?),
        ApiKey::ListGroups => Body::ListGroups(d(b, v)?),
        ApiKey::ApiVersions => Body::ApiVersions(d(b, v)?),
        ApiKey::InitProducerId => Body::InitProducerId(d(b, v)?),
        _ => return Err(DecodeError::Close),
    };
    let _ = buf.remaining();
    Ok(Request {
        api_key: key,
        version,
        correlation_id,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(Bytes::from(bytes));
        }

        #[test]
        fn random_bodies_of_known_apis_never_panic(
            key in 0i16..70,
            version in 0i16..16,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut f = Vec::new();
            f.extend_from_slice(&key.to_be_bytes());
            f.extend_from_slice(&version.to_be_bytes());
            f.extend_from_slice(&7i32.to_be_bytes());
            f.extend_from_slice(&body);
            let _ = decode(Bytes::from(f));
        }
    }

    /// Pieces that decoders read as counts and lengths, each claiming a huge
    /// one: the largest i32 (an int16 length of 32767 when read as two
    /// bytes) and an unsigned varint of 2^31 (compact arrays and strings).
    fn huge() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(vec![0x7f, 0xff, 0xff, 0xff]),
            Just(vec![0x80, 0x80, 0x80, 0x80, 0x08]),
        ]
    }

    /// A well-formed header of `key` at `version`, without a body.
    fn header(key: ApiKey, version: i16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&(key as i16).to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&7i32.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes()); // client_id: null
        if key.request_header_version(version) >= 2 {
            f.push(0); // no tagged fields
        }
        f
    }

    proptest! {
        /// A well-formed header of every supported API and version, then a
        /// body made only of fields claiming huge counts, shorter than any
        /// of them: the decoders must refuse it (not reserve memory for the
        /// claim, which aborts the process, nor accept it). Bodies that
        /// are complete with nothing in them (ApiVersions, ListGroups at
        /// their oldest versions) are left out: nothing there reads a
        /// count.
        #[test]
        fn huge_claimed_counts_are_refused(
            api in 0usize..SUPPORTED.len(),
            version_pick in 0i16..32,
            fields in proptest::collection::vec(huge(), 1..24),
        ) {
            let (key, lo, hi) = SUPPORTED[api];
            let version = lo + version_pick % (hi - lo + 1);
            let f = header(key, version);
            prop_assume!(decode(Bytes::from(f.clone())).is_err());
            let mut f = f;
            for part in fields {
                f.extend_from_slice(&part);
            }
            prop_assert_eq!(decode(Bytes::from(f)).unwrap_err(), DecodeError::Close);
        }
    }

    /// Mixed pieces: huge claims, null and empty markers, small counts,
    /// plain bytes. Whatever they make of a body, decoding ends with an
    /// answer, never an abort.
    fn field() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            huge(),
            Just(vec![0xff, 0xff]),
            Just(vec![0x00]),
            Just(vec![0x00, 0x00, 0x00, 0x01]),
            any::<u8>().prop_map(|b| vec![b]),
        ]
    }

    proptest! {
        #[test]
        fn mixed_claims_never_abort(
            api in 0usize..SUPPORTED.len(),
            version_pick in 0i16..32,
            fields in proptest::collection::vec(field(), 1..24),
        ) {
            let (key, lo, hi) = SUPPORTED[api];
            let version = lo + version_pick % (hi - lo + 1);
            let mut f = header(key, version);
            for part in fields {
                f.extend_from_slice(&part);
            }
            let _ = decode(Bytes::from(f));
        }
    }

    /// Every API and version of the table, each huge claim: refused. The
    /// property above samples; this walks them all once.
    #[test]
    fn every_api_refuses_a_huge_first_claim() {
        let mut checked = 0;
        for &(key, lo, hi) in SUPPORTED {
            for version in lo..=hi {
                let f = header(key, version);
                if decode(Bytes::from(f.clone())).is_ok() {
                    continue; // an empty body is complete: no count to claim
                }
                for claim in [
                    &[0x7f, 0xff, 0xff, 0xff][..],
                    &[0x80, 0x80, 0x80, 0x80, 0x08][..],
                ] {
                    let mut g = f.clone();
                    for _ in 0..8 {
                        g.extend_from_slice(claim);
                    }
                    assert_eq!(
                        decode(Bytes::from(g)).unwrap_err(),
                        DecodeError::Close,
                        "{key:?} v{version} with {claim:02x?} repeated"
                    );
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 2 * SUPPORTED.len(),
            "only {checked} cases checked"
        );
    }

    #[test]
    fn a_metadata_request_claiming_two_billion_topics_is_refused() {
        let mut f = Vec::new();
        f.extend_from_slice(&3i16.to_be_bytes()); // Metadata
        f.extend_from_slice(&1i16.to_be_bytes());
        f.extend_from_slice(&7i32.to_be_bytes());
        f.extend_from_slice(&(-1i16).to_be_bytes());
        f.extend_from_slice(&i32::MAX.to_be_bytes()); // topics: 2^31 - 1 of them
        f.extend_from_slice(&[0, 1, b'x']);
        assert_eq!(decode(Bytes::from(f)).unwrap_err(), DecodeError::Close);
    }

    #[test]
    fn api_versions_above_the_range_gets_the_fallback() {
        let mut f = Vec::new();
        f.extend_from_slice(&18i16.to_be_bytes());
        f.extend_from_slice(&9i16.to_be_bytes());
        f.extend_from_slice(&42i32.to_be_bytes());
        assert_eq!(
            decode(Bytes::from(f)).unwrap_err(),
            DecodeError::ApiVersionsTooNew { correlation_id: 42 }
        );
    }
}
