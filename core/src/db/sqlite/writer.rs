//! Group commit for the embedded store's hot writes.
//!
//! SQLite takes one writer at a time, and every commit syncs the write-ahead log and writes each
//! page the transaction touched. A job is written four times (recorded, published, claimed,
//! finished), so at a few hundred jobs a second one-transaction-per-write spends more CPU in
//! SQLite than in the model. Instead, the job store's writes are sent to one task that owns one
//! connection: it takes every write waiting at that moment (up to [`MAX_GROUP`]), runs them one
//! after the other and commits them in one transaction. Nobody hears back before that commit is
//! durable, so a caller sees exactly what it saw before: its write committed, or an error.
//!
//! Each write changes the database with one statement at most (it may read besides): SQLite
//! applies a statement whole or not at all, so a write that fails (a constraint) is undone alone
//! and reports its own error, and its neighbours in the group commit.
//!
//! Under light load a group is one write, as before; under heavy load a commit carries the
//! writes of every task that arrived meanwhile.
//!
//! The writer runs on a thread of its own (a single-threaded runtime), so that between one
//! statement of a group and the next it never waits for a busy runtime worker to poll it: under
//! a drive's load that wait had doubled the time of each statement, and the writer, through
//! which every job passes several times, had become what limited throughput on small images.
//!
//! The write-ahead log is copied back into the database by a checkpointer of its own, not by
//! the writer. SQLite's automatic checkpoint runs inside the commit that crosses its threshold
//! (1,000 pages): under a drive's load that was every few hundred jobs, and each one held the
//! writer, and every write queued behind it, for the copy and its two syncs (a walk-in upload's
//! claim waited 100 ms and more for it). The writer's connection has it off; every
//! [`CHECKPOINT_EVERY`] another connection runs a passive checkpoint, which never blocks the
//! writer or a reader and syncs on its own thread.

use std::any::Any;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::db::DbError;

/// The most writes one transaction commits.
const MAX_GROUP: usize = 256;

/// How often the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

type Output = Result<Box<dyn Any + Send>, DbError>;
type Work = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Output> + Send>;

struct Op {
    work: Work,
    reply: oneshot::Sender<Output>,
}

/// The way into the writer task. Cloning shares the task; it stops when the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    ops: mpsc::Sender<Op>,
}

impl Writer {
    /// Starts the writer task and its checkpointer on the current runtime, each with its own
    /// connection.
    pub(super) fn start(options: SqliteConnectOptions) -> Self {
        let (ops, queue) = mpsc::channel(4 * MAX_GROUP);
        let options = options.pragma("wal_autocheckpoint", "0");
        tokio::spawn(checkpoint(options.clone(), ops.downgrade()));
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the SQLite writer")
                    .block_on(serve(options, queue));
            })
            .expect("the SQLite writer's thread");
        Self { ops }
    }

    /// Runs `work` in the next group and returns its result once the group is committed.
    /// `work` changes the database with one statement at most (see the module's documentation).
    pub(super) async fn write<R, F>(&self, work: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<R, DbError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work: Work = Box::new(move |conn| {
            Box::pin(async move {
                let out = work(conn).await?;
                Ok(Box::new(out) as Box<dyn Any + Send>)
            })
        });
        self.ops
            .send(Op { work, reply })
            .await
            .map_err(|_| stopped())?;
        let out = answer.await.map_err(|_| stopped())??;
        Ok(*out
            .downcast::<R>()
            .expect("a write answers with the type it was asked for"))
    }
}

fn stopped() -> DbError {
    DbError::Unavailable(anyhow::anyhow!("the SQLite writer has stopped"))
}

async fn serve(options: SqliteConnectOptions, mut queue: mpsc::Receiver<Op>) {
    let mut conn: Option<SqliteConnection> = None;
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        if conn.is_none() {
            match options.connect().await {
                Ok(fresh) => conn = Some(fresh),
                Err(e) => {
                    let message = format!("cannot open the database for writing: {e}");
                    fail_all(group.drain(..), &message);
                    continue;
                }
            }
        }
        let healthy = commit(conn.as_mut().expect("opened above"), group.drain(..)).await;
        if !healthy {
            // Whatever went wrong, the next group starts on a fresh connection.
            conn = None;
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// Runs a passive checkpoint every [`CHECKPOINT_EVERY`] while the writer lives. A failed one is
/// logged and tried again on a fresh connection: the log only grows meanwhile.
async fn checkpoint(options: SqliteConnectOptions, writer: mpsc::WeakSender<Op>) {
    let mut conn: Option<SqliteConnection> = None;
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if writer.upgrade().is_none() {
            break;
        }
        if conn.is_none() {
            conn = options.connect().await.ok();
        }
        let Some(open) = conn.as_mut() else { continue };
        if let Err(e) = open.execute("pragma wal_checkpoint(passive)").await {
            tracing::warn!(error = %e, "the SQLite checkpoint failed; trying again");
            conn = None;
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// Runs the group in one transaction and answers every write; false when the connection
/// should be replaced.
async fn commit(conn: &mut SqliteConnection, group: impl Iterator<Item = Op>) -> bool {
    let group: Vec<Op> = group.collect();
    if let Err(e) = conn.execute("begin immediate").await {
        fail_all(group, &format!("cannot start a transaction: {e}"));
        return false;
    }
    let mut done = Vec::with_capacity(group.len());
    for Op { work, reply } in group {
        let out = work(conn).await;
        done.push((reply, out));
    }
    match conn.execute("commit").await {
        Ok(_) => {
            for (reply, out) in done {
                let _ = reply.send(out);
            }
            true
        }
        Err(e) => {
            let _ = conn.execute("rollback").await;
            let message = format!("the transaction could not be committed: {e}");
            for (reply, _) in done {
                let _ = reply.send(Err(unavailable(message.clone())));
            }
            false
        }
    }
}

fn unavailable(message: String) -> DbError {
    DbError::Unavailable(anyhow::Error::msg(message))
}

/// Answers writes that never ran.
fn fail_all(ops: impl IntoIterator<Item = Op>, message: &str) {
    for op in ops {
        let _ = op.reply.send(Err(unavailable(message.to_owned())));
    }
}
