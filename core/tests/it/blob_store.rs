//! The blob store: a local folder, the embedded mode's (small images in the SQLite job
//! database, the rest in a folder) and S3 (Garage) held to the same tests.

use std::time::Duration;

use bytes::Bytes;
use medinform_core::db::JobStore;
use medinform_core::storage::{INLINE_MAX_BYTES, StorageError, image_key, sha256_hex};

use crate::support::{BlobKind, TestBlobStore, new_job};

macro_rules! each_blob_store {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::BlobKind::Local).await;
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::BlobKind::Embedded).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(crate::support::BlobKind::S3).await;
                }
            )*
        }
    };
}

each_blob_store!(
    put_then_get_returns_the_bytes_under_their_content_address,
    putting_the_same_key_twice_is_harmless,
    get_of_a_missing_key_is_not_found,
    check_answers_ok,
    keys_that_could_escape_the_store_are_refused,
    stores_with_different_prefixes_do_not_see_each_other,
    list_pages_through_every_key_in_order,
    delete_removes_an_object_and_a_missing_one_is_no_error,
    putting_an_existing_key_again_renews_its_time,
);

/// Bytes like an image's (not valid UTF-8, with zeros), different per `seed`.
fn image_bytes(seed: u8) -> Bytes {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .chain([0xff, 0x00, 0xd8, seed])
        .collect()
}

async fn put_then_get_returns_the_bytes_under_their_content_address(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    let bytes = image_bytes(1);
    let sha = sha256_hex(&bytes);
    let key = image_key(&sha);
    assert_eq!(key, format!("images/sha256/{}/{sha}", &sha[..2]));
    blobs
        .store
        .put(&key, bytes.clone(), "image/png")
        .await
        .unwrap();
    let read = blobs.store.get(&key).await.unwrap();
    assert_eq!(read, bytes);
    assert_eq!(
        sha256_hex(&read),
        sha,
        "what is read back has the address it was stored at"
    );
    match (kind, &blobs.root) {
        (BlobKind::Local, Some(root)) => {
            assert_eq!(std::fs::read(root.join(&key)).unwrap(), bytes.to_vec());
        }
        // A small image is kept in the database: no file.
        (BlobKind::Embedded, Some(root)) => assert!(!root.join(&key).exists()),
        _ => {}
    }
    assert!(!blobs.store.describe().is_empty());
}

async fn putting_the_same_key_twice_is_harmless(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    let bytes = image_bytes(2);
    let key = image_key(&sha256_hex(&bytes));
    blobs
        .store
        .put(&key, bytes.clone(), "image/png")
        .await
        .unwrap();
    blobs
        .store
        .put(&key, bytes.clone(), "image/png")
        .await
        .unwrap();
    // Two uploads of the same image at once (two clients): both succeed, one object remains.
    let (a, b) = tokio::join!(
        blobs.store.put(&key, bytes.clone(), "image/png"),
        blobs.store.put(&key, bytes.clone(), "image/png"),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(blobs.store.get(&key).await.unwrap(), bytes);
    if let (BlobKind::Local, Some(root)) = (kind, &blobs.root) {
        let dir = root.join(&key);
        let entries: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "no temporary file left behind: {entries:?}"
        );
    }
}

async fn get_of_a_missing_key_is_not_found(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    let key = image_key(&sha256_hex(b"never stored"));
    match blobs.store.get(&key).await {
        Err(StorageError::NotFound(missing)) => assert_eq!(missing, key),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

async fn check_answers_ok(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    blobs.store.check().await.unwrap();
    blobs.store.check().await.unwrap();
}

async fn keys_that_could_escape_the_store_are_refused(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    let bytes = image_bytes(3);
    for bad in [
        "",
        "/etc/passwd",
        "../outside",
        "images/../../outside",
        "images/./x",
        "images//x",
        "images/x/",
        "images\\..\\x",
        "images/a b",
    ] {
        match blobs.store.put(bad, bytes.clone(), "image/png").await {
            Err(StorageError::Backend(e)) => {
                assert!(
                    format!("{e:#}").contains("invalid object key"),
                    "{bad:?}: {e:#}"
                )
            }
            other => panic!("put {bad:?}: expected an invalid key error, got {other:?}"),
        }
        match blobs.store.get(bad).await {
            Err(StorageError::Backend(e)) => {
                assert!(
                    format!("{e:#}").contains("invalid object key"),
                    "{bad:?}: {e:#}"
                )
            }
            other => panic!("get {bad:?}: expected an invalid key error, got {other:?}"),
        }
    }
    if let Some(root) = &blobs.root {
        let outside = root.parent().unwrap().join("outside");
        assert!(!outside.exists(), "{} was written", outside.display());
    }
}

async fn stores_with_different_prefixes_do_not_see_each_other(kind: BlobKind) {
    let one = TestBlobStore::new(kind).await;
    let other = TestBlobStore::new(kind).await;
    let bytes = image_bytes(4);
    let key = image_key(&sha256_hex(&bytes));
    one.store
        .put(&key, bytes.clone(), "image/png")
        .await
        .unwrap();
    assert!(matches!(
        other.store.get(&key).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(one.store.get(&key).await.unwrap(), bytes);
}

async fn list_pages_through_every_key_in_order(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    assert!(
        blobs
            .store
            .list("images/", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(5);
    let mut keys = Vec::new();
    for seed in 0..7 {
        let bytes = image_bytes(seed);
        let key = image_key(&sha256_hex(&bytes));
        blobs.store.put(&key, bytes, "image/png").await.unwrap();
        keys.push(key);
    }
    keys.sort();
    // Pages of three, each starting after the last key of the one before.
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = blobs
            .store
            .list("images/", after.as_deref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for object in &page {
            assert!(object.modified > before, "{object:?}");
        }
        listed.extend(page.into_iter().map(|o| o.key));
    }
    assert_eq!(listed, keys);
    // A prefix outside the images lists nothing, and the readiness probe is not an object.
    blobs.store.check().await.unwrap();
    assert!(
        blobs
            .store
            .list("other/", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(blobs.store.list("", None, 100).await.unwrap().len(), 7);
}

async fn delete_removes_an_object_and_a_missing_one_is_no_error(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    let bytes = image_bytes(9);
    let key = image_key(&sha256_hex(&bytes));
    blobs.store.put(&key, bytes, "image/png").await.unwrap();
    blobs.store.delete(&key).await.unwrap();
    assert!(matches!(
        blobs.store.get(&key).await,
        Err(StorageError::NotFound(_))
    ));
    blobs.store.delete(&key).await.unwrap();
    assert!(
        blobs
            .store
            .list("images/", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(blobs.store.delete("../escape").await.is_err());
}

async fn putting_an_existing_key_again_renews_its_time(kind: BlobKind) {
    let blobs = TestBlobStore::new(kind).await;
    let bytes = image_bytes(11);
    let key = image_key(&sha256_hex(&bytes));
    blobs
        .store
        .put(&key, bytes.clone(), "image/png")
        .await
        .unwrap();
    let first = blobs.store.list("images/", None, 1).await.unwrap()[0].modified;
    // S3 keeps times in whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    blobs.store.put(&key, bytes, "image/png").await.unwrap();
    let second = blobs.store.list("images/", None, 1).await.unwrap()[0].modified;
    assert!(second > first, "{first} then {second}");
}

/// The embedded store keeps a small image in the database and a larger one as a file, and
/// reads, lists (paging across both) and deletes them as one store.
#[tokio::test]
async fn the_embedded_store_keeps_small_images_in_the_database_and_large_ones_as_files() {
    let blobs = TestBlobStore::new(BlobKind::Embedded).await;
    let root = blobs.root.clone().unwrap();
    let small = image_bytes(21);
    let large: Bytes = (0..=INLINE_MAX_BYTES).map(|i| (i % 251) as u8).collect();
    assert!(blobs.store.beside_jobs(small.len()).is_some());
    assert!(blobs.store.beside_jobs(large.len()).is_none());
    let mut keys = Vec::new();
    for bytes in [&small, &large] {
        let key = image_key(&sha256_hex(bytes));
        blobs
            .store
            .put(&key, bytes.clone(), "image/png")
            .await
            .unwrap();
        assert_eq!(&blobs.store.get(&key).await.unwrap(), bytes);
        keys.push(key);
    }
    assert!(!root.join(&keys[0]).exists(), "the small image is a file");
    assert!(root.join(&keys[1]).exists(), "the large image is no file");

    let first = blobs.store.list("images/", None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let second = blobs
        .store
        .list("images/", Some(&first[0].key), 10)
        .await
        .unwrap();
    let mut listed: Vec<_> = first.iter().chain(&second).map(|o| o.key.clone()).collect();
    keys.sort();
    assert_eq!(listed, keys);
    listed = blobs
        .store
        .list("images/sha256/", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, keys);
    assert!(
        blobs
            .store
            .list("dicom/", None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    for key in &keys {
        blobs.store.delete(key).await.unwrap();
        assert!(matches!(
            blobs.store.get(key).await,
            Err(StorageError::NotFound(_))
        ));
    }
    assert!(blobs.store.list("", None, 10).await.unwrap().is_empty());
    assert!(!root.join(&keys[0]).exists() && !root.join(&keys[1]).exists());
}

/// A job and its small image are recorded in one write: the job names an image the store
/// reads back, with no file written; a retried request answers the job it created.
#[tokio::test]
async fn the_embedded_store_records_a_small_image_with_its_job() {
    let blobs = TestBlobStore::new(BlobKind::Embedded).await;
    let bytes = image_bytes(22);
    let sha = sha256_hex(&bytes);
    let mut job = new_job("malaria");
    job.image_key = image_key(&sha);
    job.image_sha256 = sha;
    job.submission_key = Some("request-1".into());
    let db = blobs.store.beside_jobs(bytes.len()).unwrap();
    let recorded = db.insert_with_image(&job, bytes.clone()).await.unwrap();
    assert_eq!(recorded.id, job.id);
    assert_eq!(recorded.image_key, job.image_key);
    assert_eq!(blobs.store.get(&job.image_key).await.unwrap(), bytes);
    let root = blobs.root.clone().unwrap();
    assert!(!root.join(&job.image_key).exists());
    assert_eq!(
        db.referenced_images(std::slice::from_ref(&job.image_key))
            .await
            .unwrap(),
        [job.image_key.clone()]
    );

    let mut retry = job.clone();
    retry.id = medinform_core::job::JobId::new();
    let answered = db.insert_with_image(&retry, bytes.clone()).await.unwrap();
    assert_eq!(answered.id, job.id, "a retry recorded a second job");
    assert_eq!(
        blobs.store.list("images/", None, 10).await.unwrap().len(),
        1
    );
}
