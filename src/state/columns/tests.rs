use proptest::prelude::*;

use super::*;

const WIDTH: i64 = 10_000;
const LEN: usize = 6;

/// One ring of moments per metric, filled the way every driftd before [`Columns`] filled them.
fn rings(events: &[(i64, [f64; 3])]) -> Vec<Ring<Moments>> {
    let mut rings = vec![Ring::new(WIDTH, LEN, Moments::default()); 3];
    for (t, values) in events {
        for (ring, &x) in rings.iter_mut().zip(values) {
            ring.with_bucket(*t, |m| m.push(x));
        }
    }
    rings
}

fn columns(events: &[(i64, [f64; 3])]) -> Columns {
    let mut c = Columns::new(WIDTH, LEN, [true, false, true]);
    for (t, values) in events {
        c.push(*t, values);
    }
    c
}

fn fold(ring: &Ring<Moments>, now: i64, buckets: usize) -> Moments {
    let mut m = Moments::default();
    ring.fold_last(now, buckets, &mut m);
    m
}

#[test]
fn a_window_holds_counts_for_flags_and_sums_for_scores() {
    let c = columns(&[
        (0, [1.0, 0.5, 0.0]),
        (9_999, [0.0, -0.25, 1.0]),
        (10_000, [1.0, 1.0, 1.0]),
        (55_000, [1.0, 0.75, 0.0]),
    ]);
    assert_eq!(
        c.fold_last(55_000, 6, 0),
        Moments {
            n: 4,
            sum: 3.0,
            sumsq: 3.0
        }
    );
    assert_eq!(
        c.fold_last(55_000, 6, 1),
        Moments {
            n: 4,
            sum: 2.0,
            sumsq: 0.25 + 0.0625 + 1.0 + 0.5625
        }
    );
    assert_eq!(c.fold_last(55_000, 2, 2).n, 1, "only the bucket of 55 s");
    assert_eq!(c.fold_last(55_000, 2, 2).sum, 0.0);
}

#[test]
fn a_bucket_a_whole_span_later_replaces_the_old_one_and_older_events_are_refused() {
    let mut c = Columns::new(WIDTH, LEN, [true, false]);
    assert_eq!(c.push(0, &[1.0, 0.5]), Landing::Added);
    assert_eq!(c.push(60_000, &[0.0, 0.25]), Landing::Added);
    assert_eq!(c.push(5_000, &[1.0, 1.0]), Landing::TooOld);
    let m = c.fold_last(60_000, 6, 1);
    assert_eq!((m.n, m.sum), (1, 0.25));
    assert_eq!(c.fold_last(60_000, 6, 0).sum, 0.0);
}

#[test]
fn rings_that_disagree_on_their_buckets_are_refused() {
    let mut rs = rings(&[(0, [1.0, 0.5, 0.0])]);
    rs[1].with_bucket(20_000, |m| m.push(0.5));
    assert_eq!(Columns::from_rings(rs), Err(ColumnsError::Disagree));
    assert_eq!(Columns::from_rings(vec![]), Err(ColumnsError::Empty));
    let mut counts = rings(&[(0, [1.0, 0.5, 0.0])]);
    counts[2].with_bucket(0, |m| m.push(1.0));
    assert_eq!(Columns::from_rings(counts), Err(ColumnsError::Disagree));
}

#[test]
fn sums_become_a_count_only_when_every_value_was_zero_or_one() {
    // An empty score window reads back as a count and is fitted back to sums.
    let mut empty = Columns::from_rings(rings(&[])).unwrap();
    assert!(!empty.fits(WIDTH, LEN, &[true, false, true]));
    assert!(empty.conform(&[true, false, true]));
    assert_eq!(empty, columns(&[]));
    // A score window with a value other than 0 or 1 cannot hold a count.
    let mut scores = Columns::from_rings(rings(&[(0, [1.0, 0.5, 0.0])])).unwrap();
    assert!(!scores.conform(&[true, true, true]));
    assert!(scores.conform(&[true, false, true]));
    assert!(scores.fits(WIDTH, LEN, &[true, false, true]));
    assert!(!scores.fits(WIDTH, LEN + 1, &[true, false, true]));
    assert!(!scores.fits(WIDTH, LEN, &[true, false]));
}

fn arb_events() -> impl Strategy<Value = Vec<(i64, [f64; 3])>> {
    let event = (0i64..200_000, 0u8..2, -1.0f64..1.0, 0u8..2)
        .prop_map(|(t, a, x, b)| (t, [f64::from(a), x, f64::from(b)]));
    proptest::collection::vec(event, 0..300)
}

proptest! {
    /// Columns fold to the moments one ring per metric gave, bit for bit, for any window.
    #[test]
    fn columns_fold_exactly_as_rings_do(
        events in arb_events(),
        now in 0i64..220_000,
        buckets in 1usize..=LEN,
    ) {
        let (c, rs) = (columns(&events), rings(&events));
        for (column, ring) in rs.iter().enumerate() {
            prop_assert_eq!(c.fold_last(now, buckets, column), fold(ring, now, buckets));
        }
    }

    /// Rings written from columns, or by a driftd before them, read back as the same columns.
    #[test]
    fn rings_round_trip(events in arb_events()) {
        let c = columns(&events);
        let written = c.to_rings();
        for (w, r) in written.iter().zip(rings(&events)) {
            prop_assert_eq!(w.parts().1, r.parts().1);
            prop_assert_eq!(w.parts().2, r.parts().2);
        }
        let mut read = Columns::from_rings(written).unwrap();
        prop_assert!(read.conform(&[true, false, true]));
        prop_assert_eq!(&read, &c);
        let mut legacy = Columns::from_rings(rings(&events)).unwrap();
        prop_assert!(legacy.conform(&[true, false, true]));
        prop_assert_eq!(legacy, c);
    }
}
