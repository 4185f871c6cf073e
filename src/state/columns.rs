//! A cohort's rolling windows: one ring of event-time buckets shared by all its metrics, with a
//! column of sums per metric.
//!
//! Every event of a cohort carries every metric, so separate rings per metric would hold the
//! same bucket numbers and the same counts in each: here they are held once, and a metric keeps
//! only its sums — a whole count for a 0/1 metric (rate or tail, whose sum of squares is its
//! sum), a sum and a sum of squares for a score. With the default windows and metrics that is
//! about 14 KiB per cohort where four rings of [`Moments`] took 46 KiB.
//!
//! A window folded from the columns is the [`Moments`] the rings gave, bit for bit: whole
//! counts are exact in `f64`, and score sums add in the same bucket order. The serialised form
//! (snapshot format 4) is still one `Ring<Moments>` per metric, so snapshots written before
//! this layout restore into it ([`Columns::from_rings`]). Pure data: no clock, no I/O.

use super::window::{Landing, Mergeable, Moments, Ring};

/// The sums of one metric, per bucket.
#[derive(Debug, Clone, PartialEq)]
enum Column {
    /// A 0/1 metric: how many of the bucket's events were 1.
    Flags(Box<[u32]>),
    /// A score: the sum and the sum of squares of the bucket's values.
    Scores(Box<[[f64; 2]]>),
}

impl Column {
    fn new(flags: bool, len: usize) -> Column {
        match flags {
            true => Column::Flags(vec![0; len].into_boxed_slice()),
            false => Column::Scores(vec![[0.0; 2]; len].into_boxed_slice()),
        }
    }

    fn is_flags(&self) -> bool {
        matches!(self, Column::Flags(_))
    }

    fn clear(&mut self, slot: usize) {
        match self {
            Column::Flags(k) => k[slot] = 0,
            Column::Scores(s) => s[slot] = [0.0; 2],
        }
    }

    fn push(&mut self, slot: usize, x: f64) {
        match self {
            Column::Flags(k) => {
                debug_assert!(x == 0.0 || x == 1.0, "a 0/1 metric got {x}");
                k[slot] = k[slot].saturating_add(u32::from(x == 1.0));
            }
            Column::Scores(s) => {
                s[slot][0] += x;
                s[slot][1] += x * x;
            }
        }
    }

    /// The sum and sum of squares of `slot`.
    fn sums(&self, slot: usize) -> (f64, f64) {
        match self {
            Column::Flags(k) => (f64::from(k[slot]), f64::from(k[slot])),
            Column::Scores(s) => (s[slot][0], s[slot][1]),
        }
    }
}

/// The rolling windows of one cohort: `len` buckets of `width_ms` event-time milliseconds, a
/// count per bucket and a column of sums per metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    width_ms: i64,
    /// Bucket number (event time / width) each slot holds; `i64::MIN` = never used.
    ids: Box<[i64]>,
    /// Events per bucket: exact up to 4,294,967,295 in one bucket of one cohort.
    n: Box<[u32]>,
    columns: Box<[Column]>,
}

/// Why saved rings cannot become columns (the snapshot is refused as undecodable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ColumnsError {
    /// A cohort without metrics: a snapshot never holds one.
    #[error("a cohort has no metric windows")]
    Empty,
    /// The metrics' rings do not share one bucket clock, which one cohort's never differ on.
    #[error("a cohort's metric windows disagree on their buckets or counts")]
    Disagree,
    /// A bucket holds more events than a column counts.
    #[error("a window bucket holds more than 4,294,967,295 events")]
    TooMany,
}

impl Columns {
    /// Empty windows of `len` buckets of `width_ms`, one column per entry of `flags` (true for
    /// a 0/1 metric).
    pub fn new(width_ms: i64, len: usize, flags: impl IntoIterator<Item = bool>) -> Columns {
        assert!(
            width_ms > 0 && len > 0,
            "window geometry is validated by config"
        );
        Columns {
            width_ms,
            ids: vec![i64::MIN; len].into_boxed_slice(),
            n: vec![0; len].into_boxed_slice(),
            columns: flags.into_iter().map(|f| Column::new(f, len)).collect(),
        }
    }

    /// Adds one event at `t_ms` with one value per column (0.0 or 1.0 for a 0/1 metric).
    pub fn push(&mut self, t_ms: i64, values: &[f64]) -> Landing {
        debug_assert_eq!(values.len(), self.columns.len());
        let id = t_ms.div_euclid(self.width_ms);
        let slot = id.rem_euclid(self.ids.len() as i64) as usize;
        let held = self.ids[slot];
        if held > id {
            return Landing::TooOld;
        }
        if held < id {
            self.ids[slot] = id;
            self.n[slot] = 0;
            for c in self.columns.iter_mut() {
                c.clear(slot);
            }
        }
        self.n[slot] = self.n[slot].saturating_add(1);
        for (c, &x) in self.columns.iter_mut().zip(values) {
            c.push(slot, x);
        }
        Landing::Added
    }

    /// Column `column`'s moments over the `buckets` most recent buckets ending with the one
    /// holding `now_ms`.
    pub fn fold_last(&self, now_ms: i64, buckets: usize, column: usize) -> Moments {
        let newest = now_ms.div_euclid(self.width_ms);
        let oldest = newest - buckets.min(self.ids.len()) as i64 + 1;
        let c = &self.columns[column];
        let mut m = Moments::default();
        for (slot, id) in self.ids.iter().enumerate() {
            if (oldest..=newest).contains(id) {
                let (sum, sumsq) = c.sums(slot);
                m.merge(&Moments {
                    n: u64::from(self.n[slot]),
                    sum,
                    sumsq,
                });
            }
        }
        m
    }

    /// True when these are `len` buckets of `width_ms` with one column per entry of `flags`,
    /// each of that kind: what windows read back from a snapshot must satisfy before the hot
    /// path indexes them.
    pub fn fits(&self, width_ms: i64, len: usize, flags: &[bool]) -> bool {
        self.width_ms == width_ms
            && self.ids.len() == len
            && self.n.len() == len
            && self.columns.len() == flags.len()
            && self.columns.iter().zip(flags).all(|(c, &f)| {
                c.is_flags() == f
                    && match c {
                        Column::Flags(k) => k.len() == len,
                        Column::Scores(s) => s.len() == len,
                    }
            })
    }

    /// Turns the columns into the kinds `flags` asks for, where that loses nothing: a count
    /// always becomes sums; sums become a count only when every bucket's values were 0 or 1.
    /// False (nothing changed) when one cannot.
    pub fn conform(&mut self, flags: &[bool]) -> bool {
        if flags.len() != self.columns.len() {
            return false;
        }
        let mut wanted = Vec::with_capacity(flags.len());
        for (c, &f) in self.columns.iter().zip(flags) {
            match (c, f) {
                (Column::Scores(s), true) => match counts(s, &self.n) {
                    Some(k) => wanted.push(Column::Flags(k)),
                    None => return false,
                },
                (Column::Flags(k), false) => wanted.push(Column::Scores(
                    k.iter().map(|&k| [f64::from(k); 2]).collect(),
                )),
                (c, _) => wanted.push(c.clone()),
            }
        }
        self.columns = wanted.into_boxed_slice();
        true
    }

    /// One ring of moments per column: the serialised form.
    pub fn to_rings(&self) -> Vec<Ring<Moments>> {
        self.columns
            .iter()
            .map(|c| {
                let slots = (0..self.ids.len()).map(|slot| {
                    let (sum, sumsq) = c.sums(slot);
                    Moments {
                        n: u64::from(self.n[slot]),
                        sum,
                        sumsq,
                    }
                });
                Ring::from_parts(self.width_ms, self.ids.clone(), slots.collect())
            })
            .collect()
    }

    /// Columns from one ring of moments per metric, as [`Columns::to_rings`] wrote them (or
    /// every driftd before this layout): a ring whose values were all 0 or 1 becomes a count,
    /// any other sums ([`Columns::conform`] then fits them to the config).
    pub fn from_rings(rings: Vec<Ring<Moments>>) -> Result<Columns, ColumnsError> {
        let (width_ms, ids, first) = rings.first().ok_or(ColumnsError::Empty)?.parts();
        if first.len() != ids.len() {
            return Err(ColumnsError::Disagree);
        }
        let n = first
            .iter()
            .map(|m| u32::try_from(m.n).map_err(|_| ColumnsError::TooMany))
            .collect::<Result<Box<[u32]>, _>>()?;
        let mut columns = Vec::with_capacity(rings.len());
        for ring in &rings {
            let (w, i, slots) = ring.parts();
            let counts_differ = slots.iter().zip(&n).any(|(m, &n)| m.n != u64::from(n));
            if w != width_ms || i != ids || slots.len() != n.len() || counts_differ {
                return Err(ColumnsError::Disagree);
            }
            let sums: Box<[[f64; 2]]> = slots.iter().map(|m| [m.sum, m.sumsq]).collect();
            columns.push(match counts(&sums, &n) {
                Some(k) => Column::Flags(k),
                None => Column::Scores(sums),
            });
        }
        Ok(Columns {
            width_ms,
            ids: ids.into(),
            n,
            columns: columns.into_boxed_slice(),
        })
    }
}

/// The per-bucket counts of 1s that `sums` hold, when every bucket's values can only have been
/// 0 or 1 (sum = sum of squares, a whole number no larger than the bucket's events).
fn counts(sums: &[[f64; 2]], n: &[u32]) -> Option<Box<[u32]>> {
    sums.iter()
        .zip(n)
        .map(|(&[sum, sumsq], &n)| {
            let whole = sum == sumsq && sum.fract() == 0.0 && (0.0..=f64::from(n)).contains(&sum);
            whole.then_some(sum as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests;
