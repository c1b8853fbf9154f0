//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions and
//! DescribeConfigs, the APIs admin clients (and auto-creating tools) use to
//! shape the topics, apart from the record path so each family reads on
//! its own. (DeleteGroups, which needs the groups' private state, is in
//! `groups/members.rs`.)

use std::time::Instant;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::{
    KafkaService, ServeCtx, INVALID_PARTITIONS, INVALID_REQUEST, INVALID_TOPIC_EXCEPTION, NONE,
    TOPIC_ALREADY_EXISTS, UNKNOWN_TOPIC_OR_PARTITION,
};

impl KafkaService {
    pub(super) fn create_topics(
        &self,
        ctx: &ServeCtx,
        r: CreateTopicsRequest,
        started: Instant,
    ) -> CreateTopicsResponse {
        let mut out = Vec::new();
        let mut st = self.lock();
        for t in r.topics {
            let name = t.name.0.to_string();
            let n = if t.num_partitions == -1 {
                self.spec.default_partitions
            } else {
                t.num_partitions
            };
            let code = if name.is_empty() || name.len() > 249 {
                INVALID_TOPIC_EXCEPTION
            } else if !(1..=1000).contains(&n) {
                INVALID_PARTITIONS
            } else if st.topics.get(&name).is_some() {
                TOPIC_ALREADY_EXISTS
            } else {
                if !r.validate_only {
                    st.topics.create(&name, n);
                    let configs = t
                        .configs
                        .iter()
                        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
                        .collect();
                    st.topics.set_configs(&name, configs);
                }
                NONE
            };
            self.record(
                ctx,
                "create_topics",
                Some(&name),
                None,
                None,
                None,
                None,
                code,
                started,
            );
            let mut res = create_topics_response::CreatableTopicResult::default()
                .with_name(t.name)
                .with_error_code(code)
                .with_num_partitions(if code == NONE { n } else { -1 })
                .with_replication_factor(if code == NONE { 1 } else { -1 });
            if code == NONE {
                res.configs = Some(Vec::new());
            }
            out.push(res);
        }
        CreateTopicsResponse::default().with_topics(out)
    }

    pub(super) fn describe_configs(
        &self,
        ctx: &ServeCtx,
        r: &DescribeConfigsRequest,
        started: Instant,
    ) -> DescribeConfigsResponse {
        const TOPIC: i8 = 2;
        const BROKER: i8 = 4;
        let st = self.lock();
        let mut out = Vec::new();
        for res in &r.resources {
            let name = res.resource_name.to_string();
            let mut result = describe_configs_response::DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let mut entries: Vec<(String, String, i8)> = Vec::new();
            match res.resource_type {
                TOPIC => match st.topics.get(&name) {
                    None => result.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                    Some(t) => {
                        for (k, v) in crate::rules::kafka::DEFAULT_TOPIC_CONFIGS {
                            if !t.configs.contains_key(*k) {
                                entries.push((k.to_string(), v.to_string(), 5));
                            }
                        }
                        for (k, v) in &t.configs {
                            entries.push((k.clone(), v.clone(), 1));
                        }
                    }
                },
                BROKER => {
                    entries.push((
                        "auto.create.topics.enable".into(),
                        self.spec.auto_create_topics.to_string(),
                        4,
                    ));
                    entries.push((
                        "num.partitions".into(),
                        self.spec.default_partitions.to_string(),
                        4,
                    ));
                }
                _ => result.error_code = INVALID_REQUEST,
            }
            if let Some(keys) = &res.configuration_keys {
                entries.retain(|(k, _, _)| keys.iter().any(|x| x.as_str() == k));
            }
            entries.sort();
            result.configs = entries
                .into_iter()
                .map(|(k, v, source)| {
                    describe_configs_response::DescribeConfigsResourceResult::default()
                        .with_name(StrBytes::from_string(k))
                        .with_value(Some(StrBytes::from_string(v)))
                        .with_config_source(source)
                })
                .collect();
            self.record(
                ctx,
                "describe_configs",
                Some(&name),
                None,
                None,
                None,
                None,
                result.error_code,
                started,
            );
            out.push(result);
        }
        DescribeConfigsResponse::default().with_results(out)
    }

    pub(super) fn delete_topics(
        &self,
        ctx: &ServeCtx,
        r: DeleteTopicsRequest,
        started: Instant,
    ) -> DeleteTopicsResponse {
        let mut names: Vec<TopicName> = r.topic_names;
        names.extend(r.topics.into_iter().filter_map(|t| t.name));
        let mut out = Vec::new();
        let mut st = self.lock();
        for n in names {
            let code = if st.topics.delete(&n.0) {
                st.groups.forget_topic(&n.0);
                NONE
            } else {
                UNKNOWN_TOPIC_OR_PARTITION
            };
            self.record(
                ctx,
                "delete_topics",
                Some(&n.0),
                None,
                None,
                None,
                None,
                code,
                started,
            );
            out.push(
                delete_topics_response::DeletableTopicResult::default()
                    .with_name(Some(n))
                    .with_error_code(code),
            );
        }
        DeleteTopicsResponse::default().with_responses(out)
    }

    pub(super) fn create_partitions(
        &self,
        ctx: &ServeCtx,
        r: CreatePartitionsRequest,
        started: Instant,
    ) -> CreatePartitionsResponse {
        let mut out = Vec::new();
        let mut st = self.lock();
        for t in r.topics {
            let code = if r.validate_only {
                match st.topics.get(&t.name.0) {
                    None => UNKNOWN_TOPIC_OR_PARTITION,
                    Some(x) if t.count <= x.partitions.len() as i32 || t.count > 1000 => {
                        INVALID_PARTITIONS
                    }
                    Some(_) => NONE,
                }
            } else {
                st.topics.grow(&t.name.0, t.count).err().unwrap_or(NONE)
            };
            self.record(
                ctx,
                "create_partitions",
                Some(&t.name.0),
                None,
                None,
                None,
                None,
                code,
                started,
            );
            out.push(
                create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(t.name)
                    .with_error_code(code),
            );
        }
        CreatePartitionsResponse::default().with_results(out)
    }
}
