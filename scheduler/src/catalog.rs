//! Applications and their pipeline templates, stored by the node (see docs/apps.md).
//!
//! Each application is one JSON file, `<data>/apps/<name>.json` (`{"version": N, "application": {...}}`),
//! written before a change is acknowledged: a temporary file, fsync, rename over the old one, fsync of the
//! directory. A crash leaves either the old or the new file, never a mix. The catalog is small and changes
//! rarely, so it lives beside the task log rather than in it: the log's compaction never has to carry it,
//! and both store backends share it.
//!
//! In memory every pipeline is kept compiled ([`Compiled`]) in a map behind a read-mostly lock: a template
//! submit takes the read lock for one lookup and clones an `Arc`. Writers are serialised, do their file I/O on
//! the blocking pool, and swap the map entry only once the file is durable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use pm_protocol::pb;
use pm_protocol::ErrorCode;
use pm_task::template::{validate_name, AppDef, Compiled, PipelineDef, TemplateError};
use serde::{Deserialize, Serialize};

use crate::durable_file::write_durably;

/// Bounds on what the catalog holds.
#[derive(Debug, Clone, Copy)]
pub struct CatalogLimits {
    /// Most applications (`--max-apps`).
    pub max_apps: usize,
    /// Most pipelines per application (`--max-pipelines-per-app`).
    pub max_pipelines: usize,
    /// Largest application document, bytes (`--max-app-bytes`).
    pub max_app_bytes: usize,
}

/// Why a catalog change or lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// No such application or pipeline.
    #[error("{0}")]
    NotFound(String),
    /// Create of something that exists.
    #[error("{0}")]
    Exists(String),
    /// The definition is refused.
    #[error(transparent)]
    Invalid(#[from] TemplateError),
    /// A limit of [`CatalogLimits`].
    #[error("{0}")]
    Limit(String),
    /// Reading or writing the files failed; a failed write changed nothing.
    #[error("application store: {0}")]
    Io(String),
}

impl CatalogError {
    /// The wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            CatalogError::NotFound(_) => ErrorCode::NotFound,
            CatalogError::Exists(_) => ErrorCode::AlreadyExists,
            CatalogError::Invalid(_) => ErrorCode::InvalidTask,
            CatalogError::Limit(_) => ErrorCode::LimitExceeded,
            CatalogError::Io(_) => ErrorCode::StoreFailed,
        }
    }
}

/// One stored application, its pipelines compiled.
#[derive(Debug)]
pub struct StoredApp {
    /// The document as given (canonical JSON when serialised).
    pub def: AppDef,
    /// Grows with every change.
    pub version: u64,
    /// Compiled pipelines by name.
    pub pipelines: BTreeMap<String, Arc<Compiled>>,
    /// Pipelines read from disk that this version refuses (a rule became stricter), with why: their submits
    /// are refused with that reason until they are replaced.
    pub disabled: BTreeMap<String, String>,
}

impl StoredApp {
    fn new(def: AppDef, version: u64) -> Result<StoredApp, TemplateError> {
        def.check()?;
        let mut pipelines = BTreeMap::new();
        for p in &def.pipelines {
            pipelines.insert(p.name.clone(), Arc::new(Compiled::new(&def.name, p)?));
        }
        Ok(StoredApp { def, version, pipelines, disabled: BTreeMap::new() })
    }

    /// As stored on disk: a pipeline this version refuses is kept, disabled, rather than stopping the node.
    fn load(def: AppDef, version: u64) -> Result<StoredApp, TemplateError> {
        validate_name("application", &def.name)?;
        let (mut pipelines, mut disabled) = (BTreeMap::new(), BTreeMap::new());
        for p in &def.pipelines {
            match Compiled::new(&def.name, p) {
                Ok(c) => {
                    pipelines.insert(p.name.clone(), Arc::new(c));
                }
                Err(e) => {
                    tracing::warn!(app = %def.name, pipeline = %p.name, "pipeline disabled: {e}");
                    disabled.insert(p.name.clone(), e.to_string());
                }
            }
        }
        Ok(StoredApp { def, version, pipelines, disabled })
    }

    /// The wire form; with the document when `document` is set.
    pub fn info(&self, document: bool) -> pb::AppInfo {
        let pipelines = self
            .def
            .pipelines
            .iter()
            .filter_map(|p| self.pipelines.get(&p.name).map(|c| (p, c)))
            .map(|(p, c)| pb::PipelineInfo {
                name: p.name.clone(),
                queue: c.queue.clone(),
                params: c.param_names(),
                required: c.required_names(),
            })
            .collect();
        let document =
            if document { serde_json::to_vec(&self.def).unwrap_or_default().into() } else { Default::default() };
        pb::AppInfo { name: self.def.name.clone(), version: self.version, pipelines, document }
    }
}

/// One file of `<data>/apps/`: an application, or the record of its deletion (kept for
/// [`TOMBSTONE_KEEP`] so that a member that missed the deletion does not bring it back).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AppFile {
    version: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    application: AppDef,
}

/// How long the record of a deletion is kept.
pub const TOMBSTONE_KEEP: Duration = Duration::from_secs(7 * 86_400);
/// How far ahead of this node's clock another member's record may be: a version beyond it is refused, so a
/// wrong clock (or a forged record) cannot pin an application for ever.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(86_400);

/// The node's applications.
pub struct Catalog {
    dir: PathBuf,
    limits: CatalogLimits,
    apps: RwLock<BTreeMap<String, Arc<StoredApp>>>,
    /// Deleted applications: name → version of the deletion.
    deleted: RwLock<BTreeMap<String, u64>>,
    /// Serialises writers: each reads the map, writes its file, then updates the map.
    write: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("dir", &self.dir).field("apps", &self.apps.read().len()).finish()
    }
}

/// A change to apply under the write lock.
enum Change {
    PutApp { def: AppDef, replace: bool },
    PutPipeline { app: String, def: PipelineDef, replace: bool },
    DeleteApp(String),
    DeletePipeline { app: String, pipeline: String },
}

impl Catalog {
    /// Opens (creating if needed) `dir` and loads every application in it. A file that cannot be read or
    /// whose definition is refused stops the node with its path: it was written by this node, so it is a
    /// sign of tampering or of a disk fault, not something to skip silently.
    pub fn open(dir: &Path, limits: CatalogLimits) -> Result<Catalog, CatalogError> {
        std::fs::create_dir_all(dir).map_err(|e| CatalogError::Io(format!("{}: {e}", dir.display())))?;
        let (mut apps, mut deleted) = (BTreeMap::new(), BTreeMap::new());
        let entries = std::fs::read_dir(dir).map_err(|e| CatalogError::Io(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry.map_err(|e| CatalogError::Io(format!("{}: {e}", dir.display())))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if name.ends_with(".tmp") {
                // An interrupted write: the rename never happened, so the old file (if any) is current.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else { continue };
            let bytes = std::fs::read(&path).map_err(|e| CatalogError::Io(format!("{}: {e}", path.display())))?;
            let file: AppFile =
                serde_json::from_slice(&bytes).map_err(|e| CatalogError::Io(format!("{}: {e}", path.display())))?;
            if file.deleted {
                if now_ms().saturating_sub(file.version) > TOMBSTONE_KEEP.as_millis() as u64 {
                    let _ = std::fs::remove_file(&path);
                } else {
                    deleted.insert(stem.to_string(), file.version);
                }
                continue;
            }
            if file.application.name != stem {
                let why = format!("{}: holds application {:?}", path.display(), file.application.name);
                return Err(CatalogError::Io(why));
            }
            let app = StoredApp::load(file.application, file.version)
                .map_err(|e| CatalogError::Io(format!("{}: {e}", path.display())))?;
            apps.insert(stem.to_string(), Arc::new(app));
        }
        Ok(Catalog {
            dir: dir.to_path_buf(),
            limits,
            apps: RwLock::new(apps),
            deleted: RwLock::new(deleted),
            write: tokio::sync::Mutex::new(()),
        })
    }

    /// How many applications are stored.
    pub fn len(&self) -> usize {
        self.apps.read().len()
    }

    /// True when no application is stored.
    pub fn is_empty(&self) -> bool {
        self.apps.read().is_empty()
    }

    /// One application.
    pub fn get(&self, app: &str) -> Option<Arc<StoredApp>> {
        self.apps.read().get(app).cloned()
    }

    /// Every application, by name.
    pub fn list(&self) -> Vec<Arc<StoredApp>> {
        self.apps.read().values().cloned().collect()
    }

    /// One compiled pipeline (the template submit path).
    pub fn pipeline(&self, app: &str, pipeline: &str) -> Result<Arc<Compiled>, CatalogError> {
        let apps = self.apps.read();
        let Some(a) = apps.get(app) else {
            return Err(CatalogError::NotFound(format!("no application {app:?}")));
        };
        if let Some(why) = a.disabled.get(pipeline) {
            return Err(CatalogError::Invalid(TemplateError::Invalid(format!(
                "pipeline {app}/{pipeline} is disabled: this version refuses its template ({why}); replace it"
            ))));
        }
        a.pipelines
            .get(pipeline)
            .cloned()
            .ok_or_else(|| CatalogError::NotFound(format!("application {app:?} has no pipeline {pipeline:?}")))
    }

    /// Creates (or with `replace`, replaces) an application from its JSON document.
    pub async fn put_app(&self, document: &[u8], replace: bool) -> Result<Arc<StoredApp>, CatalogError> {
        self.check_size(document.len())?;
        let def = AppDef::parse(document)?;
        self.apply(Change::PutApp { def, replace }).await
    }

    /// Creates (or with `replace`, replaces) one pipeline, creating its application if needed.
    pub async fn put_pipeline(
        &self,
        app: &str,
        definition: &[u8],
        replace: bool,
    ) -> Result<Arc<StoredApp>, CatalogError> {
        self.check_size(definition.len())?;
        validate_name("application", app)?;
        let def = PipelineDef::parse(definition)?;
        Compiled::new(app, &def)?;
        self.apply(Change::PutPipeline { app: app.to_string(), def, replace }).await
    }

    /// Deletes an application; returns it as it was.
    pub async fn delete_app(&self, app: &str) -> Result<Arc<StoredApp>, CatalogError> {
        self.apply(Change::DeleteApp(app.to_string())).await
    }

    /// Deletes one pipeline; returns the application as it is now.
    pub async fn delete_pipeline(&self, app: &str, pipeline: &str) -> Result<Arc<StoredApp>, CatalogError> {
        self.apply(Change::DeletePipeline { app: app.to_string(), pipeline: pipeline.to_string() }).await
    }

    fn check_size(&self, n: usize) -> Result<(), CatalogError> {
        if n > self.limits.max_app_bytes {
            let max = self.limits.max_app_bytes;
            return Err(CatalogError::Limit(format!("a document of {n} bytes; the limit is {max} (--max-app-bytes)")));
        }
        Ok(())
    }

    async fn apply(&self, change: Change) -> Result<Arc<StoredApp>, CatalogError> {
        let _writer = self.write.lock().await;
        let current = |name: &str| self.apps.read().get(name).cloned();
        let (name, next): (String, Option<AppDef>) = match change {
            Change::PutApp { def, replace } => {
                if current(&def.name).is_some() && !replace {
                    return Err(CatalogError::Exists(format!(
                        "application {:?} exists (replace it instead)",
                        def.name
                    )));
                }
                (def.name.clone(), Some(def))
            }
            Change::PutPipeline { app, def, replace } => {
                let mut doc = match current(&app) {
                    Some(a) => a.def.clone(),
                    None => AppDef { name: app.clone(), description: String::new(), pipelines: Vec::new() },
                };
                match doc.pipelines.iter_mut().find(|p| p.name == def.name) {
                    Some(_) if !replace => {
                        let why = format!("pipeline {:?} of application {app:?} exists (replace it instead)", def.name);
                        return Err(CatalogError::Exists(why));
                    }
                    Some(old) => *old = def,
                    None => doc.pipelines.push(def),
                }
                (app, Some(doc))
            }
            Change::DeleteApp(app) => {
                if current(&app).is_none() {
                    return Err(CatalogError::NotFound(format!("no application {app:?}")));
                }
                (app, None)
            }
            Change::DeletePipeline { app, pipeline } => {
                let Some(a) = current(&app) else {
                    return Err(CatalogError::NotFound(format!("no application {app:?}")));
                };
                let mut doc = a.def.clone();
                let before = doc.pipelines.len();
                doc.pipelines.retain(|p| p.name != pipeline);
                if doc.pipelines.len() == before {
                    let why = format!("application {app:?} has no pipeline {pipeline:?}");
                    return Err(CatalogError::NotFound(why));
                }
                (app, Some(doc))
            }
        };
        let old = current(&name);
        let after = old.as_ref().map(|o| o.version).or_else(|| self.deleted.read().get(&name).copied()).unwrap_or(0);
        let version = now_ms().max(after.saturating_add(1));
        let Some(doc) = next else {
            let old = old.ok_or_else(|| CatalogError::NotFound(format!("no application {name:?}")))?;
            self.store(&name, version, None).await?;
            return Ok(old);
        };
        if old.is_none() && self.len() >= self.limits.max_apps {
            let max = self.limits.max_apps;
            return Err(CatalogError::Limit(format!("{max} applications are stored; the limit is {max} (--max-apps)")));
        }
        if doc.pipelines.len() > self.limits.max_pipelines {
            let (n, max) = (doc.pipelines.len(), self.limits.max_pipelines);
            return Err(CatalogError::Limit(format!(
                "{n} pipelines in application {name:?}; the limit is {max} (--max-pipelines-per-app)"
            )));
        }
        let stored = Arc::new(StoredApp::new(doc, version)?);
        self.store(&name, version, Some(stored.clone())).await?;
        Ok(stored)
    }

    /// Writes `app` (or, for `None`, the record of its deletion) at `version`, then updates memory. Call
    /// with the write lock held.
    async fn store(&self, name: &str, version: u64, app: Option<Arc<StoredApp>>) -> Result<(), CatalogError> {
        let (deleted, application) = match &app {
            Some(a) => (false, a.def.clone()),
            None => (true, AppDef { name: name.to_string(), description: String::new(), pipelines: Vec::new() }),
        };
        let file = AppFile { version, deleted, application };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| CatalogError::Io(e.to_string()))?;
        if !deleted {
            self.check_size(bytes.len())?;
        }
        let (path, dir) = (self.path_of(name), self.dir.clone());
        blocking(move || write_durably(&path, &dir, &bytes)).await?;
        match app {
            Some(a) => {
                self.deleted.write().remove(name);
                self.apps.write().insert(name.to_string(), a);
            }
            None => {
                self.apps.write().remove(name);
                self.deleted.write().insert(name.to_string(), version);
            }
        }
        Ok(())
    }

    /// The record of one application (or of its deletion), as members copy it to each other.
    pub fn record(&self, name: &str) -> Option<pb::AppRecord> {
        if let Some(a) = self.get(name) {
            return Some(record_of(&a));
        }
        let version = *self.deleted.read().get(name)?;
        Some(pb::AppRecord { name: name.to_string(), version, deleted: true, document: Default::default() })
    }

    /// Every record: the applications (without their documents: fetch each with [`Catalog::record`]) and the
    /// deletions still kept. A catalog can exceed one frame; one application cannot.
    pub fn records(&self) -> Vec<pb::AppRecord> {
        let mut out: Vec<pb::AppRecord> = self
            .list()
            .iter()
            .map(|a| pb::AppRecord { name: a.def.name.clone(), version: a.version, ..Default::default() })
            .collect();
        out.extend(self.deleted.read().iter().map(|(name, version)| pb::AppRecord {
            name: name.clone(),
            version: *version,
            deleted: true,
            document: Default::default(),
        }));
        out
    }

    /// Forgets deletions older than [`TOMBSTONE_KEEP`] (memory and files).
    pub async fn prune_deletions(&self) {
        let _writer = self.write.lock().await;
        let now = now_ms();
        let old: Vec<String> = self
            .deleted
            .read()
            .iter()
            .filter(|(_, v)| now.saturating_sub(**v) > TOMBSTONE_KEEP.as_millis() as u64)
            .map(|(n, _)| n.clone())
            .collect();
        for name in old {
            let path = self.path_of(&name);
            if blocking(move || std::fs::remove_file(&path)).await.is_ok() {
                self.deleted.write().remove(&name);
            }
        }
    }

    /// The version this node holds of `name` (live or deleted), if any.
    pub fn version_of(&self, name: &str) -> Option<u64> {
        self.get(name).map(|a| a.version).or_else(|| self.deleted.read().get(name).copied())
    }

    /// Stores another member's record if it is newer than this node's (last writer wins: the higher version,
    /// then a deletion, then the larger document, so every member picks the same). True if it changed
    /// anything.
    pub async fn merge(&self, rec: pb::AppRecord) -> Result<bool, CatalogError> {
        validate_name("application", &rec.name)?;
        let now = now_ms();
        if rec.version > now.saturating_add(MAX_CLOCK_SKEW.as_millis() as u64) {
            return Err(CatalogError::Invalid(TemplateError::Invalid(format!(
                "a record of {:?} is dated {} ms ahead of this node's clock",
                rec.name,
                rec.version - now
            ))));
        }
        if rec.deleted && now.saturating_sub(rec.version) > TOMBSTONE_KEEP.as_millis() as u64 {
            return Ok(false);
        }
        let _writer = self.write.lock().await;
        if let Some(local) = self.record(&rec.name) {
            let key = |r: &pb::AppRecord| (r.version, r.deleted, r.document.clone());
            if key(&rec) <= key(&local) {
                return Ok(false);
            }
        }
        if rec.deleted {
            self.store(&rec.name, rec.version, None).await?;
            return Ok(true);
        }
        self.check_size(rec.document.len())?;
        let def = AppDef::parse(&rec.document)?;
        if def.name != rec.name {
            return Err(CatalogError::Invalid(TemplateError::Invalid(format!(
                "a record of {:?} holds application {:?}",
                rec.name, def.name
            ))));
        }
        if self.get(&rec.name).is_none() && self.len() >= self.limits.max_apps {
            let max = self.limits.max_apps;
            return Err(CatalogError::Limit(format!("{max} applications are stored; the limit is {max} (--max-apps)")));
        }
        let stored = Arc::new(StoredApp::new(def, rec.version)?);
        self.store(&rec.name, rec.version, Some(stored)).await?;
        Ok(true)
    }

    fn path_of(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.json"))
    }
}

fn record_of(a: &StoredApp) -> pb::AppRecord {
    let document = serde_json::to_vec(&a.def).unwrap_or_default().into();
    pb::AppRecord { name: a.def.name.clone(), version: a.version, deleted: false, document }
}

async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> Result<(), CatalogError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CatalogError::Io(e.to_string())),
        Err(e) => Err(CatalogError::Io(format!("writer task failed: {e}"))),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const LIMITS: CatalogLimits = CatalogLimits { max_apps: 2, max_pipelines: 2, max_app_bytes: 4096 };

    fn pipeline(name: &str) -> Vec<u8> {
        format!(
            r#"{{"name":"{name}","template":{{"pipeline":[{{"executorName":"sh","commands":["echo {{{{v}}}}"]}}]}}}}"#
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn changes_are_durable_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(dir.path(), LIMITS).unwrap();
        let a = cat.put_pipeline("myname", &pipeline("ocr"), false).await.unwrap();
        assert_eq!(a.info(false).pipelines[0].queue, "myname/ocr");
        assert!(matches!(cat.put_pipeline("myname", &pipeline("ocr"), false).await, Err(CatalogError::Exists(_))));
        let v1 = a.version;
        let a = cat.put_pipeline("myname", &pipeline("ocr"), true).await.unwrap();
        assert!(a.version > v1, "versions grow");
        cat.put_pipeline("myname", &pipeline("two"), false).await.unwrap();
        let e = cat.put_pipeline("myname", &pipeline("three"), false).await.unwrap_err();
        assert!(matches!(e, CatalogError::Limit(_)), "{e}");
        cat.put_app(br#"{"name":"other"}"#, false).await.unwrap();
        assert!(matches!(cat.put_app(br#"{"name":"third"}"#, false).await, Err(CatalogError::Limit(_))));
        let e = cat.put_pipeline("myname", br#"{"name":"bad","template":{"pipeline":[]}}"#, true).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidTask);
        drop(cat);

        // Reopened: everything is there, compiled.
        std::fs::write(dir.path().join("junk.json.tmp"), b"half a write").unwrap();
        let cat = Catalog::open(dir.path(), LIMITS).unwrap();
        assert_eq!(cat.len(), 2);
        assert!(!dir.path().join("junk.json.tmp").exists(), "leftovers of interrupted writes are removed");
        let c = cat.pipeline("myname", "two").unwrap();
        assert_eq!(c.param_names(), vec!["v"]);
        cat.delete_pipeline("myname", "two").await.unwrap();
        assert!(matches!(cat.pipeline("myname", "two"), Err(CatalogError::NotFound(_))));
        cat.delete_app("other").await.unwrap();
        assert!(matches!(cat.delete_app("other").await, Err(CatalogError::NotFound(_))));
        drop(cat);
        let cat = Catalog::open(dir.path(), LIMITS).unwrap();
        assert_eq!(cat.list().iter().map(|a| a.def.name.clone()).collect::<Vec<_>>(), vec!["myname"]);
        assert_eq!(cat.get("myname").unwrap().pipelines.len(), 1);
    }

    #[tokio::test]
    async fn members_converge_on_the_newest_record() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (Catalog::open(da.path(), LIMITS).unwrap(), Catalog::open(db.path(), LIMITS).unwrap());
        a.put_pipeline("myname", &pipeline("ocr"), false).await.unwrap();
        let listed = a.records();
        assert!(listed.iter().all(|r| r.document.is_empty()), "the list carries no documents");
        for r in &listed {
            assert!(b.merge(a.record(&r.name).unwrap()).await.unwrap(), "new to b");
        }
        assert!(b.pipeline("myname", "ocr").is_ok());
        for r in &listed {
            assert!(!b.merge(a.record(&r.name).unwrap()).await.unwrap(), "a record seen twice changes nothing");
        }
        // b changes it; a's older record no longer wins there.
        let old = a.record("myname").unwrap();
        b.put_pipeline("myname", &pipeline("two"), false).await.unwrap();
        assert!(!b.merge(old).await.unwrap());
        assert_eq!(b.get("myname").unwrap().pipelines.len(), 2);
        // A deletion travels too, and survives a restart as a deletion.
        a.merge(b.record("myname").unwrap()).await.unwrap();
        a.delete_app("myname").await.unwrap();
        let gone = a.record("myname").unwrap();
        assert!(gone.deleted);
        assert!(b.merge(gone.clone()).await.unwrap());
        assert!(b.get("myname").is_none());
        drop(b);
        let b = Catalog::open(db.path(), LIMITS).unwrap();
        assert_eq!(b.record("myname").unwrap(), gone);
        // Equal versions: every member picks the same record (a deletion over a document).
        let mut live = a.record("myname").unwrap();
        live.deleted = false;
        live.document = br#"{"name":"myname"}"#.to_vec().into();
        assert!(!b.merge(live).await.unwrap());
        // A record naming one application but holding another is refused.
        let mut bad = gone;
        bad.version += 10;
        bad.deleted = false;
        bad.document = br#"{"name":"other"}"#.to_vec().into();
        assert!(b.merge(bad).await.is_err());
        // Records from the future, and deletions older than they are kept, are not taken.
        let future = pb::AppRecord { name: "f".into(), version: u64::MAX, deleted: true, ..Default::default() };
        assert!(b.merge(future).await.is_err());
        let stale = pb::AppRecord { name: "s".into(), version: 1, deleted: true, ..Default::default() };
        assert!(!b.merge(stale).await.unwrap());
        assert!(b.record("s").is_none());
    }

    #[tokio::test]
    async fn a_stored_template_this_version_refuses_is_disabled_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let bad = r#"{"version": 5, "application": {"name": "old", "pipelines": [
            {"name": "good", "template": {"pipeline": [{"executorName": "sh", "commands": ["echo {{v}}"]}]}},
            {"name": "bad", "template": {"pipeline": [{"executorName": "sh", "commands": ["echo `{{v}}`"]}]}}]}}"#;
        std::fs::write(dir.path().join("old.json"), bad).unwrap();
        let cat = Catalog::open(dir.path(), LIMITS).unwrap();
        assert!(cat.pipeline("old", "good").is_ok());
        let e = cat.pipeline("old", "bad").unwrap_err().to_string();
        assert!(e.contains("disabled") && e.contains("backticks"), "{e}");
    }

    #[test]
    fn a_damaged_file_stops_the_node_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), b"{not json").unwrap();
        let e = Catalog::open(dir.path(), LIMITS).unwrap_err().to_string();
        assert!(e.contains("x.json"), "{e}");
    }
}
