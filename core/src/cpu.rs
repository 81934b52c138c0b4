//! CPU time by lane.
//!
//! The queues put a clinic's job ahead of a drive's backlog, but once both are running, a
//! drive's decoding and model runs share the cores with the clinic's. Here a drive's CPU work
//! (the bulk lane) runs on threads of its own, which the kernel can be told to schedule after
//! everything else. On Linux
//! the nice value is a per-thread attribute, and bulk threads run `inference.bulk_nice` steps
//! below the process ([`set_bulk_nice`]): at 10, when a clinic's image and a drive's batch both
//! want the cores, the clinic's work gets about nine tenths of them (the scheduler's weights are
//! 1024 and 110). No core is held back: with no interactive work, the drive has every core.
//!
//! It is not free, so it is off (0) unless configured. A niced thread is preempted whenever
//! any thread of normal priority wakes (the API's, the database's, a client's on the same
//! machine), often in the middle of a model run whose other intra-op thread then waits for it:
//! a drive alone on a 2-core machine with its client took about a fifth more CPU per image.
//!
//! - [`run`]: a lane's blocking work (decoding an upload, preparing and screening a batch):
//!   interactive work on Tokio's blocking pool, bulk work on a blocking pool of low-priority
//!   threads;
//! - [`BulkThreads`]: ONNX Runtime's intra-op threads for a model's bulk session.
//!
//! A thread's priority is lowered without privilege but cannot be raised again without one, so
//! bulk threads are kept apart and never lent to interactive work. Elsewhere than on Linux (where
//! the nice value is the whole process's) the lanes share the cores as equals.

use std::any::Any;
use std::sync::OnceLock;

use crate::job::Priority;

/// How many steps below the process the bulk lane's threads are scheduled (0-19), once per
/// process: `inference.bulk_nice`, 0 until set.
static BULK_NICE: OnceLock<i32> = OnceLock::new();

/// Sets how many steps below the process the bulk lane's threads run, before the first of them
/// starts. The first value set stays for the process's life (a thread's priority, once lowered,
/// cannot be raised without privilege); a later, different one is logged and ignored.
pub fn set_bulk_nice(nice: i32) {
    let kept = *BULK_NICE.get_or_init(|| nice.clamp(0, 19));
    if kept != nice {
        tracing::warn!(
            kept,
            ignored = nice,
            "the bulk lane's CPU priority is set once per process; keeping the first"
        );
    }
}

fn bulk_nice() -> i32 {
    BULK_NICE.get().copied().unwrap_or(0)
}

/// Blocking work that ended without its result: it panicked, or its thread went away.
#[derive(Debug, thiserror::Error)]
#[error("the work stopped before it finished: {0}")]
pub struct Stopped(String);

/// Runs blocking `work` on a thread of `lane`'s CPU priority and answers its result.
pub async fn run<T, F>(lane: Priority, work: F) -> Result<T, Stopped>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let work = match lane {
        Priority::Interactive => tokio::task::spawn_blocking(work),
        Priority::Bulk => bulk_runtime().spawn_blocking(work),
    };
    work.await.map_err(|e| match e.try_into_panic() {
        Ok(panic) => Stopped(panic_message(panic.as_ref())),
        Err(e) => Stopped(e.to_string()),
    })
}

/// Bulk work runs on the blocking pool of a runtime of its own (threads made as the work
/// needs them, and let go when idle, like Tokio's own), whose every thread lowers its priority
/// when it starts. Nothing runs on the runtime's one worker thread.
fn bulk_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bulk")
            .on_thread_start(lower_priority)
            .build()
            .expect("cannot start the bulk lane's threads")
    })
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "it panicked".to_owned())
}

/// ONNX Runtime's intra-op threads of a bulk session, at the bulk lane's priority (see
/// `SessionBuilder::with_thread_manager`).
#[derive(Debug, Default)]
pub(crate) struct BulkThreads;

impl ort::environment::ThreadManager for BulkThreads {
    type Thread = std::thread::JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<Self::Thread> {
        std::thread::Builder::new()
            .name("ort-bulk".to_owned())
            .spawn(move || {
                lower_priority();
                work();
            })
            .map_err(|e| ort::Error::new(format!("cannot start an ONNX Runtime thread: {e}")))
    }

    fn join(thread: Self::Thread) -> ort::Result<()> {
        thread
            .join()
            .map_err(|panic| ort::Error::new(panic_message(panic.as_ref())))
    }
}

/// Schedules the calling thread [`set_bulk_nice`] steps below the process (its main thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpid, getpriority_process, setpriority_process};
        let nice = bulk_nice();
        if nice == 0 {
            return;
        }
        let lowered = getpriority_process(Some(getpid())).and_then(|process| {
            let target = (process + nice).min(19);
            if getpriority_process(None)? < target {
                setpriority_process(None, target)?;
            }
            Ok(())
        });
        if let Err(e) = lowered {
            tracing::warn!(error = %e, "cannot lower a bulk thread's priority; bulk and interactive work share the cores as equals");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(crate) mod tests {
    use super::*;

    /// The process's nice value: its main thread's (Linux).
    pub(crate) fn process_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::process::getpid())).unwrap()
    }

    /// The calling thread's nice value (Linux).
    fn this_threads_nice() -> i32 {
        rustix::process::getpriority_process(None).unwrap()
    }

    /// What every test of this crate that lowers the bulk lane sets (the first value stays).
    pub(crate) const TEST_BULK_NICE: i32 = 10;

    #[tokio::test]
    async fn bulk_work_runs_below_the_process_and_interactive_work_at_its_level() {
        set_bulk_nice(TEST_BULK_NICE);
        let expected = (process_nice() + TEST_BULK_NICE).min(19);
        for _ in 0..8 {
            assert_eq!(
                run(Priority::Bulk, this_threads_nice).await.unwrap(),
                expected
            );
        }
        assert_eq!(
            run(Priority::Interactive, this_threads_nice).await.unwrap(),
            process_nice()
        );
    }

    #[tokio::test]
    async fn a_panic_in_bulk_work_is_an_error_and_bulk_work_goes_on() {
        set_bulk_nice(TEST_BULK_NICE);
        for _ in 0..3 {
            let err = run(Priority::Bulk, || -> u32 { panic!("a damaged batch") })
                .await
                .unwrap_err();
            assert!(err.to_string().contains("a damaged batch"), "{err}");
        }
        assert_eq!(run(Priority::Bulk, || 7).await.unwrap(), 7);
    }
}
