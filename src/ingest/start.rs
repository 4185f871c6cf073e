//! Where a partition without a committed offset starts (`kafka.start_from`).
//!
//! `earliest` and `latest` are librdkafka's `auto.offset.reset`. A lookback is resolved at
//! assignment, inside the rebalance callback, before the partitions are assigned: the group's
//! committed offsets are read, and each partition that has none is assigned at the first message
//! whose Kafka timestamp is at or after now minus the lookback (offsets-for-times). Committed
//! offsets always win. If the lookup fails, those partitions fall back to `latest`, and the
//! error says so: a new group must not replay days of history because a broker was slow.
//!
//! Owns only that resolution; the rebalance itself belongs to [`super::kafka`].

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// How long each broker lookup may take (the callback holds the consumer meanwhile).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets, in `assignment`, the start offset of each partition without a committed offset to
/// the first message at or after `now_ms - lookback`.
pub(super) fn look_back<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assignment: &mut TopicPartitionList,
    lookback: Duration,
    now_ms: i64,
) {
    let committed = match consumer.committed_offsets(assignment.clone(), LOOKUP_TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the group's committed offsets at assignment; partitions without one start at the latest offset instead of the kafka.start_from lookback");
            return;
        }
    };
    let since = now_ms.saturating_sub(lookback.as_millis() as i64);
    let mut times = TopicPartitionList::new();
    for e in committed.elements() {
        if matches!(e.offset(), Offset::Invalid) {
            // offsets-for-times takes the timestamp in the offset field.
            let _ = times.add_partition_offset(e.topic(), e.partition(), Offset::Offset(since));
        }
    }
    if times.count() == 0 {
        return;
    }
    let found = match consumer.offsets_for_times(times, LOOKUP_TIMEOUT) {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "cannot look up where the kafka.start_from lookback starts; partitions without a committed offset start at the latest offset");
            return;
        }
    };
    for e in found.elements() {
        let offset = match (e.error(), e.offset()) {
            (Ok(()), Offset::Offset(o)) => Offset::Offset(o),
            // No message that recent: start at the end.
            (Ok(()), Offset::End) => Offset::End,
            (result, other) => {
                tracing::error!(partition = e.partition(), offset = ?other, error = ?result.err(), "the kafka.start_from lookback did not resolve for this partition; it starts at the latest offset");
                continue;
            }
        };
        tracing::info!(
            partition = e.partition(),
            offset = ?offset,
            lookback = %humantime::format_duration(lookback),
            "no committed offset: starting at the first message of the lookback"
        );
        let _ = assignment.set_partition_offset(e.topic(), e.partition(), offset);
    }
}
