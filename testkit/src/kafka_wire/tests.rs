//! Tests of the fronts' message rewriting and answers, with messages built by kafka-protocol at
//! every version a client may send.

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};

use super::*;

/// A Metadata response (header included) with one broker and one topic of `partitions`.
pub(crate) fn metadata_response(version: i16, partitions: i32) -> Vec<u8> {
    let topic =
        MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_static_str("logs")))).with_partitions(
            (0..partitions)
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p)
                        .with_leader_id(BrokerId(1))
                        .with_replica_nodes(vec![BrokerId(1)])
                        .with_isr_nodes(vec![BrokerId(1)])
                })
                .collect(),
        );
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(1))
        .with_host(StrBytes::from_static_str("127.0.0.1"))
        .with_port(9092)
        .with_rack(Some(StrBytes::from_static_str("use1-az1")));
    let meta = MetadataResponse::default().with_brokers(vec![broker]).with_topics(vec![topic]);
    response(7, &meta, version).expect("encodes")
}

#[test]
fn metadata_lists_only_the_visible_partitions_at_every_version() {
    let visible = BTreeMap::from([("logs".to_owned(), 3)]);
    for version in MetadataResponse::VERSIONS.min..=MetadataResponse::VERSIONS.max {
        let rewritten =
            rewrite_metadata(&metadata_response(version, 6), version, &visible, &Preferred::new()).expect("rewritten");
        assert_eq!(rewritten, metadata_response(version, 3), "version {version}");
        // With nothing to hide, the response is left alone.
        assert_eq!(
            rewrite_metadata(&metadata_response(version, 2), version, &visible, &Preferred::new()),
            None,
            "version {version}"
        );
    }
}

#[test]
fn garbage_is_left_alone() {
    let visible = BTreeMap::from([("logs".to_owned(), 3)]);
    let mut frame = metadata_response(12, 6);
    frame.truncate(frame.len() / 2);
    assert_eq!(rewrite_metadata(&frame, 12, &visible, &Preferred::new()), None);
    assert_eq!(rewrite_metadata(&[1, 2, 3], 4, &visible, &Preferred::new()), None);
    let mut request = describe_configs_request(1);
    request.truncate(request.len() - 3);
    assert_eq!(describe_configs(&request, &BTreeMap::new()), None);
    assert_eq!(describe_configs(&[0, 32, 0], &BTreeMap::new()), None);
}

#[test]
fn api_versions_gain_keys_at_every_version() {
    for version in ApiVersionsResponse::VERSIONS.min..=ApiVersionsResponse::VERSIONS.max {
        let broker = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default().with_api_key(API_METADATA).with_max_version(12),
            ApiVersion::default().with_api_key(API_DESCRIBE_CONFIGS).with_max_version(0),
        ]);
        let answer = response(5, &broker, version).expect("encodes");
        let out = advertise(&answer, version, &[own_versions()[0]]).expect("advertised");
        let (id, got) = read_response::<ApiVersionsResponse>(&out, version).expect("decodes");
        let keys: Vec<(i16, i16, i16)> =
            got.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        assert_eq!(id, 5);
        assert_eq!(keys, vec![(API_METADATA, 0, 12), own_versions()[0]], "version {version}");
        let refused = response(5, &ApiVersionsResponse::default().with_error_code(35), version).expect("encodes");
        assert_eq!(advertise(&refused, version, &[own_versions()[0]]), None);
    }
}

/// A DescribeConfigs request (header included) for topic `logs` (all its entries) and a broker.
fn describe_configs_request(version: i16) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(API_DESCRIBE_CONFIGS)
        .with_request_api_version(version)
        .with_correlation_id(9)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    let body = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_static_str("logs")),
        DescribeConfigsResource::default().with_resource_type(4).with_resource_name(StrBytes::from_static_str("1")),
    ]);
    let mut out = BytesMut::new();
    header.encode(&mut out, DescribeConfigsRequest::header_version(version)).expect("header");
    body.encode(&mut out, version).expect("body");
    out.to_vec()
}

#[test]
fn describe_configs_answers_from_the_table_at_every_version() {
    let table =
        BTreeMap::from([("logs".to_owned(), BTreeMap::from([("max.message.bytes".to_owned(), "1000".to_owned())]))]);
    for version in DescribeConfigsRequest::VERSIONS.min..=DescribeConfigsRequest::VERSIONS.max {
        let out = describe_configs(&describe_configs_request(version), &table).expect("answered");
        let (id, got) = read_response::<DescribeConfigsResponse>(&out, version).expect("decodes");
        assert_eq!(id, 9);
        assert_eq!(got.results.len(), 2);
        let topic = &got.results[0];
        assert_eq!((topic.error_code, topic.resource_type, topic.resource_name.as_str()), (0, RESOURCE_TOPIC, "logs"));
        let entries: Vec<(&str, Option<&str>)> =
            topic.configs.iter().map(|c| (c.name.as_str(), c.value.as_deref())).collect();
        assert_eq!(entries, vec![("max.message.bytes", Some("1000"))], "version {version}");
        assert!(got.results[1].configs.is_empty(), "a broker resource has no entries here");
    }
}

#[test]
fn sasl_requests_are_read_and_answered_at_every_version() {
    for version in SaslHandshakeRequest::VERSIONS.min..=SaslHandshakeRequest::VERSIONS.max {
        let header = RequestHeader::default()
            .with_request_api_key(API_SASL_HANDSHAKE)
            .with_request_api_version(version)
            .with_correlation_id(3);
        let mut frame = BytesMut::new();
        header.encode(&mut frame, SaslHandshakeRequest::header_version(version)).expect("header");
        let body = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-512"));
        body.encode(&mut frame, version).expect("body");
        let (h, rest) = request(&frame).expect("a request");
        assert_eq!(sasl_handshake(&h, rest).as_deref(), Some("SCRAM-SHA-512"));
        let answer = sasl_handshake_answer(&h, 0, &["PLAIN", "SCRAM-SHA-512"]).expect("answer");
        let (id, got) = read_response::<SaslHandshakeResponse>(&answer, version).expect("decodes");
        assert_eq!((id, got.mechanisms.len()), (3, 2));
    }
    for version in SaslAuthenticateRequest::VERSIONS.min..=SaslAuthenticateRequest::VERSIONS.max {
        let header = RequestHeader::default()
            .with_request_api_key(API_SASL_AUTHENTICATE)
            .with_request_api_version(version)
            .with_correlation_id(4)
            .with_client_id(Some(StrBytes::from_static_str("zonal")));
        let mut frame = BytesMut::new();
        header.encode(&mut frame, SaslAuthenticateRequest::header_version(version)).expect("header");
        SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"n,,n=alice,r=abc"))
            .encode(&mut frame, version)
            .expect("body");
        let (h, rest) = request(&frame).expect("a request");
        assert_eq!(h.client_id.as_deref(), Some("zonal"));
        assert_eq!(sasl_authenticate(&h, rest).as_deref(), Some(&b"n,,n=alice,r=abc"[..]));
        let answer = sasl_authenticate_answer(&h, 58, Some("no".into()), Vec::new()).expect("answer");
        let (id, got) = read_response::<SaslAuthenticateResponse>(&answer, version).expect("decodes");
        assert_eq!((id, got.error_code, got.error_message.as_deref()), (4, 58, Some("no")));
    }
}
