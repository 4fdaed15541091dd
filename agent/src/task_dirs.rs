//! Where a leased task runs: its working directory (also its `$PIPE_DIR`) inside the agent's work directory.
//!
//! Two layouts:
//! - **per-task**: each task in `<work dir>/task-<id>`, so tasks run side by side; the directory is removed after
//!   a success and kept after a failure (and for a retry, which resumes in it).
//! - **shared**: the work directory itself, as in the original pod, where every step wrote to `/mnt/pipe/...`
//!   and the next step read relative names from the same place. One task at a time: the directory is emptied
//!   before each task (so a redelivery after a crash starts clean) and after a successful one, always keeping
//!   the [reserved entries](TaskDirs::is_reserved): the pod's socket directory when it is inside, `results/`,
//!   the direct-run API's `run-*` directories, `lost+found` and the marker [`MARKER`].
//!
//! `auto` picks shared when the agent sends its steps to pod executors (`--pod-dir`, or an executor given as
//! `NAME=unix://...`) and runs one task at a time; per-task otherwise.
//!
//! Invariant: the shared layout never empties a directory it has not taken. At start the work directory must
//! hold nothing but reserved entries, or carry the marker, which is written then and names the task that runs
//! (or ran last): a redelivery of that task with `resume: true` finds its files in place.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// The shared layout's marker in the work directory: present once an agent has taken the directory; holds the
/// id of the task whose files are there (running, or failed and kept until the next task), empty once they are
/// removed.
pub const MARKER: &str = ".pm-shared";

/// Chained tasks keep files for their follow-ups in `<work dir>/results/<id>` ([`results_dir`]).
pub const RESULTS: &str = "results";

/// How many unexpected entries a refusal names.
const NAMED_IN_REFUSAL: usize = 5;

/// `--task-dirs`: which layout the agent uses.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskDirsMode {
    /// Shared with pod executors and one task at a time, per-task otherwise.
    #[default]
    Auto,
    /// The work directory itself, emptied before each task (one task at a time).
    Shared,
    /// `<work dir>/task-<id>`, tasks side by side.
    PerTask,
}

/// Why the work directory cannot be used as asked.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The shared layout runs one task at a time.
    #[error(
        "--task-dirs shared runs one task at a time in the work directory itself, but --concurrency is {0}: \
         use --concurrency 1, or --task-dirs per-task"
    )]
    SharedConcurrency(u32),
    /// The pod's socket directory is the work directory: emptying it would remove the sockets.
    #[error(
        "--task-dirs shared empties the work directory {0} between tasks, which is also where the executors' \
         sockets are: put them in a sub-directory (e.g. --pod-dir {0}/.pm), or use --task-dirs per-task"
    )]
    PodDirIsWorkDir(PathBuf),
    /// The work directory holds someone else's files.
    #[error(
        "--task-dirs shared empties the work directory {dir} before each task, but it holds {entries} and no \
         pm-agent has taken it (it has no {MARKER} file): empty it or choose another --work-dir, or use \
         --task-dirs per-task"
    )]
    Foreign {
        /// The work directory.
        dir: PathBuf,
        /// The first few entries that are not reserved, quoted, comma-separated.
        entries: String,
    },
    /// The file system refused.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

/// The agent's task directories: the layout chosen at start, and the work directory they live in.
#[derive(Debug, Clone)]
pub struct TaskDirs {
    root: PathBuf,
    shared: Option<Arc<Shared>>,
}

/// The shared layout's state.
#[derive(Debug)]
struct Shared {
    /// Names directly under the work directory that are never removed (besides the fixed ones).
    reserved: BTreeSet<OsString>,
    /// Held by the running task: one at a time, whatever the scheduler sends.
    turn: Arc<Mutex<()>>,
}

/// A task's working directory, held while the task runs and reports. In the shared layout it holds the
/// directory's turn: the next task waits until this one is dropped.
#[derive(Debug)]
pub struct TaskDir {
    path: PathBuf,
    dirs: TaskDirs,
    /// Shared layout: the directory's turn, given back when this is dropped.
    _turn: Option<OwnedMutexGuard<()>>,
}

impl TaskDirs {
    /// Opens the work directory `root` (absolute, existing) in the layout `mode` asks for. `pods` are the pod
    /// executors' socket directories and sockets (whatever of them lies inside `root` is kept); `concurrency`
    /// is how many tasks run at once. The shared layout takes the directory here (see the module doc): it
    /// refuses one that holds anything else, and writes the marker.
    pub fn open(mode: TaskDirsMode, root: PathBuf, pods: &[&Path], concurrency: u32) -> Result<TaskDirs, LayoutError> {
        let shared = match mode {
            TaskDirsMode::PerTask => false,
            TaskDirsMode::Shared => true,
            TaskDirsMode::Auto => !pods.is_empty() && concurrency == 1,
        };
        if !shared {
            return Ok(TaskDirs { root, shared: None });
        }
        if concurrency > 1 {
            return Err(LayoutError::SharedConcurrency(concurrency));
        }
        let mut reserved = BTreeSet::new();
        for pod in pods {
            match first_component_inside(&root, pod) {
                Inside::No => {}
                Inside::Is => return Err(LayoutError::PodDirIsWorkDir(root)),
                Inside::Under(name) => {
                    reserved.insert(name);
                }
            }
        }
        let dirs = TaskDirs { root, shared: Some(Arc::new(Shared { reserved, turn: Arc::default() })) };
        dirs.take()?;
        Ok(dirs)
    }

    /// The work directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether tasks run in the work directory itself.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether `name`, directly under the work directory, survives the shared layout's emptying.
    pub fn is_reserved(&self, name: &std::ffi::OsStr) -> bool {
        let fixed = name == MARKER || name == RESULTS || name == "lost+found";
        let direct_run = name.to_str().is_some_and(|n| n.starts_with("run-"));
        fixed || direct_run || self.shared.as_ref().is_some_and(|s| s.reserved.contains(name))
    }

    /// Shared layout: refuses a directory that holds anything but reserved entries and has no marker;
    /// otherwise makes sure the marker is there.
    fn take(&self) -> Result<(), LayoutError> {
        let marker = self.root.join(MARKER);
        if marker.exists() {
            return Ok(());
        }
        let io = |e| LayoutError::Io(self.root.clone(), e);
        let mut foreign = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            if !self.is_reserved(&name) {
                foreign.push(name.to_string_lossy().into_owned());
            }
        }
        if !foreign.is_empty() {
            foreign.sort();
            let more = foreign.len().saturating_sub(NAMED_IN_REFUSAL);
            let mut entries: Vec<String> = foreign.iter().take(NAMED_IN_REFUSAL).map(|n| format!("`{n}`")).collect();
            if more > 0 {
                entries.push(format!("{more} more"));
            }
            return Err(LayoutError::Foreign { dir: self.root.clone(), entries: entries.join(", ") });
        }
        std::fs::write(&marker, "").map_err(|e| LayoutError::Io(marker, e))
    }

    /// The directory task `task_id` runs in, ready for it. Per-task: `<work dir>/task-<id>` (the runner creates
    /// it; a retry finds what the failed attempt left). Shared: waits for the directory's turn, then empties it,
    /// unless `resume` is set and the marker says this same task ran there last (its retry picks up its files).
    pub async fn enter(&self, task_id: u64, resume: bool) -> Result<TaskDir, LayoutError> {
        let Some(shared) = &self.shared else {
            return Ok(TaskDir { path: task_dir(&self.root, task_id), dirs: self.clone(), _turn: None });
        };
        let turn = shared.turn.clone().lock_owned().await;
        let marker = self.root.join(MARKER);
        let last = tokio::fs::read_to_string(&marker).await.ok().and_then(|s| s.trim().parse::<u64>().ok());
        if !(resume && last == Some(task_id)) {
            self.empty().await?;
        }
        // Written after the emptying: a crash in between leaves the old id, and the next task empties again.
        tokio::fs::write(&marker, task_id.to_string()).await.map_err(|e| LayoutError::Io(marker, e))?;
        Ok(TaskDir { path: self.root.clone(), dirs: self.clone(), _turn: Some(turn) })
    }

    /// Removes every entry of the work directory that is not reserved.
    async fn empty(&self) -> Result<(), LayoutError> {
        let io = |e| LayoutError::Io(self.root.clone(), e);
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(io)?;
        while let Some(entry) = entries.next_entry().await.map_err(io)? {
            if self.is_reserved(&entry.file_name()) {
                continue;
            }
            let path = entry.path();
            // Not followed: a symbolic link is removed, never what it points to.
            let is_dir = tokio::fs::symlink_metadata(&path).await.is_ok_and(|m| m.is_dir());
            let removed =
                if is_dir { tokio::fs::remove_dir_all(&path).await } else { tokio::fs::remove_file(&path).await };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LayoutError::Io(path, e)),
            }
        }
        Ok(())
    }
}

impl TaskDir {
    /// Where the task's commands run (`$PIPE_DIR`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Cleans up after a success: per-task, removes the directory; shared, empties the work directory and
    /// clears the marker's task id. Errors are logged: the task is done either way.
    pub async fn remove(self) {
        if !self.dirs.is_shared() {
            match tokio::fs::remove_dir_all(&self.path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(dir = %self.path.display(), "cannot remove the task directory: {e}"),
            }
            return;
        }
        let cleared = async {
            self.dirs.empty().await?;
            let marker = self.path.join(MARKER);
            tokio::fs::write(&marker, "").await.map_err(|e| LayoutError::Io(marker, e))
        };
        if let Err(e) = cleared.await {
            tracing::warn!("cannot empty the work directory after the task (the next task does): {e}");
        }
    }
}

/// Where `path` lies relative to `root`.
enum Inside {
    /// Elsewhere.
    No,
    /// It is `root`.
    Is,
    /// Under `root`, in this entry of it.
    Under(OsString),
}

/// Compares `path` (made absolute, with its existing part's links resolved, as `root`'s are) with `root`.
fn first_component_inside(root: &Path, path: &Path) -> Inside {
    let path = resolved(path);
    match path.strip_prefix(root) {
        Err(_) => Inside::No,
        Ok(rest) => match rest.components().next() {
            None => Inside::Is,
            Some(Component::Normal(name)) => Inside::Under(name.to_os_string()),
            Some(_) => Inside::No,
        },
    }
}

/// `path` with the links of its longest existing ancestor resolved (a socket directory may not exist yet).
fn resolved(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut base = absolute.as_path();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = base.canonicalize() {
            return tail.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                base = parent;
            }
            _ => return absolute,
        }
    }
}

/// The per-task layout's directory of a task: `root/task-<id>`.
pub fn task_dir(root: &Path, task_id: u64) -> PathBuf {
    task_dir_named(root, &format!("task-{task_id}"))
}

/// A run's own directory under `root` (`task-<id>`, or the direct-run API's `run-<id>`).
pub fn task_dir_named(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// Where a task of a flow keeps files for its follow-ups: `<work dir>/results/<task id>`, kept when the task's
/// directory is removed or emptied.
pub fn results_dir(work_root: &Path, task_id: u64) -> PathBuf {
    work_root.join(RESULTS).join(task_id.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// A work directory holding a pod directory `.pm` with a socket-like file.
    fn pod_volume() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let pods = root.join(".pm");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::write(pods.join("wget.sock"), "").unwrap();
        (tmp, root, pods)
    }

    #[test]
    fn auto_is_shared_only_with_pod_executors_one_task_at_a_time() {
        let (_t, root, pods) = pod_volume();
        let open = |mode, pods: &[&Path], n| TaskDirs::open(mode, root.clone(), pods, n).unwrap().is_shared();
        assert!(open(TaskDirsMode::Auto, &[pods.as_path()], 1));
        assert!(!open(TaskDirsMode::Auto, &[pods.as_path()], 2));
        assert!(!open(TaskDirsMode::Auto, &[], 1), "local executors: per-task");
        assert!(!open(TaskDirsMode::PerTask, &[pods.as_path()], 1));
        assert!(open(TaskDirsMode::Shared, &[], 1));
        // A socket named outside the work directory reserves nothing in it, and still counts as a pod.
        assert!(open(TaskDirsMode::Auto, &[Path::new("/elsewhere/x.sock")], 1));
    }

    #[test]
    fn shared_is_refused_with_more_than_one_task_at_a_time_or_on_the_socket_directory() {
        let (_t, root, pods) = pod_volume();
        let e = TaskDirs::open(TaskDirsMode::Shared, root.clone(), &[pods.as_path()], 2).unwrap_err();
        assert!(matches!(e, LayoutError::SharedConcurrency(2)), "{e}");
        assert!(e.to_string().contains("--concurrency 1"), "{e}");
        let e = TaskDirs::open(TaskDirsMode::Shared, root.clone(), &[root.as_path()], 1).unwrap_err();
        assert!(matches!(e, LayoutError::PodDirIsWorkDir(_)), "{e}");
        assert!(!root.join(MARKER).exists(), "nothing taken");
    }

    #[test]
    fn the_marker_guard_refuses_a_directory_holding_someone_elses_files() {
        let (_t, root, pods) = pod_volume();
        std::fs::write(root.join("thesis.tex"), "years of work").unwrap();
        std::fs::create_dir(root.join("task-7")).unwrap();
        let e = TaskDirs::open(TaskDirsMode::Shared, root.clone(), &[pods.as_path()], 1).unwrap_err();
        let why = e.to_string();
        assert!(matches!(e, LayoutError::Foreign { .. }), "{why}");
        assert!(why.contains("`task-7`, `thesis.tex`") && why.contains(MARKER), "{why}");
        assert_eq!(std::fs::read_to_string(root.join("thesis.tex")).unwrap(), "years of work");
        assert!(!root.join(MARKER).exists());

        // Once an agent has taken it (the marker is there), whatever a task left is its own.
        std::fs::write(root.join(MARKER), "").unwrap();
        assert!(TaskDirs::open(TaskDirsMode::Shared, root.clone(), &[pods.as_path()], 1).unwrap().is_shared());
    }

    #[test]
    fn a_directory_with_only_reserved_entries_is_taken_and_marked() {
        let (_t, root, pods) = pod_volume();
        for dir in [RESULTS, "run-1", "lost+found"] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        let dirs = TaskDirs::open(TaskDirsMode::Auto, root.clone(), &[pods.as_path()], 1).unwrap();
        assert!(dirs.is_shared());
        assert_eq!(std::fs::read_to_string(root.join(MARKER)).unwrap(), "");
    }

    #[tokio::test]
    async fn emptying_keeps_the_reserved_entries() {
        let (_t, root, pods) = pod_volume();
        let dirs = TaskDirs::open(TaskDirsMode::Shared, root.clone(), &[pods.as_path()], 1).unwrap();
        for dir in [RESULTS, "run-1", "lost+found", "sub"] {
            std::fs::create_dir(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join("f"), "x").unwrap();
        }
        std::fs::write(root.join("page.png"), "png").unwrap();
        std::fs::write(root.join(".hidden"), "x").unwrap();
        std::os::unix::fs::symlink(root.join(RESULTS), root.join("link")).unwrap();

        let dir = dirs.enter(3, false).await.unwrap();
        assert_eq!(dir.path(), root);
        assert_eq!(names(&root), [".pm", MARKER, "lost+found", RESULTS, "run-1"]);
        assert_eq!(names(&pods), ["wget.sock"]);
        assert_eq!(names(&root.join(RESULTS)), ["f"], "the link was removed, not what it points to");
        assert_eq!(std::fs::read_to_string(root.join(MARKER)).unwrap(), "3");

        std::fs::write(root.join("3.txt"), "out").unwrap();
        dir.remove().await;
        assert_eq!(names(&root), [".pm", MARKER, "lost+found", RESULTS, "run-1"]);
        assert_eq!(std::fs::read_to_string(root.join(MARKER)).unwrap(), "");
    }

    #[tokio::test]
    async fn a_resumed_task_finds_its_files_and_any_other_task_starts_clean() {
        let (_t, root, pods) = pod_volume();
        let dirs = TaskDirs::open(TaskDirsMode::Shared, root.clone(), &[pods.as_path()], 1).unwrap();
        let dir = dirs.enter(5, true).await.unwrap();
        std::fs::write(root.join("step1.out"), "x").unwrap();
        drop(dir); // failed: kept
        assert!(root.join("step1.out").exists());

        // The same task again, resuming: its files stay.
        drop(dirs.enter(5, true).await.unwrap());
        assert!(root.join("step1.out").exists());
        // The same task without `resume`: starts over.
        drop(dirs.enter(5, false).await.unwrap());
        assert!(!root.join("step1.out").exists());
        // Another task, even resuming: starts clean.
        std::fs::write(root.join("step1.out"), "x").unwrap();
        drop(dirs.enter(6, true).await.unwrap());
        assert!(!root.join("step1.out").exists());
    }

    #[tokio::test]
    async fn shared_tasks_take_turns() {
        let (_t, root, pods) = pod_volume();
        let dirs = TaskDirs::open(TaskDirsMode::Shared, root, &[pods.as_path()], 1).unwrap();
        let first = dirs.enter(1, false).await.unwrap();
        let second = tokio::spawn({
            let dirs = dirs.clone();
            async move { dirs.enter(2, false).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "the second task waits for the first");
        drop(first);
        second.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn per_task_directories_are_named_by_task_and_removed_after_success() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = TaskDirs::open(TaskDirsMode::PerTask, tmp.path().to_path_buf(), &[], 4).unwrap();
        assert!(!tmp.path().join(MARKER).exists());
        let dir = dirs.enter(9, false).await.unwrap();
        assert_eq!(dir.path(), tmp.path().join("task-9"));
        std::fs::create_dir(dir.path()).unwrap();
        dir.remove().await;
        assert!(!tmp.path().join("task-9").exists());
        assert_eq!(results_dir(tmp.path(), 9), tmp.path().join("results/9"));
    }
}
