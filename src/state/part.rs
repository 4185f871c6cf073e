//! Cohort state taken out of, and put back into, a [`CohortTable`] a Kafka partition at a time.
//!
//! Owns the serialised form of cohorts in a state snapshot (`crate::persist` frames, checksums
//! and stores it) and the checks a restored cohort must pass before the hot path touches it:
//! the table indexes rings and bins by position, so a cohort of another shape (another window
//! or metric configuration, or a damaged file that passed its checksum) would panic there.
//! Pure: no I/O. The overflow cohort is never exported: it mixes deployments of every
//! partition, so no one partition owns it.

use serde::{Deserialize, Serialize};

use super::{Cohort, CohortKey, CohortTable, MetricKind, OVERFLOW_DEPLOYMENT};

/// The cohorts of one partition, in table order, and the partition's event-time clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CohortsPart {
    cohorts: Vec<Cohort>,
    watermark_ms: Option<i64>,
}

impl CohortsPart {
    /// Number of cohorts.
    pub fn len(&self) -> usize {
        self.cohorts.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.cohorts.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &CohortKey> {
        self.cohorts.iter().map(|c| &c.key)
    }
}

/// Why saved cohorts cannot be put back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartError {
    /// A cohort does not have this config's shape.
    #[error(
        "saved cohort {index} does not fit this config ({what}): the snapshot was written under another window, metric or segment configuration"
    )]
    Shape {
        /// Position in the saved part.
        index: usize,
        /// What differs.
        what: &'static str,
    },
    /// The table already holds the overflow cohort.
    #[error(
        "the cohort table is full (cohorts.max_cohorts reached): saved cohorts cannot be added"
    )]
    TableFull,
}

impl CohortTable {
    /// The cohorts read from `partition`, overflow excepted, cloned in table order, with their
    /// table indices.
    pub fn export(&self, partition: i32) -> (CohortsPart, Vec<usize>) {
        let mut indices = Vec::new();
        let cohorts = self
            .cohorts
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                Some(*i) != self.overflow && c.partition == partition && !is_overflow(&c.key)
            })
            .map(|(i, c)| {
                indices.push(i);
                c.clone()
            })
            .collect();
        (
            CohortsPart {
                cohorts,
                watermark_ms: self.watermarks.get(partition),
            },
            indices,
        )
    }

    /// Checks that every saved cohort has this table's shape. Each cohort's window columns
    /// are first fitted to the metrics' kinds, which loses nothing (a snapshot stores every
    /// window as sums, and an empty score window reads back as a count).
    pub fn check(&self, part: &mut CohortsPart) -> Result<(), PartError> {
        let g = &self.geometry;
        let flags = self.flags();
        for (index, c) in part.cohorts.iter_mut().enumerate() {
            let shape = |what| Err(PartError::Shape { index, what });
            if c.key.segment.len() != self.segment_keys.len() {
                return shape("segment keys");
            }
            if c.metrics.len() != self.specs.len() {
                return shape("metrics");
            }
            if !c.windows.conform(&flags) {
                return shape("window values");
            }
            if !c.windows.fits(g.bucket_ms, g.buckets, &flags) {
                return shape("window buckets");
            }
            for (spec, m) in self.specs.iter().zip(&c.metrics) {
                let dist_ok = match (spec.kind, spec.range, &m.distribution) {
                    (MetricKind::Score, Some([lo, hi]), Some(d)) => {
                        d.fits(g.slab_ms, g.slabs, |b| b.fits(lo, hi, g.bins))
                    }
                    (MetricKind::Score, Some(_), None) => false,
                    (_, _, None) => true,
                    (_, _, Some(_)) => false,
                };
                if !dist_ok {
                    return shape("distribution bins");
                }
            }
        }
        Ok(())
    }

    /// Adds the saved cohorts of `partition` after [`CohortTable::check`]; returns, per saved
    /// cohort, its new table index, or `None` when a cohort of that key is already in the
    /// table (kept as it is: it has seen events since). The partition's clock becomes the later
    /// of the two.
    pub fn import(
        &mut self,
        partition: i32,
        mut part: CohortsPart,
    ) -> Result<Vec<Option<usize>>, PartError> {
        self.check(&mut part)?;
        if self.overflow.is_some() && !part.is_empty() {
            return Err(PartError::TableFull);
        }
        if let Some(w) = part.watermark_ms {
            self.watermarks.restore(partition, w);
        }
        Ok(part
            .cohorts
            .into_iter()
            .map(|mut c| {
                c.partition = partition;
                if self.index.contains_key(&c.key) {
                    return None;
                }
                self.index.insert(c.key.clone(), self.cohorts.len());
                self.cohorts.push(c);
                Some(self.cohorts.len() - 1)
            })
            .collect())
    }
}

fn is_overflow(key: &CohortKey) -> bool {
    key.deployment == OVERFLOW_DEPLOYMENT
}

#[cfg(test)]
mod tests;
