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
//! and reports its own error, and its neighbours in the group commit. The one exception is a
//! job recorded with its image ([`SqliteJobStore::insert_with_image`]): the image's statement
//! goes first, and should the job's fail, the image stays, an orphan the sweep removes, as an
//! image file would.
//!
//! [`SqliteJobStore::insert_with_image`]: super::SqliteJobStore::insert_with_image
//!
//! Under light load a group is one write, as before; under heavy load a commit carries the
//! writes of every task that arrived meanwhile.
//!
//! The writer runs on a thread of its own (a single-threaded runtime), so that between one
//! statement of a group and the next it never waits for a busy runtime worker to poll it: under
//! a drive's load that wait had doubled the time of each statement, and the writer, through
//! which every job passes several times, had become what limited throughput on small images.
//!
//! A walk-in's writes go first. The writer has two ways in, one per [`Priority`]: a group starts
//! with the interactive writes waiting, and an interactive write that arrives while a group of
//! bulk writes runs is taken next and ends that group, so that it commits after one more
//! statement instead of after the hundreds of a drive's uploads queued ahead of it (the bulk
//! writes left go first in the next group). Until a bulk write has run, a group goes on with
//! the bulk writes waiting, so the interactive lane cannot keep them out unless it never pauses.
//!
//! The write-ahead log is copied back into the database by a checkpointer of its own, not by
//! the writer. SQLite's automatic checkpoint runs inside the commit that crosses its threshold
//! (1,000 pages): under a drive's load that was every few hundred jobs, and each one held the
//! writer, and every write queued behind it, for the copy and its two syncs (a walk-in upload's
//! claim waited 100 ms and more for it). The writer's connection has it off; every
//! [`CHECKPOINT_EVERY`] another connection runs a passive checkpoint, which never blocks the
//! writer or a reader and syncs on its own thread.

use std::any::Any;
use std::collections::VecDeque;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Executor};
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use crate::db::DbError;
use crate::job::Priority;

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

/// The ways into the writer task, one per lane. Cloning shares the task; it stops when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    interactive: mpsc::Sender<Op>,
    bulk: mpsc::Sender<Op>,
}

/// The writes waiting for the writer, by lane.
struct Queues {
    interactive: mpsc::Receiver<Op>,
    bulk: mpsc::Receiver<Op>,
    /// Bulk writes taken for the group in progress, or left by a group an interactive write
    /// cut short, in the order they came.
    taken: VecDeque<Op>,
    /// The group in progress.
    group: Group,
}

/// What a group has run so far.
#[derive(Debug, Default)]
struct Group {
    /// Writes run (or about to run).
    ran: usize,
    /// Whether one of them was bulk.
    bulk_ran: bool,
    /// An interactive write came after a bulk one: the group takes no more bulk writes.
    closing: bool,
}

impl Writer {
    /// Starts the writer task and its checkpointer on the current runtime, each with its own
    /// connection.
    pub(super) fn start(options: SqliteConnectOptions) -> Self {
        let (interactive, interactive_queue) = mpsc::channel(MAX_GROUP);
        let (bulk, bulk_queue) = mpsc::channel(4 * MAX_GROUP);
        let queues = Queues {
            interactive: interactive_queue,
            bulk: bulk_queue,
            taken: VecDeque::new(),
            group: Group::default(),
        };
        let options = options.pragma("wal_autocheckpoint", "0");
        tokio::spawn(checkpoint(options.clone(), bulk.downgrade()));
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the SQLite writer")
                    .block_on(serve(options, queues));
            })
            .expect("the SQLite writer's thread");
        Self { interactive, bulk }
    }

    /// Runs `work` in a group (the next one that takes `lane`'s writes) and returns its result
    /// once that group is committed. `work` changes the database with one statement at most (see
    /// the module's documentation). Writes that are nobody's walk-in (a drive's, the service's
    /// own housekeeping) go in the bulk lane.
    pub(super) async fn write<R, F>(&self, lane: Priority, work: F) -> Result<R, DbError>
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
        let way_in = match lane {
            Priority::Interactive => &self.interactive,
            Priority::Bulk => &self.bulk,
        };
        way_in
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

async fn serve(options: SqliteConnectOptions, mut queues: Queues) {
    let mut conn: Option<SqliteConnection> = None;
    while let Some(first) = queues.first().await {
        if conn.is_none() {
            match options.connect().await {
                Ok(fresh) => conn = Some(fresh),
                Err(e) => {
                    let message = format!("cannot open the database for writing: {e}");
                    fail_all(queues.abandoned(first), &message);
                    continue;
                }
            }
        }
        let healthy = commit(conn.as_mut().expect("opened above"), first, &mut queues).await;
        if !healthy {
            // Whatever went wrong, the next group starts on a fresh connection.
            conn = None;
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

impl Queues {
    /// Waits for the first write of the next group (an interactive one where both lanes wait,
    /// then the bulk writes a cut-short group left) and takes the bulk writes waiting at that
    /// moment, up to [`MAX_GROUP`]; None once every sender is gone and nothing waits.
    async fn first(&mut self) -> Option<Op> {
        self.group = Group::default();
        let (lane, first) = if let Ok(op) = self.interactive.try_recv() {
            (Priority::Interactive, op)
        } else if let Some(op) = self.taken.pop_front() {
            (Priority::Bulk, op)
        } else {
            tokio::select! {
                biased;
                Some(op) = self.interactive.recv() => (Priority::Interactive, op),
                Some(op) = self.bulk.recv() => (Priority::Bulk, op),
                else => return None,
            }
        };
        while self.taken.len() < MAX_GROUP {
            let Ok(op) = self.bulk.try_recv() else { break };
            self.taken.push_back(op);
        }
        Some(self.count_in(lane, first))
    }

    /// The write to run next in the group, or None when it should commit now: the interactive
    /// writes waiting first, then the bulk writes taken when the group started; once an
    /// interactive write has been taken after a bulk one, no more bulk writes (those left go
    /// first in the next group).
    fn next(&mut self) -> Option<Op> {
        if self.group.ran >= MAX_GROUP {
            return None;
        }
        if let Ok(op) = self.interactive.try_recv() {
            return Some(self.count_in(Priority::Interactive, op));
        }
        if self.group.closing {
            return None;
        }
        let op = self.taken.pop_front()?;
        Some(self.count_in(Priority::Bulk, op))
    }

    /// Counts `op` into the group.
    fn count_in(&mut self, lane: Priority, op: Op) -> Op {
        let group = &mut self.group;
        group.ran += 1;
        match lane {
            Priority::Bulk => group.bulk_ran = true,
            Priority::Interactive => group.closing |= group.bulk_ran,
        }
        op
    }

    /// The group that cannot run: `first` and the bulk writes taken with it.
    fn abandoned(&mut self, first: Op) -> impl Iterator<Item = Op> + '_ {
        std::iter::once(first).chain(self.taken.drain(..))
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

/// Runs a group in one transaction, `first` and then what [`Queues::next`] gives, and answers
/// every write; false when the connection should be replaced.
async fn commit(conn: &mut SqliteConnection, first: Op, queues: &mut Queues) -> bool {
    if let Err(e) = conn.execute("begin immediate").await {
        let message = format!("cannot start a transaction: {e}");
        fail_all(queues.abandoned(first), &message);
        return false;
    }
    let mut done = Vec::new();
    let mut next = Some(first);
    while let Some(Op { work, reply }) = next {
        let out = work(conn).await;
        done.push((reply, out));
        next = queues.next();
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

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqliteJournalMode;

    use super::*;

    /// A writer on a fresh database with a table `writes (name)`, and a connection to read it.
    async fn writer_in(dir: &std::path::Path) -> (Writer, SqliteConnection) {
        let options = SqliteConnectOptions::new()
            .filename(dir.join("writer.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let mut reader = options.connect().await.unwrap();
        reader
            .execute("create table writes (name text not null)")
            .await
            .unwrap();
        (Writer::start(options), reader)
    }

    /// Holds a write in the writer: it says when it has started, and waits for `go`.
    struct Hold {
        started: Option<oneshot::Sender<()>>,
        go: oneshot::Receiver<()>,
    }

    /// A hold, the sender that releases it, and the receiver that says its write has started.
    fn hold() -> (Hold, oneshot::Sender<()>, oneshot::Receiver<()>) {
        let (started, has_started) = oneshot::channel();
        let (release, go) = oneshot::channel();
        let started = Some(started);
        (Hold { started, go }, release, has_started)
    }

    /// Writes `name` into `writes` (once `hold`, when given, lets it).
    fn write_name(
        writer: &Writer,
        lane: Priority,
        name: String,
        hold: Option<Hold>,
    ) -> tokio::task::JoinHandle<Result<(), DbError>> {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer
                .write(lane, move |conn| {
                    Box::pin(async move {
                        if let Some(Hold { started, go }) = hold {
                            let _ = started.map(|s| s.send(()));
                            let _ = go.await;
                        }
                        sqlx::query("insert into writes (name) values (?1)")
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .await
        })
    }

    async fn names(reader: &mut SqliteConnection) -> Vec<String> {
        sqlx::query_scalar("select name from writes order by rowid")
            .fetch_all(reader)
            .await
            .unwrap()
    }

    /// Waits until `queue` holds `count` writes.
    async fn queued(queue: &mpsc::Sender<Op>, count: usize) {
        while queue.max_capacity() - queue.capacity() < count {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interactive_write_commits_before_the_bulk_writes_queued_ahead_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, mut reader) = writer_in(dir.path()).await;

        // While a clinic's write holds the writer, a drive's 201 writes queue; the first two of
        // them will hold the groups they run in.
        let (clinic_hold, release_clinic, clinic_started) = hold();
        let clinic = write_name(
            &writer,
            Priority::Interactive,
            "clinic".into(),
            Some(clinic_hold),
        );
        clinic_started.await.unwrap();
        let (first_hold, release_first, first_started) = hold();
        let (second_hold, release_second, _) = hold();
        let mut drive = vec![write_name(
            &writer,
            Priority::Bulk,
            "drive-0".into(),
            Some(first_hold),
        )];
        queued(&writer.bulk, 1).await;
        drive.push(write_name(
            &writer,
            Priority::Bulk,
            "drive-1".into(),
            Some(second_hold),
        ));
        queued(&writer.bulk, 2).await;
        drive.extend(
            (2..=200).map(|i| write_name(&writer, Priority::Bulk, format!("drive-{i}"), None)),
        );
        queued(&writer.bulk, 201).await;
        release_clinic.send(()).unwrap();
        clinic.await.unwrap().unwrap();

        // The drive's group has started; a walk-in's write arrives.
        first_started.await.unwrap();
        let walk_in = write_name(&writer, Priority::Interactive, "walk-in".into(), None);
        queued(&writer.interactive, 1).await;
        release_first.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), walk_in)
            .await
            .expect("the walk-in's write was committed without waiting for the drive's")
            .unwrap()
            .unwrap();
        assert_eq!(names(&mut reader).await, ["clinic", "drive-0", "walk-in"]);

        release_second.send(()).unwrap();
        for write in drive {
            write.await.unwrap().unwrap();
        }
        let written = names(&mut reader).await;
        assert_eq!(written.len(), 203);
        assert_eq!(written[3], "drive-1", "the drive's writes keep their order");
    }
}
