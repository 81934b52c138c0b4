//! The embedded blob store: a folder on the local disk.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;

use super::{BlobStore, StorageError, StoredObject, check_key};

/// Objects as files under one folder; writes go to a temporary file first and are renamed into
/// place, so a reader never sees half an image.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    /// Opens (and creates) the folder.
    pub async fn open(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .with_context(|| format!("creating image folder {}", root.display()))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> anyhow::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        // One trip to a blocking thread for the whole write, not one per file operation.
        tokio::task::spawn_blocking(move || write_once(&path, &bytes))
            .await
            .context("storing an image")??;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StorageError::NotFound(key.into())),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("deleting {}", path.display()))
                .into()),
        }
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        let listed = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(
                &root,
                "",
                &prefix,
                start_after.as_deref(),
                limit,
                &mut found,
            )?;
            Ok::<_, anyhow::Error>(found)
        })
        .await
        .context("listing the image folder")??;
        Ok(listed)
    }

    async fn check(&self) -> Result<(), StorageError> {
        let probe = self.root.join(".readyz");
        tokio::fs::write(&probe, b"ok")
            .await
            .with_context(|| format!("image folder {} is not writable", self.root.display()))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("local folder {}", self.root.display())
    }
}

/// Sets the file's modification time to now.
/// Writes `bytes` at `path` durably unless the file is there already (the same bytes: keys are
/// content addresses), in which case its time is renewed, as an S3 put would renew it, so the
/// orphan sweep's grace period restarts for the job about to refer to it.
fn write_once(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;

    match std::fs::File::options().write(true).open(path) {
        Ok(file) => {
            return file
                .set_modified(std::time::SystemTime::now())
                .with_context(|| format!("touching {}", path.display()));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    }
    let dir = path.parent().context("object key without a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_data()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("moving image into place at {}", path.display()))
}

/// Adds the files under `dir` (whose keys start with `rel`) that start with `prefix` and sort
/// after `start_after` to `found`, in key order, until it holds `limit`. Folders whose keys all
/// sort before `start_after`, or outside `prefix`, are not read; hidden files (temporary
/// writes, the readiness probe) are not objects.
fn walk(
    dir: &Path,
    rel: &str,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    found: &mut Vec<StoredObject>,
) -> anyhow::Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e)))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading {}", dir.display()))?,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", dir.display()))),
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, entry) in entries {
        if found.len() >= limit {
            break;
        }
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{rel}{name}");
        let file_type = entry.file_type().context("reading a file type")?;
        if file_type.is_dir() {
            let inner = format!("{key}/");
            let overlaps_prefix = inner.starts_with(prefix) || prefix.starts_with(&inner);
            let before_start =
                start_after.is_some_and(|s| inner.as_str() < s && !s.starts_with(&inner));
            if overlaps_prefix && !before_start {
                walk(&entry.path(), &inner, prefix, start_after, limit, found)?;
            }
        } else if key.starts_with(prefix) && start_after.is_none_or(|s| key.as_str() > s) {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .with_context(|| format!("reading the time of {key}"))?;
            found.push(StoredObject {
                key,
                modified: modified.into(),
            });
        }
    }
    Ok(())
}
