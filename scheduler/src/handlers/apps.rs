//! `AppRequest`: applications and their pipeline templates, stored by [`crate::catalog::Catalog`]. Writes need
//! the admin role; the reply is sent once the change is durable (file I/O runs off the connection's task).

use pm_protocol::pb::{self, app_request::Op};
use pm_protocol::{ErrorCode, Role};

use crate::catalog::CatalogError;
use crate::connection::{ConnCtx, Outbound};

/// Handles an AppRequest.
pub fn handle(ctx: &mut ConnCtx, req: pb::AppRequest) {
    let request_id = req.request_id;
    let Some(op) = req.op else {
        ctx.error(ErrorCode::MalformedFrame, request_id, "AppRequest without an operation");
        return;
    };
    let write = matches!(op, Op::Put(_) | Op::PutPipeline(_) | Op::Delete(_) | Op::DeletePipeline(_));
    if write && ctx.role != Role::Admin {
        let reply = refused(request_id, ErrorCode::RoleNotAllowed, "changing applications needs the admin role");
        let _ = ctx.out.send(Outbound::Frame(reply.into()));
        return;
    }
    let (catalog, out) = (ctx.server.catalog.clone(), ctx.out.clone());
    tokio::spawn(async move {
        let result = match op {
            Op::Put(p) => catalog.put_app(&p.document, p.replace).await.map(|a| vec![a.info(true)]),
            Op::PutPipeline(p) => {
                catalog.put_pipeline(&p.app, &p.definition, p.replace).await.map(|a| vec![a.info(true)])
            }
            Op::Get(name) => catalog
                .get(&name)
                .map(|a| vec![a.info(true)])
                .ok_or_else(|| CatalogError::NotFound(format!("no application {name:?}"))),
            Op::List(_) => Ok(catalog.list().iter().map(|a| a.info(false)).collect()),
            Op::Delete(name) => catalog.delete_app(&name).await.map(|a| vec![a.info(false)]),
            Op::DeletePipeline(p) => catalog.delete_pipeline(&p.app, &p.pipeline).await.map(|a| vec![a.info(true)]),
        };
        let reply = match result {
            Ok(apps) => pb::AppReply { request_id, code: ErrorCode::Ok as i32, message: String::new(), apps },
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
    pb::AppReply { request_id, code: code as i32, message: msg.to_string(), apps: Vec::new() }
}
