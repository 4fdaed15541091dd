//! `AppRequest`: applications and their pipeline templates, stored by [`crate::catalog::Catalog`]. Writes need
//! the admin role; the reply is sent once the change is durable here and has been offered to the other members
//! of a cluster ([`crate::catalog_sync`]). File I/O runs off the connection's task.

use pm_protocol::pb::{self, app_request::Op};
use pm_protocol::{ErrorCode, Role};

use super::ctx::ConnCtx;
use crate::catalog::CatalogError;
use crate::outbox::Outbound;

/// Handles an AppRequest.
pub fn handle(ctx: &mut ConnCtx, req: pb::AppRequest) {
    let request_id = req.request_id;
    let Some(op) = req.op else {
        ctx.error(ErrorCode::MalformedFrame, request_id, "AppRequest without an operation");
        return;
    };
    let allowed = match (&op, ctx.role) {
        (Op::Put(_) | Op::PutPipeline(_) | Op::Delete(_) | Op::DeletePipeline(_), role) => role == Role::Admin,
        (Op::Sync(_), role) => role == Role::Peer,
        (Op::Records(_), role) => matches!(role, Role::Peer | Role::Admin),
        (Op::Get(_) | Op::List(_), _) => true,
    };
    if !allowed {
        let msg = match op {
            Op::Sync(_) | Op::Records(_) => "copying applications is for cluster members",
            _ => "changing applications needs the admin role",
        };
        let _ = ctx.out.send(Outbound::Frame(refused(request_id, ErrorCode::RoleNotAllowed, msg).into()));
        return;
    }
    let (server, out) = (ctx.server.clone(), ctx.out.clone());
    tokio::spawn(async move {
        let catalog = &server.catalog;
        let mut records = Vec::new();
        let (result, changed) = match op {
            Op::Put(p) => {
                let r = catalog.put_app(&p.document, p.replace).await.map(|a| vec![a.info(true)]);
                let name = r.as_ref().ok().and_then(|a| a.first()).map(|a| a.name.clone());
                (r, name)
            }
            Op::PutPipeline(p) => {
                (catalog.put_pipeline(&p.app, &p.definition, p.replace).await.map(|a| vec![a.info(true)]), Some(p.app))
            }
            Op::Get(name) => {
                let r = catalog
                    .get(&name)
                    .map(|a| vec![a.info(true)])
                    .ok_or_else(|| CatalogError::NotFound(format!("no application {name:?}")));
                (r, None)
            }
            Op::List(_) => (Ok(catalog.list().iter().map(|a| a.info(false)).collect()), None),
            Op::Delete(name) => (catalog.delete_app(&name).await.map(|a| vec![a.info(false)]), Some(name)),
            Op::DeletePipeline(p) => {
                (catalog.delete_pipeline(&p.app, &p.pipeline).await.map(|a| vec![a.info(true)]), Some(p.app))
            }
            Op::Sync(s) => {
                let mut result = Ok(Vec::new());
                for rec in s.records {
                    if let Err(e) = catalog.merge(rec).await {
                        result = Err(e);
                        break;
                    }
                }
                (result, None)
            }
            Op::Records(_) => {
                records = catalog.records();
                (Ok(Vec::new()), None)
            }
        };
        let reply = match result {
            Ok(apps) => {
                let mut message = String::new();
                if let (Some(name), Some(peers)) = (changed, &server.catalog_peers) {
                    let unreached = peers.push(catalog.record(&name).into_iter().collect()).await;
                    if !unreached.is_empty() {
                        message = format!(
                            "stored on this node; not yet on {}: they copy it when they can reach this node \
                             (--catalog-sync-interval)",
                            unreached.join(", ")
                        );
                        tracing::warn!(app = %name, "{message}");
                    }
                }
                pb::AppReply { request_id, code: ErrorCode::Ok as i32, message, apps, records }
            }
            Err(e) => {
                if let CatalogError::Io(msg) = &e {
                    tracing::error!("application store: {msg}");
                }
                refused(request_id, e.code(), &e.to_string())
            }
        };
        let _ = out.send(Outbound::Frame(reply.into()));
    });
}

fn refused(request_id: u64, code: ErrorCode, msg: &str) -> pb::AppReply {
    pb::AppReply { request_id, code: code as i32, message: msg.to_string(), ..Default::default() }
}
