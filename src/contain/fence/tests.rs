use super::*;
use crate::contain::latch::Phase;
use crate::detect::Verdict;

fn claim(epoch: u64, writer: &str) -> Claim {
    Claim {
        epoch,
        writer: writer.into(),
    }
}

fn bytes(r: &Record) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

fn latch_record(d: &str, p: i32, c: Option<Claim>, phase: Phase) -> Record {
    Record::Latch {
        deployment: d.into(),
        partition: Some(p),
        claim: c,
        applied: None,
        latch: Box::new(Latch {
            phase,
            ..Latch::default()
        }),
    }
}

fn take(m: &mut Merged, r: &Record) {
    assert!(m.apply(&r.key(), Some(&bytes(r))));
}

#[test]
fn epochs_follow_the_newest_claim_and_the_first_of_an_epoch_wins() {
    assert_eq!(Claim::next(None, "a"), claim(1, "a"));
    assert_eq!(Claim::next(Some(&claim(4, "a")), "b"), claim(5, "b"));
    let mut m = Merged::default();
    for c in [claim(1, "a"), claim(2, "b"), claim(2, "c"), claim(1, "d")] {
        take(
            &mut m,
            &Record::Epoch {
                partition: 0,
                claim: c,
            },
        );
    }
    assert_eq!(
        m.claims[&0],
        claim(2, "b"),
        "higher epochs win, ties by log order"
    );
}

#[test]
fn an_action_runs_only_under_the_newest_claim_on_a_partition_still_held() {
    let (a1, b2) = (claim(1, "a"), claim(2, "b"));
    assert_eq!(check(Some(&a1), Some(&a1), true), Ok(()));
    assert_eq!(check(Some(&a1), Some(&b2), true), Err(FenceReason::Epoch));
    assert_eq!(
        check(Some(&a1), Some(&a1), false),
        Err(FenceReason::NotOwner)
    );
    assert_eq!(check(None, Some(&a1), true), Err(FenceReason::Epoch));
    assert_eq!(check(Some(&a1), None, true), Err(FenceReason::Epoch));
    // The same epoch claimed by two replicas: only the recorded one may act.
    assert_eq!(
        check(Some(&claim(2, "c")), Some(&b2), true),
        Err(FenceReason::Epoch)
    );
}

#[test]
fn a_zombie_latch_write_after_a_newer_claim_is_ignored_by_the_merge() {
    let mut m = Merged::default();
    take(
        &mut m,
        &Record::Epoch {
            partition: 1,
            claim: claim(1, "a"),
        },
    );
    take(
        &mut m,
        &latch_record("svc", 1, Some(claim(1, "a")), Phase::Healthy),
    );
    take(
        &mut m,
        &Record::Epoch {
            partition: 1,
            claim: claim(2, "b"),
        },
    );
    take(
        &mut m,
        &latch_record("svc", 1, Some(claim(2, "b")), Phase::Contained),
    );
    // The old owner wakes and writes under its old claim: not merged.
    take(
        &mut m,
        &latch_record("svc", 1, Some(claim(1, "a")), Phase::Released),
    );
    assert_eq!(m.latches["svc"].latch.phase, Phase::Contained);
    assert_eq!(m.fenced_writes, 1);
    assert_eq!(m.view()["svc"].phase, Phase::Contained);
    // Another deployment of an unclaimed partition merges as written.
    take(&mut m, &latch_record("other", 2, None, Phase::Suspect));
    assert_eq!(m.view()["other"].phase, Phase::Suspect);
    assert!(
        !m.apply("latch/x", Some(b"{not json")),
        "undecodable records are skipped"
    );
}

#[test]
fn a_request_is_pending_until_its_tombstone_or_the_latch_that_applied_it() {
    let request = Request::Release {
        deployment: "svc".into(),
        by: Requester::approver("ana"),
        reason: "false alarm".into(),
    };
    let wire = WireRequest::of(&request);
    assert_eq!(format!("{:?}", wire.request()), format!("{request:?}"));
    let mut m = Merged::default();
    let r = |id: &str| Record::Request {
        id: id.into(),
        partition: Some(0),
        request: wire.clone(),
    };
    take(&mut m, &r("r1"));
    take(&mut m, &r("r2"));
    assert_eq!(m.requests.len(), 2);
    assert!(m.apply(&request_key("r1"), None));
    take(
        &mut m,
        &Record::Latch {
            deployment: "svc".into(),
            partition: Some(0),
            claim: None,
            applied: Some("r2".into()),
            latch: Box::default(),
        },
    );
    assert!(m.requests.is_empty());
    // Read again from the beginning (a new owner), an applied request is not applied twice.
    take(&mut m, &r("r1"));
    assert!(m.requests.is_empty());
}

#[test]
fn ownership_tracks_assignment_and_where_deployments_were_seen() {
    let o = Ownership::default();
    let g = o.generation();
    o.assign(&[0, 1]);
    o.seen("svc", 1);
    assert!(o.holds(1) && o.generation() > g);
    assert_eq!(o.partition_of("svc"), Some(1));
    o.revoke(&[1]);
    assert!(!o.holds(1));
    assert_eq!(o.assigned(), BTreeSet::from([0]));
}

fn view_record(d: &str, c: Claim, made_at_ms: i64, canary: &str) -> Record {
    Record::View {
        deployment: d.into(),
        partition: 1,
        claim: c,
        made_at_ms,
        view: Box::new(DeploymentView {
            metrics: vec![],
            ..DeploymentView::of(Verdict {
                deployment: d.into(),
                model_version: canary.into(),
                ..Verdict::example()
            })
        }),
    }
}

#[test]
fn views_merge_as_latches_do_the_newest_claim_wins_and_a_zombies_view_is_ignored() {
    let canary = |m: &Merged| m.views["svc"].view.canary_version.clone().unwrap();
    let mut m = Merged::default();
    let epoch = |c: Claim| Record::Epoch {
        partition: 1,
        claim: c,
    };
    take(&mut m, &epoch(claim(1, "a")));
    let first = view_record("svc", claim(1, "a"), 1_000, "v1");
    assert_eq!(first.key(), "view/svc");
    assert_eq!(first.partition(), Some(1));
    take(&mut m, &first);
    take(&mut m, &view_record("other", claim(1, "a"), 1_000, "v1"));
    assert_eq!(
        (canary(&m), m.views["svc"].made_at_ms),
        ("v1".into(), 1_000)
    );
    take(&mut m, &view_record("svc", claim(1, "a"), 2_000, "v2"));
    // A producer retry landing the owner's older view after its newer one changes nothing.
    take(&mut m, &view_record("svc", claim(1, "a"), 1_500, "v1"));
    assert_eq!(canary(&m), "v2");
    // A new owner claims the partition and shares its view; the old one's late view is
    // ignored however new its clock says it is.
    take(&mut m, &epoch(claim(2, "b")));
    take(&mut m, &view_record("svc", claim(2, "b"), 3_000, "v3"));
    take(&mut m, &view_record("svc", claim(1, "a"), 9_000, "zombie"));
    assert_eq!(canary(&m), "v3");
    assert_eq!(m.views["svc"].claim, claim(2, "b"));
    assert_eq!(m.fenced_writes, 1);
    // The old owner's view stays shown until the new owner shares one.
    assert_eq!(m.views["other"].view.canary_version.as_deref(), Some("v1"));
}
