//! The stores the job store's tests do not cover, held to the same contract on PostgreSQL and
//! SQLite: idempotency keys, batches opened by keyed requests, webhook deliveries claimed by
//! several dispatchers at once, and the payload format of endpoints and deliveries.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use medinform_core::app::Database;
use medinform_core::batch::NewBatch;
use medinform_core::db::{
    Begin, EndpointUpdate, IdempotencyStore, NewDelivery, NewEndpoint, NewIdempotencyKey, NewJob,
    StoredResponse,
};
use medinform_core::job::{BatchId, JobFailure};
use medinform_core::tenant::TenantId;
use medinform_core::webhooks::{DeliveryId, EndpointId, EventType, PayloadFormat, Secret};

use crate::support::new_job;

macro_rules! each_database {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::TestDatabase::postgres().await.db).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::TestDatabase::sqlite().await.db).await;
                }
            )*
        }
    };
}

each_database!(
    an_idempotency_key_is_new_then_in_progress_then_replayed,
    a_claim_not_kept_alive_is_taken_over_as_the_same_use_of_the_key,
    an_expired_key_begins_a_new_use,
    a_released_claim_is_taken_at_once,
    a_batch_is_opened_once_per_submission_key,
    a_held_batch_completes_once_its_holders_let_go_or_lapse,
    concurrent_dispatchers_claim_each_delivery_once,
    an_endpoints_payload_format_is_kept_and_each_delivery_keeps_its_own,
);

const LEASE: TimeDelta = TimeDelta::seconds(10);

fn keyed(key: &str, sha: &str, now: chrono::DateTime<Utc>) -> NewIdempotencyKey {
    NewIdempotencyKey {
        tenant_id: TenantId::LOCAL,
        key: key.to_owned(),
        method: "POST".to_owned(),
        path: "/v1/jobs".to_owned(),
        request_sha256: sha.to_owned(),
        now,
        expires_at: now + TimeDelta::hours(1),
        stale_before: now - LEASE,
    }
}

fn since(begin: Begin) -> chrono::DateTime<Utc> {
    match begin {
        Begin::New { since } => since,
        other => panic!("expected a new use of the key, got {other:?}"),
    }
}

async fn an_idempotency_key_is_new_then_in_progress_then_replayed(db: Arc<dyn Database>) {
    let now = Utc::now();
    since(db.begin(&keyed("k", "sha-a", now)).await.unwrap());
    assert_eq!(
        db.begin(&keyed("k", "sha-a", now)).await.unwrap(),
        Begin::InProgress
    );
    assert_eq!(
        db.begin(&keyed("k", "sha-b", now)).await.unwrap(),
        Begin::Mismatch
    );
    let response = StoredResponse {
        status: 202,
        headers: vec![("content-type".into(), "application/json".into())],
        body: b"{\"id\":1}".to_vec(),
    };
    db.complete(TenantId::LOCAL, "k", &response).await.unwrap();
    assert_eq!(
        db.begin(&keyed("k", "sha-a", now)).await.unwrap(),
        Begin::Replay(response)
    );
}

async fn a_claim_not_kept_alive_is_taken_over_as_the_same_use_of_the_key(db: Arc<dyn Database>) {
    let start = Utc::now();
    let first = since(db.begin(&keyed("k", "sha", start)).await.unwrap());
    // Kept alive by its process: still in progress after more than a lease.
    let later = start + LEASE + TimeDelta::seconds(5);
    db.keep_alive(TenantId::LOCAL, "k", later - TimeDelta::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        db.begin(&keyed("k", "sha", later)).await.unwrap(),
        Begin::InProgress
    );
    // Its process died: a lease later, a retry takes the claim over, as the same use.
    let much_later = later + LEASE + TimeDelta::seconds(1);
    let taken = since(db.begin(&keyed("k", "sha", much_later)).await.unwrap());
    assert_eq!(taken, first);
    // ...but never for another request under the same key.
    let even_later = much_later + LEASE + TimeDelta::seconds(1);
    assert_eq!(
        db.begin(&keyed("k", "other", even_later)).await.unwrap(),
        Begin::Mismatch
    );
}

async fn an_expired_key_begins_a_new_use(db: Arc<dyn Database>) {
    let start = Utc::now();
    let first = since(db.begin(&keyed("k", "sha", start)).await.unwrap());
    let response = StoredResponse {
        status: 201,
        headers: Vec::new(),
        body: Vec::new(),
    };
    db.complete(TenantId::LOCAL, "k", &response).await.unwrap();
    let after_expiry = start + TimeDelta::hours(2);
    let second = since(db.begin(&keyed("k", "sha", after_expiry)).await.unwrap());
    assert!(second > first, "{first} then {second}");
    assert_eq!(
        db.purge_idempotency_keys(after_expiry + TimeDelta::hours(2))
            .await
            .unwrap(),
        1
    );
}

async fn a_released_claim_is_taken_at_once(db: Arc<dyn Database>) {
    let now = Utc::now();
    let first = since(db.begin(&keyed("k", "sha", now)).await.unwrap());
    IdempotencyStore::release(db.as_ref(), TenantId::LOCAL, "k")
        .await
        .unwrap();
    assert_eq!(
        since(db.begin(&keyed("k", "sha", now)).await.unwrap()),
        first
    );
    assert_eq!(
        db.begin(&keyed("k", "sha", now)).await.unwrap(),
        Begin::InProgress
    );
}

async fn a_batch_is_opened_once_per_submission_key(db: Arc<dyn Database>) {
    let batch = |key: Option<&str>| NewBatch {
        id: BatchId::new(),
        tenant_id: TenantId::LOCAL,
        model: "malaria".into(),
        site: Some("Camp 7".into()),
        campaign: None,
        operator: None,
        client_reference: None,
        tags: Vec::new(),
        submission_key: key.map(str::to_owned),
    };
    let first = db.insert_batch(&batch(Some("s"))).await.unwrap();
    let retry = batch(Some("s"));
    assert_eq!(db.insert_batch(&retry).await.unwrap().id, first.id);
    assert!(
        db.find_batch(TenantId::LOCAL, retry.id)
            .await
            .unwrap()
            .is_none()
    );
    let a = db.insert_batch(&batch(None)).await.unwrap();
    let b = db.insert_batch(&batch(None)).await.unwrap();
    assert_ne!(a.id, b.id);
}

async fn a_held_batch_completes_once_its_holders_let_go_or_lapse(db: Arc<dyn Database>) {
    let completed = |batch: BatchId| {
        let db = db.clone();
        async move {
            let batch = db
                .find_batch(TenantId::LOCAL, batch)
                .await
                .unwrap()
                .unwrap();
            batch.completed_at.is_some()
        }
    };
    let later = Utc::now() + LEASE;
    // Two requests add images; the batch's one job is final before either is done.
    let batch = batch_with_a_final_job(&db, &[later, later]).await;
    db.keep_batch_held(batch, later + LEASE).await.unwrap();
    assert_eq!(db.complete_batches().await.unwrap(), 0);
    db.reopen_batch(batch).await.unwrap();
    db.release_batch(batch).await.unwrap();
    assert_eq!(
        db.complete_batches().await.unwrap(),
        0,
        "one holder is left"
    );
    db.release_batch(batch).await.unwrap();
    assert_eq!(db.complete_batches().await.unwrap(), 1);
    assert!(completed(batch).await);

    // A holder that added jobs reopens the batch before it lets go; one that added none does not.
    db.hold_batch(batch, later).await.unwrap();
    db.release_batch(batch).await.unwrap();
    assert!(completed(batch).await);
    db.hold_batch(batch, later).await.unwrap();
    assert!(
        completed(batch).await,
        "still complete while the holder adds images"
    );
    db.reopen_batch(batch).await.unwrap();
    db.release_batch(batch).await.unwrap();
    assert!(!completed(batch).await);
    assert_eq!(db.complete_batches().await.unwrap(), 1);

    // A holder that died: its hold lapses, and the next hold counts from one again.
    let batch = batch_with_a_final_job(&db, &[Utc::now() - TimeDelta::seconds(1)]).await;
    assert_eq!(db.complete_batches().await.unwrap(), 1);
    db.reopen_batch(batch).await.unwrap();
    db.hold_batch(batch, later).await.unwrap();
    assert_eq!(db.complete_batches().await.unwrap(), 0);
    db.release_batch(batch).await.unwrap();
    assert_eq!(db.complete_batches().await.unwrap(), 1);
}

/// A new batch, held until each of `holds`, then given one job that is canceled (final) at once.
async fn batch_with_a_final_job(db: &Arc<dyn Database>, holds: &[DateTime<Utc>]) -> BatchId {
    let batch = db
        .insert_batch(&NewBatch {
            id: BatchId::new(),
            tenant_id: TenantId::LOCAL,
            model: "malaria".into(),
            site: None,
            campaign: None,
            operator: None,
            client_reference: None,
            tags: Vec::new(),
            submission_key: None,
        })
        .await
        .unwrap()
        .id;
    for until in holds {
        db.hold_batch(batch, *until).await.unwrap();
    }
    let job = NewJob {
        batch_id: Some(batch),
        ..new_job("malaria")
    };
    db.insert(&job).await.unwrap();
    let canceled = db
        .cancel_batch(TenantId::LOCAL, batch, &JobFailure::canceled_by_client())
        .await
        .unwrap();
    assert_eq!(canceled, 1);
    batch
}

async fn concurrent_dispatchers_claim_each_delivery_once(db: Arc<dyn Database>) {
    const DELIVERIES: usize = 30;
    let job = db.insert(&new_job("malaria")).await.unwrap();
    let deliveries: Vec<NewDelivery> = (0..DELIVERIES)
        .map(|i| NewDelivery {
            id: DeliveryId::new(),
            endpoint_id: None,
            url: format!("https://lab.example/hooks/{i}"),
            event_type: EventType::JobSucceeded,
            payload: "{}".into(),
            payload_format: PayloadFormat::MedInform,
        })
        .collect();
    assert!(
        db.enqueue_job_events(TenantId::LOCAL, job.id, &deliveries)
            .await
            .unwrap()
    );
    // The event of one job is fanned out once, however many dispatchers try.
    assert!(
        !db.enqueue_job_events(TenantId::LOCAL, job.id, &deliveries)
            .await
            .unwrap()
    );

    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let db = db.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let mut mine = Vec::new();
            loop {
                let claimed = db
                    .claim_due_deliveries(Duration::from_secs(60), 4)
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|d| d.id));
            }
        });
    }
    let claims: Vec<DeliveryId> = tasks.join_all().await.into_iter().flatten().collect();
    let unique: HashSet<&DeliveryId> = claims.iter().collect();
    assert_eq!(claims.len(), DELIVERIES, "a delivery was claimed twice");
    assert_eq!(unique.len(), DELIVERIES);
    // All are leased: nothing is due until the leases end.
    assert!(
        db.claim_due_deliveries(Duration::from_secs(60), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_endpoints_payload_format_is_kept_and_each_delivery_keeps_its_own(
    db: Arc<dyn Database>,
) {
    let endpoint = db
        .create_endpoint(&NewEndpoint {
            id: EndpointId::new(),
            tenant_id: TenantId::LOCAL,
            url: "https://lab.example/fhir".into(),
            event_types: vec![EventType::JobSucceeded],
            payload_format: PayloadFormat::FhirR4,
            description: None,
            enabled: true,
            secret: Secret::generate(),
        })
        .await
        .unwrap();
    assert_eq!(endpoint.payload_format, PayloadFormat::FhirR4);
    let found = db
        .find_endpoint(TenantId::LOCAL, endpoint.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.payload_format, PayloadFormat::FhirR4);

    // An update that does not name the format leaves it; one that does changes it.
    let described = EndpointUpdate {
        description: Some(Some("lab".into())),
        ..Default::default()
    };
    let kept = db
        .update_endpoint(TenantId::LOCAL, endpoint.id, &described)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.payload_format, PayloadFormat::FhirR4);
    let job = db.insert(&new_job("malaria")).await.unwrap();
    let delivery = |payload_format| NewDelivery {
        id: DeliveryId::new(),
        endpoint_id: Some(endpoint.id),
        url: endpoint.url.clone(),
        event_type: EventType::JobSucceeded,
        payload: "{}".into(),
        payload_format,
    };
    let fhir = delivery(PayloadFormat::FhirR4);
    let plain = delivery(PayloadFormat::MedInform);
    assert!(
        db.enqueue_job_events(TenantId::LOCAL, job.id, &[fhir.clone(), plain.clone()])
            .await
            .unwrap()
    );
    let back = EndpointUpdate {
        payload_format: Some(PayloadFormat::MedInform),
        ..Default::default()
    };
    let changed = db
        .update_endpoint(TenantId::LOCAL, endpoint.id, &back)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.payload_format, PayloadFormat::MedInform);
    assert_eq!(changed.description.as_deref(), Some("lab"));
    let listed = db.list_endpoints(TenantId::LOCAL).await.unwrap();
    assert_eq!(listed[0].payload_format, PayloadFormat::MedInform);

    // Deliveries stored before the change keep the format they were made in.
    for sent in [&fhir, &plain] {
        let stored = db
            .find_delivery(TenantId::LOCAL, &sent.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.payload_format, sent.payload_format);
    }
    let mut claimed = db
        .claim_due_deliveries(Duration::from_secs(60), 10)
        .await
        .unwrap();
    claimed.sort_by_key(|d| d.payload_format.as_str());
    let formats: Vec<PayloadFormat> = claimed.iter().map(|d| d.payload_format).collect();
    assert_eq!(formats, [PayloadFormat::FhirR4, PayloadFormat::MedInform]);
}
