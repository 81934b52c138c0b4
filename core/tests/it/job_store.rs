//! The job store: PostgreSQL and SQLite held to the same tests (each test body runs against a
//! fresh database of each backend).

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use medinform_core::db::{Claim, DbError, JobStore, NewJob, Republish};
use medinform_core::job::{
    ClassProbability, FailureCode, Heatmap, Job, JobFailure, JobId, JobStatus, Priority,
    ScreeningResult,
};
use medinform_core::registry::Stage;

use crate::support::{TestJobStore, new_job};

const LEASE: Duration = Duration::from_secs(60);

macro_rules! each_job_store {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::TestJobStore::postgres().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::TestJobStore::sqlite().await).await;
                }
            )*
        }
    };
}

each_job_store!(
    migrate_is_idempotent,
    insert_and_get_round_trip_every_field,
    mark_published_leaves_only_unconfirmed_jobs_due,
    concurrent_publish_records_are_each_committed,
    claim_takes_a_queued_job_once,
    claim_of_a_finished_job_answers_finished,
    claim_of_an_unknown_job_answers_missing,
    a_lease_that_ran_out_can_be_claimed_again,
    a_lease_of_any_length_is_accepted,
    a_stale_attempt_cannot_overwrite_and_the_result_is_written_once,
    fail_is_final,
    release_hands_the_job_back_with_its_error,
    reclaim_expired_takes_back_jobs_whose_lease_passed,
    due_for_publish_finds_unconfirmed_and_stale_queued_jobs,
    concurrent_claims_of_one_job_have_one_winner,
    a_submission_key_creates_one_job,
    errors_say_whether_to_retry_refuse_or_investigate,
    a_refused_write_among_concurrent_writes_fails_alone,
    a_batch_claim_answers_each_job_as_its_own_claim_would,
    a_batch_of_results_is_written_once_each_under_its_own_attempt,
    the_backlog_is_counted_per_model_with_its_oldest_job,
);

fn result() -> ScreeningResult {
    ScreeningResult {
        label: "Parasitized".into(),
        probabilities: vec![
            ClassProbability {
                label: "Parasitized".into(),
                probability: 0.875,
            },
            ClassProbability {
                label: "Uninfected".into(),
                probability: 0.125,
            },
        ],
        finding: "Parasitized".into(),
        finding_probability: 0.875,
        threshold: 0.5,
        positive: true,
        stage: Some(Stage::Screening),
        heatmap: Some(Heatmap {
            width: 2,
            height: 1,
            values: vec![-0.25, 1.5],
        }),
    }
}

fn failure(code: &str) -> JobFailure {
    JobFailure {
        code: FailureCode::parse(code),
        message: format!("{code} happened"),
    }
}

async fn get(store: &dyn JobStore, id: JobId) -> Job {
    store.get(id).await.unwrap().expect("the job exists")
}

async fn claimed(store: &dyn JobStore, id: JobId, take_over: bool) -> Job {
    match store.claim(id, LEASE, take_over).await.unwrap() {
        Claim::Claimed(job) => job,
        other => panic!("expected Claimed, got {other:?}"),
    }
}

/// Times are stored to the millisecond (SQLite) or microsecond (PostgreSQL).
fn assert_recent(t: chrono::DateTime<Utc>) {
    let age = Utc::now() - t;
    assert!(
        age > TimeDelta::seconds(-5) && age < TimeDelta::seconds(30),
        "{t} is not recent"
    );
}

async fn migrate_is_idempotent(db: TestJobStore) {
    let store = &*db.store;
    let job = store.insert(&new_job("malaria")).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        get(store, job.id).await,
        job,
        "migrating again kept the data"
    );
    store.check().await.unwrap();
}

async fn insert_and_get_round_trip_every_field(db: TestJobStore) {
    let store = &*db.store;
    let new = new_job("malaria");
    let inserted = store.insert(&new).await.unwrap();
    assert_eq!(inserted.id, new.id);
    assert_eq!(inserted.model, "malaria");
    assert_eq!(inserted.model_version, new.model_version);
    assert_eq!(inserted.status, JobStatus::Queued);
    assert_eq!(inserted.image_key, new.image_key);
    assert_eq!(inserted.image_sha256, new.image_sha256);
    assert_eq!(inserted.image_content_type, "image/png");
    assert_eq!(inserted.image_bytes, 12_345);
    assert_eq!(
        inserted.client_reference.as_deref(),
        Some("ward-7/patient-42")
    );
    assert_eq!(inserted.attempts, 0);
    assert_recent(inserted.created_at);
    assert_eq!(inserted.updated_at, inserted.created_at);
    assert_eq!(
        (inserted.started_at, inserted.finished_at),
        (None, None),
        "not started"
    );
    assert_eq!(inserted.result, None);
    assert_eq!(inserted.error, None);
    assert_eq!(
        get(store, new.id).await,
        inserted,
        "get returns what insert did"
    );
    assert_eq!(inserted.priority, Priority::Interactive);
    let bulk = store
        .insert(&NewJob {
            priority: Priority::Bulk,
            ..new_job("malaria")
        })
        .await
        .unwrap();
    assert_eq!(get(store, bulk.id).await.priority, Priority::Bulk);

    // A DICOM image's study identifiers are kept as recorded (and absent for other images).
    assert_eq!(inserted.dicom, None);
    let study = medinform_core::imaging::DicomAttributes {
        study_instance_uid: Some("1.2.826.0.1.3680043.8.498.1".to_owned()),
        series_instance_uid: Some("1.2.826.0.1.3680043.8.498.2".to_owned()),
        sop_instance_uid: Some("1.2.826.0.1.3680043.8.498.3".to_owned()),
        sop_class_uid: Some("1.2.840.10008.5.1.4.1.1.1.1".to_owned()),
        accession_number: Some("ACC-0042".to_owned()),
        modality: Some("DX".to_owned()),
        body_part_examined: Some("CHEST".to_owned()),
        study_date: Some("2026-12-01".to_owned()),
        patient_id: None,
        patient_pseudonym: Some("9f86d081884c7d65".to_owned()),
    };
    let from_dicom = store
        .insert(&NewJob {
            dicom: Some(study.clone()),
            ..new_job("tuberculosis")
        })
        .await
        .unwrap();
    assert_eq!(from_dicom.dicom.as_ref(), Some(&study));
    assert_eq!(get(store, from_dicom.id).await, from_dicom);

    let mut anonymous = new_job("tuberculosis");
    anonymous.client_reference = None;
    let inserted = store.insert(&anonymous).await.unwrap();
    assert_eq!(get(store, anonymous.id).await, inserted);
    assert_eq!(inserted.client_reference, None);

    assert_eq!(store.get(JobId::new()).await.unwrap(), None);
    assert!(
        store.insert(&new).await.is_err(),
        "a second job with the same id is refused"
    );

    // Through a whole life, every timestamp is kept.
    let job = claimed(store, new.id, false).await;
    assert!(
        store
            .succeed(job.id, job.attempts, &result())
            .await
            .unwrap()
    );
    let done = get(store, new.id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(result()));
    assert_eq!(done.created_at, job.created_at);
    assert_eq!(done.started_at, job.started_at);
    let (started, finished) = (done.started_at.unwrap(), done.finished_at.unwrap());
    assert!(done.created_at <= started && started <= finished);
    assert_eq!(done.updated_at, finished);
}

async fn mark_published_leaves_only_unconfirmed_jobs_due(db: TestJobStore) {
    let store = &*db.store;
    let confirmed = store.insert(&new_job("malaria")).await.unwrap();
    let unconfirmed = store.insert(&new_job("malaria")).await.unwrap();
    store.mark_published(confirmed.id).await.unwrap();
    store.mark_published(JobId::new()).await.unwrap(); // unknown: no error

    let soon = Utc::now() + TimeDelta::seconds(1);
    let hour_ago = Utc::now() - TimeDelta::hours(1);
    let due = store.due_for_publish(soon, hour_ago, 100).await.unwrap();
    assert_eq!(
        due,
        vec![Republish {
            id: unconfirmed.id,
            model: "malaria".into(),
            priority: Priority::Interactive,
        }]
    );
    // Marking does not change what a client sees of the job.
    let after = get(store, confirmed.id).await;
    assert_eq!(after.status, JobStatus::Queued);
    assert_eq!(after.attempts, 0);
}

/// Many publishes recorded at once (SQLite gathers them into shared statements): each call
/// returns once its own record is committed, and none is lost.
async fn concurrent_publish_records_are_each_committed(db: TestJobStore) {
    let store = db.store.clone();
    let mut jobs = Vec::new();
    for _ in 0..40 {
        jobs.push(store.insert(&new_job("malaria")).await.unwrap().id);
    }
    let marked = jobs.iter().take(30).map(|&id| {
        let store = store.clone();
        tokio::spawn(async move { store.mark_published(id).await })
    });
    for done in futures::future::join_all(marked).await {
        done.unwrap().unwrap();
    }
    let soon = Utc::now() + TimeDelta::seconds(1);
    let hour_ago = Utc::now() - TimeDelta::hours(1);
    let mut due: Vec<String> = store
        .due_for_publish(soon, hour_ago, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    due.sort();
    let mut unmarked: Vec<String> = jobs[30..].iter().map(JobId::to_string).collect();
    unmarked.sort();
    assert_eq!(due, unmarked);
}

async fn claim_takes_a_queued_job_once(db: TestJobStore) {
    let store = &*db.store;
    let id = store.insert(&new_job("malaria")).await.unwrap().id;
    let job = claimed(store, id, false).await;
    assert_eq!(job.status, JobStatus::Processing);
    assert_eq!(job.attempts, 1);
    assert_recent(job.started_at.expect("started"));
    assert_eq!(get(store, id).await, job);

    assert_eq!(store.claim(id, LEASE, false).await.unwrap(), Claim::Busy);

    // A redelivered message takes the job over from its previous holder, and a new attempt
    // begins (the first stays the time the job started).
    let again = claimed(store, id, true).await;
    assert_eq!(again.attempts, 2);
    assert_eq!(again.started_at, job.started_at);
    assert_eq!(store.claim(id, LEASE, false).await.unwrap(), Claim::Busy);
}

async fn claim_of_a_finished_job_answers_finished(db: TestJobStore) {
    let store = &*db.store;
    let good = store.insert(&new_job("malaria")).await.unwrap().id;
    let job = claimed(store, good, false).await;
    assert!(store.succeed(good, job.attempts, &result()).await.unwrap());
    for take_over in [false, true] {
        match store.claim(good, LEASE, take_over).await.unwrap() {
            Claim::Finished(job) => {
                assert_eq!(job.status, JobStatus::Succeeded);
                assert_eq!(job.result, Some(result()));
                assert_eq!(job.attempts, 1, "no new attempt");
            }
            other => panic!("expected Finished, got {other:?}"),
        }
    }

    let bad = store.insert(&new_job("malaria")).await.unwrap().id;
    let job = claimed(store, bad, false).await;
    assert!(
        store
            .fail(bad, job.attempts, &failure("image_unreadable"))
            .await
            .unwrap()
    );
    for take_over in [false, true] {
        match store.claim(bad, LEASE, take_over).await.unwrap() {
            Claim::Finished(job) => {
                assert_eq!(job.status, JobStatus::Failed);
                assert_eq!(job.error, Some(failure("image_unreadable")));
            }
            other => panic!("expected Finished, got {other:?}"),
        }
    }
}

async fn claim_of_an_unknown_job_answers_missing(db: TestJobStore) {
    let store = &*db.store;
    for take_over in [false, true] {
        assert_eq!(
            store.claim(JobId::new(), LEASE, take_over).await.unwrap(),
            Claim::Missing
        );
    }
}

async fn a_lease_that_ran_out_can_be_claimed_again(db: TestJobStore) {
    let store = &*db.store;
    let id = store.insert(&new_job("malaria")).await.unwrap().id;
    let first = match store
        .claim(id, Duration::from_millis(1), false)
        .await
        .unwrap()
    {
        Claim::Claimed(job) => job,
        other => panic!("expected Claimed, got {other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = claimed(store, id, false).await;
    assert_eq!(second.attempts, first.attempts + 1);
    assert!(
        !store.succeed(id, first.attempts, &result()).await.unwrap(),
        "the first holder lost the job when its lease ran out"
    );
    assert!(store.succeed(id, second.attempts, &result()).await.unwrap());
}

/// Leases come from the setting `jobs.lease_secs`; an odd value must not make every claim
/// fail (PostgreSQL intervals hold whole microseconds and about 292 years) or panic (SQLite).
async fn a_lease_of_any_length_is_accepted(db: TestJobStore) {
    let store = &*db.store;
    let long = store.insert(&new_job("malaria")).await.unwrap().id;
    for lease in [
        Duration::from_secs(u64::MAX),
        Duration::from_secs(400 * 365 * 86_400),
    ] {
        let claim = store.claim(long, lease, true).await;
        assert!(
            matches!(claim, Ok(Claim::Claimed(_))),
            "lease {lease:?}: {claim:?}"
        );
        assert_eq!(store.claim(long, LEASE, false).await.unwrap(), Claim::Busy);
        assert_eq!(
            store
                .reclaim_expired(Some(Utc::now() + TimeDelta::days(365)))
                .await
                .unwrap(),
            0,
            "lease {lease:?} still holds in a year"
        );
    }

    let short = store.insert(&new_job("malaria")).await.unwrap().id;
    let claim = store.claim(short, Duration::from_nanos(1_500), false).await;
    assert!(matches!(claim, Ok(Claim::Claimed(_))), "{claim:?}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(claimed(store, short, false).await.attempts, 2);
}

async fn a_stale_attempt_cannot_overwrite_and_the_result_is_written_once(db: TestJobStore) {
    let store = &*db.store;
    let id = store.insert(&new_job("malaria")).await.unwrap().id;
    let stale = claimed(store, id, false).await.attempts;
    let current = claimed(store, id, true).await.attempts;
    assert_eq!((stale, current), (1, 2));

    let mut other = result();
    other.label = "Uninfected".into();
    other.positive = false;
    assert!(!store.succeed(id, stale, &other).await.unwrap());
    assert!(!store.fail(id, stale, &failure("stale")).await.unwrap());
    assert!(!store.release(id, stale, &failure("stale")).await.unwrap());
    let job = get(store, id).await;
    assert_eq!(
        job.status,
        JobStatus::Processing,
        "the stale attempt changed nothing"
    );
    assert_eq!((job.result, job.error), (None, None));

    assert!(store.succeed(id, current, &result()).await.unwrap());
    let done = get(store, id).await;

    // Once written, the result stays: neither the same attempt again nor a later error
    // replaces it.
    assert!(!store.succeed(id, current, &other).await.unwrap());
    assert!(!store.fail(id, current, &failure("late")).await.unwrap());
    assert!(!store.release(id, current, &failure("late")).await.unwrap());
    assert!(!store.succeed(id, current + 1, &other).await.unwrap());
    assert_eq!(get(store, id).await, done);
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(result()));
    assert_eq!(done.error, None);
    assert_eq!(done.attempts, 2);
}

async fn fail_is_final(db: TestJobStore) {
    let store = &*db.store;
    let id = store.insert(&new_job("malaria")).await.unwrap().id;
    let attempt = claimed(store, id, false).await.attempts;
    assert!(
        store
            .fail(id, attempt, &failure("model_error"))
            .await
            .unwrap()
    );
    let job = get(store, id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error, Some(failure("model_error")));
    assert_eq!(job.result, None);
    assert_recent(job.finished_at.expect("finished"));
    assert!(!store.succeed(id, attempt, &result()).await.unwrap());
    assert_eq!(store.reclaim_expired(None).await.unwrap(), 0);
    assert_eq!(get(store, id).await, job);
}

async fn release_hands_the_job_back_with_its_error(db: TestJobStore) {
    let store = &*db.store;
    let id = store.insert(&new_job("malaria")).await.unwrap().id;
    let attempt = claimed(store, id, false).await.attempts;
    assert!(
        store
            .release(id, attempt, &failure("storage_unavailable"))
            .await
            .unwrap()
    );
    let job = get(store, id).await;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(
        job.error,
        Some(failure("storage_unavailable")),
        "the error is kept"
    );
    assert_eq!(job.finished_at, None);
    assert_eq!(job.attempts, 1);
    assert!(
        !store.succeed(id, attempt, &result()).await.unwrap(),
        "a released attempt cannot finish the job"
    );

    let next = claimed(store, id, false).await;
    assert_eq!(next.attempts, 2);
    assert!(store.succeed(id, next.attempts, &result()).await.unwrap());
    let done = get(store, id).await;
    assert_eq!(
        done.error, None,
        "success clears the error of an earlier attempt"
    );
    assert_eq!(done.result, Some(result()));
}

async fn reclaim_expired_takes_back_jobs_whose_lease_passed(db: TestJobStore) {
    let store = &*db.store;
    let leased = store.insert(&new_job("malaria")).await.unwrap().id;
    let queued = store.insert(&new_job("malaria")).await.unwrap().id;
    let finished = store.insert(&new_job("malaria")).await.unwrap().id;
    store.mark_published(leased).await.unwrap();
    claimed(store, leased, false).await;
    let attempt = claimed(store, finished, false).await.attempts;
    assert!(store.succeed(finished, attempt, &result()).await.unwrap());

    assert_eq!(
        store.reclaim_expired(Some(Utc::now())).await.unwrap(),
        0,
        "lease is live"
    );
    assert_eq!(get(store, leased).await.status, JobStatus::Processing);

    let after_lease = Utc::now() + TimeDelta::seconds(120);
    assert_eq!(store.reclaim_expired(Some(after_lease)).await.unwrap(), 1);
    let job = get(store, leased).await;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(get(store, finished).await.status, JobStatus::Succeeded);
    // Taken back means unconfirmed: it is published again (with the job never published).
    let due: Vec<JobId> = store
        .due_for_publish(
            Utc::now() + TimeDelta::seconds(1),
            Utc::now() - TimeDelta::hours(1),
            10,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(due, vec![leased, queued]);
    assert_eq!(claimed(store, leased, false).await.attempts, 2);

    // `None`: every job in processing, whatever its lease (a single process starting up).
    assert_eq!(store.reclaim_expired(None).await.unwrap(), 1);
    assert_eq!(get(store, leased).await.status, JobStatus::Queued);
}

async fn due_for_publish_finds_unconfirmed_and_stale_queued_jobs(db: TestJobStore) {
    let store = &*db.store;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.insert(&new_job("malaria")).await.unwrap().id);
        // Distinct creation times, so the order is the insertion order on every backend.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unconfirmed = store.insert(&new_job("tuberculosis")).await.unwrap().id;
    let processing = store.insert(&new_job("malaria")).await.unwrap().id;
    claimed(store, processing, false).await;
    for id in &ids {
        store.mark_published(*id).await.unwrap();
    }
    let now = Utc::now() + TimeDelta::milliseconds(10);
    let hour_ago = Utc::now() - TimeDelta::hours(1);
    let long_ago = Utc::now() - TimeDelta::hours(2);
    let due = |u, s, limit| async move {
        store
            .due_for_publish(u, s, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };

    assert_eq!(
        due(long_ago, hour_ago, 100).await,
        vec![],
        "nothing is old enough"
    );
    assert_eq!(due(now, hour_ago, 100).await, vec![unconfirmed]);
    // Confirmed long enough ago (a broker that lost its messages): due again, oldest first.
    let mut all = ids.clone();
    all.push(unconfirmed);
    assert_eq!(due(now, now, 100).await, all);
    assert_eq!(due(now, now, 2).await, ids[..2].to_vec(), "the limit holds");
    assert_eq!(due(long_ago, now, 100).await, ids, "confirmed only");
    let models: Vec<String> = store
        .due_for_publish(now, hour_ago, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.model)
        .collect();
    assert_eq!(models, vec!["tuberculosis".to_owned()]);
}

async fn concurrent_claims_of_one_job_have_one_winner(db: TestJobStore) {
    const CLAIMERS: usize = 8;
    for round in 0..5 {
        let id = db.store.insert(&new_job("malaria")).await.unwrap().id;
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(CLAIMERS));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CLAIMERS {
            let store = db.store.clone();
            let start = start.clone();
            tasks.spawn(async move {
                start.wait().await;
                store.claim(id, LEASE, false).await.unwrap()
            });
        }
        let claims = tasks.join_all().await;
        let winners: Vec<&Job> = claims
            .iter()
            .filter_map(|c| match c {
                Claim::Claimed(job) => Some(job),
                _ => None,
            })
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round} ({:?}): {claims:?}",
            db.kind
        );
        assert_eq!(winners[0].attempts, 1);
        assert!(
            claims
                .iter()
                .all(|c| matches!(c, Claim::Claimed(_) | Claim::Busy)),
            "{claims:?}"
        );
        assert_eq!(get(&*db.store, id).await.attempts, 1);
    }
}

async fn a_submission_key_creates_one_job(db: TestJobStore) {
    let keyed = |key: &str| NewJob {
        submission_key: Some(key.to_owned()),
        ..new_job("malaria")
    };
    let first = db.store.insert(&keyed("k/0")).await.unwrap();
    // The retry of the request that created it draws a new id, and gets the first job back.
    let retry = keyed("k/0");
    assert_ne!(retry.id, first.id);
    assert_eq!(db.store.insert(&retry).await.unwrap(), first);
    assert!(db.store.get(retry.id).await.unwrap().is_none());
    // Another image of the same request, and jobs without a key, are jobs of their own.
    let other = db.store.insert(&keyed("k/1")).await.unwrap();
    assert_ne!(other.id, first.id);
    let a = db.store.insert(&new_job("malaria")).await.unwrap();
    let b = db.store.insert(&new_job("malaria")).await.unwrap();
    assert_ne!(a.id, b.id);

    // Concurrent attempts of one request: one job.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = db.store.clone();
        let job = keyed("k/2");
        tasks.spawn(async move { store.insert(&job).await.unwrap().id });
    }
    let ids: std::collections::HashSet<JobId> = tasks.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

async fn errors_say_whether_to_retry_refuse_or_investigate(db: TestJobStore) {
    let job = new_job("malaria");
    db.store.insert(&job).await.unwrap();
    // The same id again: a constraint refuses it, which is the caller's to answer (409).
    match db.store.insert(&job).await {
        Err(DbError::Conflict { constraint, .. }) => {
            if db.kind == crate::support::StoreKind::Postgres {
                assert_eq!(constraint, "jobs_pkey");
            }
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn a_refused_write_among_concurrent_writes_fails_alone(db: TestJobStore) {
    // Writes arriving together may share a transaction (SQLite commits them as a group): the
    // one a constraint refuses must fail alone, and every other one must be committed.
    let taken = new_job("malaria");
    db.store.insert(&taken).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..64 {
        let store = db.store.clone();
        let job = if n == 31 {
            taken.clone()
        } else {
            new_job("malaria")
        };
        tasks.spawn(async move {
            let inserted = store.insert(&job).await.map(|j| j.id);
            let claimed = match &inserted {
                Ok(id) => Some(store.claim(*id, LEASE, false).await.unwrap()),
                Err(_) => None,
            };
            (n, job.id, inserted, claimed)
        });
    }
    for (n, id, inserted, claimed) in tasks.join_all().await {
        if n == 31 {
            assert!(
                matches!(inserted, Err(DbError::Conflict { .. })),
                "{inserted:?}"
            );
            continue;
        }
        assert_eq!(inserted.unwrap(), id);
        assert!(matches!(claimed, Some(Claim::Claimed(_))), "{claimed:?}");
        assert_eq!(get(&*db.store, id).await.status, JobStatus::Processing);
    }
    assert_eq!(get(&*db.store, taken.id).await.status, JobStatus::Queued);
}

/// A worker claims its whole batch at once; every kind of job a batch can meet gets the answer
/// a claim of its own would give, in the order asked.
async fn a_batch_claim_answers_each_job_as_its_own_claim_would(db: TestJobStore) {
    let store = &*db.store;
    let fresh = store.insert(&new_job("malaria")).await.unwrap().id;
    let held = store.insert(&new_job("malaria")).await.unwrap().id;
    let held_job = claimed(store, held, false).await;
    let redelivered = store.insert(&new_job("malaria")).await.unwrap().id;
    let first_attempt = claimed(store, redelivered, false).await;
    let done = store.insert(&new_job("malaria")).await.unwrap().id;
    let done_job = claimed(store, done, false).await;
    assert!(
        store
            .succeed(done, done_job.attempts, &result())
            .await
            .unwrap()
    );
    let late = store
        .insert(&NewJob {
            deadline: Some(Utc::now() - TimeDelta::seconds(1)),
            ..new_job("malaria")
        })
        .await
        .unwrap()
        .id;
    let unknown = JobId::new();

    let claims = store
        .claim_many(
            &[
                (fresh, false),
                (held, false),
                (redelivered, true),
                (done, false),
                (late, false),
                (unknown, false),
            ],
            LEASE,
            Priority::Interactive,
        )
        .await
        .unwrap();
    assert_eq!(claims.len(), 6);
    match &claims[0] {
        Claim::Claimed(job) => {
            assert_eq!(job.id, fresh);
            assert_eq!(job.status, JobStatus::Processing);
            assert_eq!(job.attempts, 1);
            assert_recent(job.started_at.expect("started"));
            assert_eq!(&get(store, fresh).await, job);
        }
        other => panic!("expected the fresh job Claimed, got {other:?}"),
    }
    assert_eq!(claims[1], Claim::Busy, "a live lease is not taken over");
    assert_eq!(get(store, held).await.attempts, held_job.attempts);
    match &claims[2] {
        Claim::Claimed(job) => {
            assert_eq!(job.id, redelivered);
            assert_eq!(job.attempts, first_attempt.attempts + 1);
            assert_eq!(job.started_at, first_attempt.started_at);
        }
        other => panic!("expected the redelivered job taken over, got {other:?}"),
    }
    match &claims[3] {
        Claim::Finished(job) => {
            assert_eq!(job.id, done);
            assert_eq!(job.status, JobStatus::Succeeded);
            assert_eq!(job.attempts, done_job.attempts, "no new attempt");
        }
        other => panic!("expected the finished job Finished, got {other:?}"),
    }
    match &claims[4] {
        Claim::Finished(job) => {
            assert_eq!(job.id, late);
            assert_eq!(job.status, JobStatus::Canceled);
            assert_eq!(
                job.error.as_ref().map(|e| e.code.clone()),
                Some(FailureCode::DeadlineExceeded)
            );
            assert_eq!(job.attempts, 0, "never run");
        }
        other => panic!("expected the late job canceled, got {other:?}"),
    }
    assert_eq!(claims[5], Claim::Missing);
}

/// A batch's results are written in one call, each fenced by its own attempt, each once.
async fn a_batch_of_results_is_written_once_each_under_its_own_attempt(db: TestJobStore) {
    let store = &*db.store;
    let kept = store.insert(&new_job("malaria")).await.unwrap().id;
    let kept_job = claimed(store, kept, false).await;
    let lost = store.insert(&new_job("malaria")).await.unwrap().id;
    let lost_job = claimed(store, lost, false).await;
    // Another worker took the second job over: the first holder's result must not land.
    let taken_over = claimed(store, lost, true).await;

    let mut other = result();
    other.label = "Uninfected".into();
    let written = store
        .succeed_many(
            &[
                (kept, kept_job.attempts, &result()),
                (lost, lost_job.attempts, &other),
            ],
            Priority::Interactive,
        )
        .await
        .unwrap();
    assert_eq!(written, vec![true, false]);

    let job = get(store, kept).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(job.result, Some(result()));
    assert_eq!(job.error, None);
    assert_recent(job.finished_at.expect("finished"));
    let job = get(store, lost).await;
    assert_eq!(job.status, JobStatus::Processing);
    assert_eq!(job.result, None);

    // Written once: a second delivery of the same results changes nothing.
    let written = store
        .succeed_many(
            &[
                (kept, kept_job.attempts, &other),
                (lost, taken_over.attempts, &result()),
            ],
            Priority::Bulk,
        )
        .await
        .unwrap();
    assert_eq!(written, vec![false, true]);
    assert_eq!(get(store, kept).await.result, Some(result()));
    assert_eq!(get(store, lost).await.result, Some(result()));
}

async fn the_backlog_is_counted_per_model_with_its_oldest_job(db: TestJobStore) {
    let store = &*db.store;
    assert!(store.queued_by_model().await.unwrap().is_empty());
    let first = store.insert(&new_job("malaria")).await.unwrap();
    store.insert(&new_job("malaria")).await.unwrap();
    let taken = store.insert(&new_job("malaria")).await.unwrap().id;
    store.insert(&new_job("tuberculosis")).await.unwrap();
    store
        .insert(&NewJob {
            priority: Priority::Bulk,
            ..new_job("malaria")
        })
        .await
        .unwrap();
    claimed(store, taken, false).await;
    let backlog = store.queued_by_model().await.unwrap();
    let summary: Vec<(&str, Priority, i64)> = backlog
        .iter()
        .map(|q| (q.model.as_str(), q.priority, q.jobs))
        .collect();
    // The claimed job is no longer waiting; each lane is counted on its own.
    assert_eq!(
        summary,
        [
            ("malaria", Priority::Interactive, 2),
            ("malaria", Priority::Bulk, 1),
            ("tuberculosis", Priority::Interactive, 1)
        ]
    );
    assert_eq!(backlog[0].oldest, first.created_at);
}

/// SQLite: jobs reach the database file itself through the background checkpointer, not
/// through an automatic checkpoint inside one of the writer's commits (which held every write
/// queued behind it for the copy and its syncs). Twenty jobs are far fewer pages than the
/// automatic checkpoint's 1,000: without the checkpointer they stay in the write-ahead log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_jobs_are_checkpointed_into_the_database_file_in_the_background() {
    use medinform_core::db::SqliteJobStore;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteJobStore::connect(&format!("sqlite://{}", path.display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    for _ in 0..20 {
        store.insert(&new_job("malaria")).await.unwrap();
    }
    // `immutable`: the database file alone, without the write-ahead log.
    let in_file = || async {
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .immutable(true)
            .connect()
            .await
            .ok()?;
        let count: Option<i64> = sqlx::query_scalar("select count(*) from jobs")
            .fetch_one(&mut conn)
            .await
            .ok();
        let _ = conn.close().await;
        count
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    while tokio::time::Instant::now() < deadline {
        seen = in_file().await;
        if seen == Some(20) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the database file holds {seen:?} jobs 10 s after 20 were committed");
}

/// Waits until a statement of this database waits for a lock.
async fn waiting_for_a_lock(pool: &sqlx::PgPool) {
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity \
             where datname = current_database() and wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// PostgreSQL: publishes that arrive while one is being recorded are recorded together by one
/// more statement, not by a transaction each (half the write transactions an upload cost the
/// database that every API replica shares). A statement-level trigger counts the statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_records_publishes_that_arrive_together_in_one_statement() {
    let (_database, store) = crate::support::postgres_store().await;
    let pool = store.pool();
    sqlx::raw_sql(
        "create table publish_statements (n int not null); \
         insert into publish_statements values (0); \
         create function count_publish_statement() returns trigger language plpgsql as \
             $$ begin update publish_statements set n = n + 1; return null; end $$; \
         create trigger count_publish_statements after update of published_at on jobs \
             for each statement execute function count_publish_statement();",
    )
    .execute(pool)
    .await
    .unwrap();
    let mut jobs = Vec::new();
    for _ in 0..30 {
        jobs.push(store.insert(&new_job("malaria")).await.unwrap().id);
    }
    let mark = |id: JobId| {
        let store = store.clone();
        tokio::spawn(async move { store.mark_published(id).await })
    };

    // The table is locked against writes, so the statement that records the first publish
    // waits; the other 29 publishes arrive meanwhile.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("lock table jobs in share mode")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut marked = vec![mark(jobs[0])];
    tokio::time::timeout(Duration::from_secs(10), waiting_for_a_lock(pool))
        .await
        .expect("the first publish record waits for the table lock");
    marked.extend(jobs[1..].iter().map(|&id| mark(id)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.commit().await.unwrap();
    for done in futures::future::join_all(marked).await {
        done.unwrap().unwrap();
    }

    let statements: i32 = sqlx::query_scalar("select n from publish_statements")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        statements <= 3,
        "30 publishes took {statements} statements: the 29 that arrived while the first waited \
         were not recorded together"
    );
    let soon = Utc::now() + TimeDelta::seconds(1);
    let hour_ago = Utc::now() - TimeDelta::hours(1);
    assert_eq!(
        store.due_for_publish(soon, hour_ago, 100).await.unwrap(),
        vec![],
        "every publish is recorded"
    );
}

/// PostgreSQL: recording a publish never waits for a job's row that another transaction holds
/// (a claim of a batch locks its rows in its own order; a gathered publish statement that waited
/// for them could deadlock with it). The held job is left for its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_publish_records_skip_rows_a_claim_holds() {
    let (_database, store) = crate::support::postgres_store().await;
    let held = store.insert(&new_job("malaria")).await.unwrap().id;
    let free = store.insert(&new_job("malaria")).await.unwrap().id;

    let mut claim = store.pool().begin().await.unwrap();
    sqlx::query("select 1 from jobs where id = $1 for update")
        .bind(held.0)
        .execute(&mut *claim)
        .await
        .unwrap();
    let both = futures::future::join(store.mark_published(held), store.mark_published(free));
    let (a, b) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("the publish records do not wait for the held row");
    a.unwrap();
    b.unwrap();
    claim.commit().await.unwrap();

    let soon = Utc::now() + TimeDelta::seconds(1);
    let hour_ago = Utc::now() - TimeDelta::hours(1);
    let due: Vec<JobId> = store
        .due_for_publish(soon, hour_ago, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        due,
        vec![held],
        "the free job's publish is recorded, the held one's is not"
    );
}
