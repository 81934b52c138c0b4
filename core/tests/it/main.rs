mod blob_store;
mod job_queue;
mod job_store;
mod parity;
mod registry;
mod republish;
mod support;
mod tenant_store;
