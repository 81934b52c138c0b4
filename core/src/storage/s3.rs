//! The distributed blob store: any S3-compatible server (AWS S3, Garage, MinIO).

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use bytes::Bytes;
use chrono::DateTime;

use super::{BlobStore, StorageError, StoredObject, check_key};
use crate::config::S3Config;

/// Objects in one bucket, under an optional key prefix.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
}

impl S3BlobStore {
    /// Builds the one S3 client of the process. Path-style addressing and a custom endpoint are
    /// settings, so Garage and MinIO work as well as AWS.
    pub fn connect(config: &S3Config) -> anyhow::Result<Self> {
        anyhow::ensure!(!config.bucket.is_empty(), "storage.s3.bucket is empty");
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .force_path_style(config.force_path_style)
            .http_client(http_client);
        if !config.access_key_id.is_empty() {
            builder = builder.credentials_provider(Credentials::new(
                config.access_key_id.clone(),
                config.secret_access_key.clone(),
                None,
                None,
                "medinform-config",
            ));
        }
        if !config.endpoint.is_empty() {
            builder = builder.endpoint_url(config.endpoint.clone());
        }
        let prefix = config.prefix.trim_matches('/');
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: if config.endpoint.is_empty() {
                format!("AWS S3 {}", config.region)
            } else {
                config.endpoint.clone()
            },
        })
    }

    /// The S3 client, for what the blob store's verbs do not cover (operations tools, tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn object_key(&self, key: &str) -> anyhow::Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<(), StorageError> {
        let object_key = self.object_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .with_context(|| format!("putting s3://{}/{object_key}", self.bucket))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let object_key = self.object_key(key)?;
        let response = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
        {
            Ok(response) => response,
            Err(SdkError::ServiceError(e)) if e.err().is_no_such_key() => {
                return Err(StorageError::NotFound(key.into()));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("getting s3://{}/{object_key}", self.bucket))
                    .into());
            }
        };
        let body = response
            .body
            .collect()
            .await
            .with_context(|| format!("reading s3://{}/{object_key}", self.bucket))?;
        Ok(body.into_bytes())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let object_key = self.object_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
            .with_context(|| format!("deleting s3://{}/{object_key}", self.bucket))?;
        Ok(())
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredObject>, StorageError> {
        let mut request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{prefix}", self.prefix))
            .max_keys(i32::try_from(limit.min(1000)).unwrap_or(1000));
        if let Some(after) = start_after {
            request = request.start_after(format!("{}{after}", self.prefix));
        }
        let page = request
            .send()
            .await
            .with_context(|| format!("listing s3://{}/{}{prefix}", self.bucket, self.prefix))?;
        let mut found = Vec::new();
        for object in page.contents() {
            let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else {
                continue;
            };
            let Some(key) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            let modified = DateTime::from_timestamp(modified.secs(), modified.subsec_nanos())
                .context("an object time out of range")?;
            found.push(StoredObject {
                key: key.to_owned(),
                modified,
            });
        }
        Ok(found)
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .with_context(|| format!("bucket {} at {}", self.bucket, self.endpoint))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("S3 bucket {} at {}", self.bucket, self.endpoint)
    }
}
