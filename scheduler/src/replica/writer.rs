//! The raft log's group-commit thread: the one owner of [`LogFiles`].
//!
//! The same shape as the task log's committer (`store/committer.rs`): every partition's group hands its
//! encoded frames over and carries on; the thread takes everything that queued while its previous sync ran,
//! appends it all, syncs **once**, and only then reports each job persisted. A job is reported persisted only
//! after the `fdatasync` that covers it returned: raft counts a persisted entry towards a quorum and a
//! persisted vote as given, so an early report could elect two leaders or lose an acknowledged entry.
//!
//! Jobs complete in the order they were submitted, which raft-rs's asynchronous mode relies on
//! (`RawNode::on_persist_ready` of a later ready implies the earlier ones).

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use super::log_file::{LogFileError, LogFiles};

/// Why a job was not persisted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// Writing or syncing failed; the log is poisoned from then on.
    #[error(transparent)]
    Failed(Arc<LogFileError>),
    /// The writer is gone (the node is stopping).
    #[error("the raft log writer has stopped")]
    Closed,
}

/// Called once on the writer thread with the job's outcome; keep it cheap (send on a channel).
pub type Persisted = Box<dyn FnOnce(Result<(), WriteError>) + Send>;

struct Job {
    bytes: Vec<u8>,
    done: Option<Persisted>,
}

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Err(WriteError::Closed));
        }
    }
}

/// Submits jobs to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: Sender<Job>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle").finish_non_exhaustive()
    }
}

impl WriterHandle {
    /// Queues encoded frames; `done` runs once they are durable (or failed). An empty job still completes
    /// in order, after every job before it is durable.
    pub fn submit(&self, bytes: Vec<u8>, done: Persisted) {
        let _ = self.tx.send(Job { bytes, done: Some(done) });
    }
}

/// Owns the writer thread; it stops when every handle is dropped.
#[derive(Debug)]
pub struct Writer {
    handle: Option<WriterHandle>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread (`pm-raft-log`), which takes `files`.
    pub fn start(files: LogFiles) -> std::io::Result<Writer> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = thread::Builder::new().name("pm-raft-log".into()).spawn(move || run(files, rx))?;
        Ok(Writer { handle: Some(WriterHandle { tx }), thread: Some(thread) })
    }

    /// A handle to submit jobs.
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone().expect("the handle is only taken when the writer is dropped")
    }
}

impl Drop for Writer {
    /// Drops this handle and waits for the thread, which ends once every other handle is gone too.
    fn drop(&mut self) {
        self.handle = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Largest number of jobs in one group, bounding the wait of the first.
const MAX_GROUP: usize = 4096;

fn run(mut files: LogFiles, rx: Receiver<Job>) {
    let mut group: Vec<Job> = Vec::new();
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut result = Ok(());
        for job in &group {
            if let Err(e) = files.append(&job.bytes) {
                result = Err(e);
                break;
            }
        }
        // A group of empty jobs (messages that only wait for earlier writes, which earlier groups synced)
        // needs no sync: an idle follower's heartbeat answers cost no fdatasync.
        if group.iter().any(|j| !j.bytes.is_empty()) {
            result = result.and_then(|()| files.sync());
        }
        let result = result.map_err(|e| WriteError::Failed(Arc::new(e)));
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log write failed");
        }
        for mut job in group.drain(..) {
            if let Some(done) = job.done.take() {
                done(result.clone());
            }
        }
    }
}
