//! Whether the topics driftd needs are there: the event topic (`kafka.topic`) and the
//! dead-letter topic (`kafka.dead_letter_topic`).
//!
//! librdkafka treats a missing topic as something that may appear and says so on every retry;
//! driftd would consume nothing (or lose every dead letter) behind a warning a minute. This
//! module asks the brokers once they answer: a missing or unauthorised topic is one error line
//! saying which topic and what to do, and `/readyz` says the same
//! (`driftd_kafka_blocked{reason="topic"}`) until the topic is there, checked every
//! [`RECHECK_EVERY`]. With `kafka.create_topics = true` the dead-letter topic is created (with
//! the brokers' default partitions and replication). The event topic never is: its producers
//! own its partitions and retention, and a misspelt `kafka.topic` would otherwise become an
//! empty topic that driftd waits on forever. It only checks and creates; it must not consume.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;

/// How often a missing topic is looked for again (and the brokers asked while unreachable).
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// What the brokers say about one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Present,
    Missing,
    Unauthorized,
}

/// Checks the topics until both are there (creating the dead-letter topic when
/// `kafka.create_topics` says so), or until shutdown. Run as a background task.
pub async fn watch(config: Config, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let k = &config.kafka;
    let admin = match super::client_config(&config).and_then(|(mut cc, redact)| {
        // Asking for a missing topic must not create it on brokers that auto-create.
        cc.set("allow.auto.create.topics", "false");
        cc.set_log_level(rdkafka::config::RDKafkaLogLevel::Critical);
        cc.create::<AdminClient<DefaultClientContext>>()
            .map_err(|e| redact.error(e))
    }) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::error!(error = %crate::logging::chain(&e), "cannot check the topics");
            return;
        }
    };
    let mut topics = vec![("kafka.topic", k.topic.clone())];
    if !k.dead_letter_topic.is_empty() {
        topics.push(("kafka.dead_letter_topic", k.dead_letter_topic.clone()));
    }
    let mut said = String::new();
    // One attempt: a refusal is said once, not every second.
    let mut may_create = k.create_topics;
    loop {
        let mut problems = Vec::new();
        let mut unanswered = false;
        for (setting, topic) in &topics {
            let found = match lookup(&admin, topic).await {
                Some(f) => f,
                None => {
                    unanswered = true;
                    continue;
                }
            };
            let dead_letter = *setting == "kafka.dead_letter_topic";
            let found = if found == Found::Missing && dead_letter && may_create {
                may_create = false;
                create(&admin, topic).await
            } else {
                found
            };
            match found {
                Found::Present => {}
                Found::Missing if dead_letter => problems.push(format!(
                    "{setting} \"{topic}\" does not exist on the brokers, so rejected events cannot be dead-lettered: create it, or set kafka.create_topics = true and restart driftd to have it created"
                )),
                Found::Missing => problems.push(format!(
                    "{setting} \"{topic}\" does not exist on the brokers: create it (driftd never creates the event topic) or correct kafka.topic"
                )),
                Found::Unauthorized => problems.push(format!(
                    "{setting} \"{topic}\" is not accessible with these credentials: grant sasl.username read on the event topic and write on the dead-letter topic"
                )),
            }
        }
        let now = problems.join("; ");
        if now != said {
            if now.is_empty() {
                tracing::info!("the missing topics are there now");
            } else {
                tracing::error!(problem = %now, "a Kafka topic driftd needs is not usable; not ready until it is (checked every second)");
            }
            metrics.kafka_block("topic", (!now.is_empty()).then(|| now.clone()));
            said = now;
        }
        if said.is_empty() && !unanswered {
            return;
        }
        tokio::select! {
            _ = crate::signals::stopped(&mut shutdown) => return,
            _ = tokio::time::sleep(RECHECK_EVERY) => {}
        }
    }
}

/// The topic's metadata; `None` when no broker answered (the clients report that already).
async fn lookup(admin: &Arc<AdminClient<DefaultClientContext>>, topic: &str) -> Option<Found> {
    let admin = admin.clone();
    let topic = topic.to_string();
    let metadata = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
    })
    .await
    .ok()?
    .ok()?;
    let t = metadata.topics().first()?;
    Some(match t.error().map(RDKafkaErrorCode::from) {
        None if !t.partitions().is_empty() => Found::Present,
        None
        | Some(RDKafkaErrorCode::UnknownTopicOrPartition)
        | Some(RDKafkaErrorCode::UnknownTopic) => Found::Missing,
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Found::Unauthorized,
        Some(_) => return None,
    })
}

/// Creates the dead-letter topic with the brokers' defaults; what it is afterwards.
async fn create(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Found {
    let new = NewTopic::new(topic, -1, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let result = match admin.create_topics([&new], &options).await {
        Ok(mut r) => r.pop().map(|r| r.map(|_| ()).map_err(|(_, code)| code)),
        Err(e) => Some(Err(e
            .rdkafka_error_code()
            .unwrap_or(RDKafkaErrorCode::Fail))),
    };
    match result {
        Some(Ok(())) | Some(Err(RDKafkaErrorCode::TopicAlreadyExists)) => {
            tracing::info!(topic, "dead-letter topic created (kafka.create_topics)");
            Found::Present
        }
        Some(Err(RDKafkaErrorCode::TopicAuthorizationFailed))
        | Some(Err(RDKafkaErrorCode::ClusterAuthorizationFailed)) => Found::Unauthorized,
        Some(Err(code)) => {
            tracing::error!(topic, error = %code, "the dead-letter topic could not be created (kafka.create_topics)");
            Found::Missing
        }
        None => Found::Missing,
    }
}
