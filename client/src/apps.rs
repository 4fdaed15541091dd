//! Applications and pipeline templates (docs/apps.md): store definitions, read them, and submit tasks by
//! their parameters only.

use pm_protocol::pb::{self, app_request::Op, SubmitResult, TemplateTask};
use pm_protocol::{ErrorCode, Kind};

use crate::client::{unexpected, Client};
use crate::error::{Error, ErrorKind};

/// What a change to the stored applications did: the application as stored (as it was, for a delete), and
/// the node's warning when the change is durable there but has not reached every member of its cluster yet
/// (they copy it later; the warning names them). A warning is not a failure: the change stands.
#[derive(Debug, Clone, PartialEq)]
pub struct AppChange {
    /// The application.
    pub app: pb::AppInfo,
    /// `AppReply.message` of a successful change, when there is one.
    pub warning: Option<String>,
}

impl Client {
    /// The applications of an `AppReply`, and its message.
    async fn app_request(&self, op: Op) -> Result<(Vec<pb::AppInfo>, String), Error> {
        let env = self.request(|request_id| pb::AppRequest { request_id, op: Some(op) }.into()).await?;
        match env.kind {
            Some(Kind::AppReply(r)) => match ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal) {
                ErrorCode::Ok => Ok((r.apps, r.message)),
                code => Err(Error::with_code(ErrorKind::Server, code, r.message)),
            },
            other => Err(unexpected(other)),
        }
    }

    async fn one_app(&self, op: Op) -> Result<AppChange, Error> {
        let (apps, message) = self.app_request(op).await?;
        let app = apps
            .into_iter()
            .next()
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "AppReply without the application"))?;
        Ok(AppChange { app, warning: (!message.is_empty()).then_some(message) })
    }

    /// Admin: stores an application from its JSON document; `replace` replaces an existing one whole (else
    /// an existing one is `ALREADY_EXISTS`). Returns it as stored, once durable, with the node's warning if
    /// a member of its cluster did not get it yet.
    pub async fn put_app(&self, document: Vec<u8>, replace: bool) -> Result<AppChange, Error> {
        self.one_app(Op::Put(pb::AppPut { document: document.into(), replace })).await
    }

    /// Admin: stores one pipeline definition (JSON) in application `app`, creating the application if needed;
    /// `replace` replaces a pipeline of the same name. Returns the application as stored, once durable (and
    /// a warning as [`Client::put_app`] does).
    pub async fn put_pipeline(&self, app: &str, definition: Vec<u8>, replace: bool) -> Result<AppChange, Error> {
        let put = pb::PipelinePut { app: app.to_string(), definition: definition.into(), replace };
        self.one_app(Op::PutPipeline(put)).await
    }

    /// One application, with its document.
    pub async fn get_app(&self, app: &str) -> Result<pb::AppInfo, Error> {
        Ok(self.one_app(Op::Get(app.to_string())).await?.app)
    }

    /// Every application (without documents).
    pub async fn list_apps(&self) -> Result<Vec<pb::AppInfo>, Error> {
        Ok(self.app_request(Op::List(pb::AppList {})).await?.0)
    }

    /// Admin: deletes an application and its pipelines (queued tasks still run). Returns it as it was (and
    /// a warning as [`Client::put_app`] does).
    pub async fn delete_app(&self, app: &str) -> Result<AppChange, Error> {
        self.one_app(Op::Delete(app.to_string())).await
    }

    /// Admin: deletes one pipeline. Returns the application as it is now (and a warning as
    /// [`Client::put_app`] does).
    pub async fn delete_pipeline(&self, app: &str, pipeline: &str) -> Result<AppChange, Error> {
        let r = pb::PipelineRef { app: app.to_string(), pipeline: pipeline.to_string() };
        self.one_app(Op::DeletePipeline(r)).await
    }

    /// Cluster members: stores another member's records where they are newer.
    pub async fn app_sync(&self, records: Vec<pb::AppRecord>) -> Result<(), Error> {
        self.app_request(Op::Sync(pb::AppSync { records })).await.map(|_| ())
    }

    /// Cluster members: every record the node holds (applications and deletions, with documents).
    pub async fn app_records(&self) -> Result<Vec<pb::AppRecord>, Error> {
        let env = self
            .request(|request_id| pb::AppRequest { request_id, op: Some(Op::Records(pb::AppList {})) }.into())
            .await?;
        match env.kind {
            Some(Kind::AppReply(r)) => match ErrorCode::try_from(r.code).unwrap_or(ErrorCode::Internal) {
                ErrorCode::Ok => Ok(r.records),
                code => Err(Error::with_code(ErrorKind::Server, code, r.message)),
            },
            other => Err(unexpected(other)),
        }
    }

    /// Submits tasks of a stored pipeline by their parameters; one result per task, in order, once durable
    /// (`NOT_FOUND`: no such pipeline; `INVALID_TASK`: missing, unknown or oversized parameters).
    pub async fn submit_template(
        &self,
        app: &str,
        pipeline: &str,
        tasks: Vec<TemplateTask>,
    ) -> Result<Vec<SubmitResult>, Error> {
        self.submit_template_inner(app, pipeline, tasks, false).await
    }

    /// As [`Client::submit_template`], and each accepted task is reported on the [`crate::Completions`] of a
    /// client made with [`Client::connect_watching`] when it finishes.
    pub async fn submit_template_notify(
        &self,
        app: &str,
        pipeline: &str,
        tasks: Vec<TemplateTask>,
    ) -> Result<Vec<SubmitResult>, Error> {
        self.submit_template_inner(app, pipeline, tasks, true).await
    }

    async fn submit_template_inner(
        &self,
        app: &str,
        pipeline: &str,
        tasks: Vec<TemplateTask>,
        notify: bool,
    ) -> Result<Vec<SubmitResult>, Error> {
        let (app, pipeline) = (app.to_string(), pipeline.to_string());
        let env = self
            .request(|request_id| {
                pb::SubmitTemplate { request_id, app, pipeline, tasks, failover: false, notify }.into()
            })
            .await?;
        match env.kind {
            Some(Kind::SubmitAck(a)) => Ok(a.results),
            other => Err(unexpected(other)),
        }
    }
}
