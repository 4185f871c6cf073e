//! The Kafka-side series: what blocks consumption, each assigned partition's lag and stall
//! state, and their removal when a partition is revoked.
//!
//! Owns only the label bookkeeping of those series; the ingest task decides what a partition's
//! state is. Must not talk to Kafka.

use prometheus::core::Collector;

use super::Metrics;

impl Metrics {
    /// Sets (`Some(instruction)`) or clears (`None`) what blocks Kafka consumption for
    /// `reason`, one of [`super::KAFKA_BLOCKS`]. The instruction must not hold a secret.
    pub fn kafka_block(&self, reason: &'static str, instruction: Option<String>) {
        let mut detail = self
            .kafka_block_detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.kafka_blocked
            .with_label_values(&[reason])
            .set(i64::from(instruction.is_some()));
        match instruction {
            Some(i) => detail.insert(reason, i),
            None => detail.remove(reason),
        };
    }

    /// Whether Kafka consumption is blocked for `reason` now.
    pub fn kafka_blocked(&self, reason: &str) -> bool {
        self.kafka_blocked.with_label_values(&[reason]).get() == 1
    }

    /// The instructions of what blocks Kafka consumption now (empty when nothing does).
    pub fn kafka_blocks(&self) -> Vec<String> {
        self.kafka_block_detail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Sets the consumer lag of the partitions of `topic` this process consumes now, from one
    /// statistics report, and removes the lag of every other partition of `topic`: a
    /// partition that moved to another consumer must not keep its last lag here.
    pub fn set_consumer_lags(&self, topic: &str, lags: &[(i32, i64)]) {
        for (partition, lag) in lags {
            self.consumer_lag
                .with_label_values(&[topic, &partition.to_string()])
                .set(*lag);
        }
        for partition in self.partitions_of(topic) {
            if !lags.iter().any(|(p, _)| p.to_string() == partition) {
                let _ = self.consumer_lag.remove_label_values(&[topic, &partition]);
            }
        }
    }

    /// Sets whether a partition this process consumes is stalled (`None`: unchanged). The
    /// series exists, at 0, for every partition consumed, so an alert sees the first stall.
    pub fn set_partition_stalled(&self, topic: &str, partition: i32, stalled: Option<bool>) {
        let gauge = self
            .partition_stalled
            .with_label_values(&[topic, &partition.to_string()]);
        if let Some(stalled) = stalled {
            gauge.set(i64::from(stalled));
        }
    }

    /// Removes the series of a partition this process no longer consumes (revoked, or left by
    /// a reconnect).
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let labels = [topic, &partition.to_string()];
        let _ = self.consumer_lag.remove_label_values(&labels);
        let _ = self.partition_stalled.remove_label_values(&labels);
    }

    /// The `partition` label values of the `driftd_consumer_lag` series of `topic`.
    fn partitions_of(&self, topic: &str) -> Vec<String> {
        let label = |m: &prometheus::proto::Metric, name: &str| {
            m.get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_string())
        };
        self.consumer_lag
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| label(m, "topic").as_deref() == Some(topic))
            .filter_map(|m| label(m, "partition"))
            .collect()
    }
}
