//! The tenant store: PostgreSQL and SQLite held to the same tests.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use medinform_core::db::{TenantStore, TokenBucket, create_api_key};
use medinform_core::tenant::{Scope, TenantId};

macro_rules! each_tenant_store {
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

each_tenant_store!(
    the_local_tenant_exists_and_tenants_are_created_once,
    a_key_is_found_by_its_hash_with_its_tenant_and_scopes,
    revoking_keeps_the_key_and_its_first_revocation_time,
    keys_are_listed_per_tenant_or_all,
    a_use_is_written_at_most_once_a_minute,
    a_token_bucket_empties_then_refills_at_its_rate,
    concurrent_takes_get_each_token_once,
);

async fn the_local_tenant_exists_and_tenants_are_created_once(store: Arc<dyn TenantStore>) {
    let local = store.tenant(TenantId::LOCAL).await.unwrap().unwrap();
    assert_eq!(local.name, TenantId::LOCAL_NAME);
    let first = store.ensure_tenant("clinic-a").await.unwrap();
    let again = store.ensure_tenant("clinic-a").await.unwrap();
    assert_eq!(first, again);
    assert_ne!(first.id, TenantId::LOCAL);
    assert_eq!(store.tenant_by_name("clinic-a").await.unwrap(), Some(first));
    assert_eq!(store.tenant_by_name("nobody").await.unwrap(), None);
}

async fn a_key_is_found_by_its_hash_with_its_tenant_and_scopes(store: Arc<dyn TenantStore>) {
    let created = create_api_key(
        store.as_ref(),
        "clinic-a",
        "laptop",
        &[Scope::Read, Scope::Submit],
    )
    .await
    .unwrap();
    assert_eq!(created.record.prefix, created.secret.prefix());
    let found = store
        .authenticate(&created.secret.sha256())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, created.record);
    assert_eq!(found.tenant_name, "clinic-a");
    assert_eq!(found.scopes, vec![Scope::Submit, Scope::Read]);
    assert_eq!(found.last_used_at, None);
    assert!(!found.is_revoked());
    assert_eq!(store.authenticate(&"0".repeat(64)).await.unwrap(), None);
}

async fn revoking_keeps_the_key_and_its_first_revocation_time(store: Arc<dyn TenantStore>) {
    let created = create_api_key(store.as_ref(), "clinic-a", "", &[Scope::Admin])
        .await
        .unwrap();
    let revoked = store
        .revoke_key(&created.record.prefix)
        .await
        .unwrap()
        .unwrap();
    let first = revoked.revoked_at.expect("revoked");
    let again = store
        .revoke_key(&created.record.prefix)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(first));
    let found = store
        .authenticate(&created.secret.sha256())
        .await
        .unwrap()
        .unwrap();
    assert!(found.is_revoked());
    assert_eq!(store.revoke_key("mik_00000000").await.unwrap(), None);
}

async fn keys_are_listed_per_tenant_or_all(store: Arc<dyn TenantStore>) {
    let a1 = create_api_key(store.as_ref(), "clinic-a", "one", &[Scope::Read])
        .await
        .unwrap();
    let b = create_api_key(store.as_ref(), "clinic-b", "two", &[Scope::Read])
        .await
        .unwrap();
    let a2 = create_api_key(store.as_ref(), "clinic-a", "three", &[Scope::Read])
        .await
        .unwrap();
    let prefixes = |keys: Vec<medinform_core::tenant::ApiKey>| {
        keys.into_iter().map(|k| k.prefix).collect::<Vec<_>>()
    };
    let all = prefixes(store.list_keys(None).await.unwrap());
    assert_eq!(
        all,
        vec![
            a1.record.prefix.clone(),
            b.record.prefix,
            a2.record.prefix.clone()
        ]
    );
    let tenant_a = store.tenant_by_name("clinic-a").await.unwrap().unwrap();
    let only_a = prefixes(store.list_keys(Some(tenant_a.id)).await.unwrap());
    assert_eq!(only_a, vec![a1.record.prefix, a2.record.prefix]);
}

async fn a_use_is_written_at_most_once_a_minute(store: Arc<dyn TenantStore>) {
    let created = create_api_key(store.as_ref(), "clinic-a", "", &[Scope::Read])
        .await
        .unwrap();
    let id = created.record.id;
    let last_use = || async {
        store
            .authenticate(&created.secret.sha256())
            .await
            .unwrap()
            .unwrap()
            .last_used_at
    };
    let t0 = Utc::now();
    store.record_key_use(id, t0).await.unwrap();
    let first = last_use().await.expect("recorded");
    assert!(
        (first - t0).num_milliseconds().abs() <= 1,
        "{first} vs {t0}"
    );
    store
        .record_key_use(id, t0 + TimeDelta::seconds(30))
        .await
        .unwrap();
    assert_eq!(
        last_use().await,
        Some(first),
        "a use within the minute is not written"
    );
    let later = t0 + TimeDelta::seconds(61);
    store.record_key_use(id, later).await.unwrap();
    let second = last_use().await.unwrap();
    assert!(
        (second - later).num_milliseconds().abs() <= 1,
        "{second} vs {later}"
    );
}

const BUCKET: TokenBucket = TokenBucket {
    per_second: 2.0,
    capacity: 3.0,
};

async fn a_token_bucket_empties_then_refills_at_its_rate(store: Arc<dyn TenantStore>) {
    let start = Utc::now();
    for _ in 0..3 {
        assert_eq!(
            store.take_token("mik_a", BUCKET, start).await.unwrap(),
            None
        );
    }
    // Empty: the next token comes in half a second (two a second).
    let wait = store
        .take_token("mik_a", BUCKET, start)
        .await
        .unwrap()
        .unwrap();
    assert!((450..=500).contains(&wait.as_millis()), "{wait:?}");
    // Another bucket is full.
    assert_eq!(
        store.take_token("mik_b", BUCKET, start).await.unwrap(),
        None
    );
    // 0.75 s later one token came back (and a half): one take, then a quarter second's wait.
    let later = start + TimeDelta::milliseconds(750);
    assert_eq!(
        store.take_token("mik_a", BUCKET, later).await.unwrap(),
        None
    );
    let wait = store
        .take_token("mik_a", BUCKET, later)
        .await
        .unwrap()
        .unwrap();
    assert!((200..=250).contains(&wait.as_millis()), "{wait:?}");
    // A clock a little behind (another process) neither refills nor breaks the bucket.
    let behind = start + TimeDelta::milliseconds(500);
    assert!(
        store
            .take_token("mik_a", BUCKET, behind)
            .await
            .unwrap()
            .is_some()
    );
    // Long idle: full again, never more than full; purging idle buckets forgets them.
    let idle = start + TimeDelta::hours(2);
    for _ in 0..3 {
        assert_eq!(store.take_token("mik_a", BUCKET, idle).await.unwrap(), None);
    }
    assert!(
        store
            .take_token("mik_a", BUCKET, idle)
            .await
            .unwrap()
            .is_some()
    );
    let purged = store
        .purge_token_buckets(start + TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(purged, 1, "mik_b was idle, mik_a was not");
}

async fn concurrent_takes_get_each_token_once(store: Arc<dyn TenantStore>) {
    let now = Utc::now();
    let bucket = TokenBucket {
        per_second: 0.001,
        capacity: 5.0,
    };
    let takes = (0..40).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.take_token("mik_busy", bucket, now).await.unwrap() })
    });
    let mut taken = 0;
    for take in takes {
        if take.await.unwrap().is_none() {
            taken += 1;
        }
    }
    assert_eq!(taken, 5);
}
