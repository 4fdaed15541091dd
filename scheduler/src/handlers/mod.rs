//! Request handlers, one file per kind of request (named for what it serves: `tasks.rs` serves Cancel, Status
//! and Watch; `leases.rs` Ack, Nack and Extend). They validate, split a request by owning shard, register
//! the reply with the writer ([`Outbound::Begin`]) and send the pieces to the shards. They never see bytes.

mod admin;
mod apps;
mod credit;
mod ctx;
mod leases;
mod raft;
mod reclaim;
mod submit;
mod tasks;

use pm_protocol::pb;
use pm_protocol::{Direction, Envelope, ErrorCode, Kind};

pub use self::ctx::ConnCtx;
use crate::metrics as m;
use crate::outbox::Outbound;

/// Handles one decoded frame. Returns false when the connection must close (after an `Error` with request id 0,
/// which this has queued). Who may send what is the protocol's table of kinds (`pm_protocol::kinds`).
pub fn dispatch(ctx: &mut ConnCtx, env: Envelope) -> bool {
    let Some(kind) = env.kind else { return false };
    let info = kind.info();
    if let Kind::Hello(_) = kind {
        refuse(ctx, ErrorCode::HandshakeRequired, "Hello may be sent only once", "second_hello");
        return false;
    }
    if info.direction == Direction::ToClient {
        let msg = format!("{} is sent only by servers", info.name);
        refuse(ctx, ErrorCode::UnknownMessage, &msg, "server_only_message");
        return false;
    }
    if !info.roles.contains(ctx.role) {
        let msg = format!("role {} may not send {}", ctx.role.as_str_name(), info.name);
        if !info.request_id {
            // A Credit has no request id to answer: the error is about the connection (request id 0), and an
            // error with request id 0 always closes it (docs/protocol.md, "Errors").
            refuse(ctx, ErrorCode::RoleNotAllowed, &msg, "role");
            return false;
        }
        metrics::counter!(m::REFUSED, "reason" => "role").increment(1);
        ctx.error(ErrorCode::RoleNotAllowed, kind.request_id(), msg);
        return true;
    }
    match kind {
        Kind::Ping(p) => {
            let _ = ctx.out.send(Outbound::Frame(pb::Pong { nonce: p.nonce }.into()));
        }
        Kind::Pong(_) => {}
        Kind::Submit(s) => submit::handle(ctx, s),
        Kind::SubmitTemplate(s) => submit::handle_template(ctx, s),
        Kind::AppRequest(r) => apps::handle(ctx, r),
        Kind::Credit(c) => return credit::handle(ctx, c),
        Kind::Ack(a) => leases::ack(ctx, a),
        Kind::Nack(n) => leases::nack(ctx, n),
        Kind::Extend(e) => leases::extend(ctx, e),
        Kind::StatsRequest(r) => admin::stats(ctx, r),
        Kind::DeadLetterList(r) => admin::dead_list(ctx, r),
        Kind::DeadLetterRedrive(r) => admin::redrive(ctx, r),
        Kind::DeadLetterDelete(r) => admin::dead_delete(ctx, r),
        Kind::QueueControl(r) => admin::queue_control(ctx, r),
        Kind::TaskList(r) => admin::task_list(ctx, r),
        Kind::Cancel(c) => tasks::cancel(ctx, c),
        Kind::Reclaim(r) => reclaim::handle(ctx, r),
        Kind::Status(r) => tasks::status(ctx, r),
        Kind::Watch(r) => tasks::watch(ctx, r),
        Kind::RaftBatch(b) => raft::handle(ctx, b),
        _ => {}
    }
    true
}

fn refuse(ctx: &ConnCtx, code: ErrorCode, msg: &str, reason: &'static str) {
    metrics::counter!(m::REFUSED, "reason" => reason).increment(1);
    ctx.error(code, 0, msg);
}
