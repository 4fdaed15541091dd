//! Request handlers, one file per kind of request (named for what it serves: `tasks.rs` serves Cancel, Status
//! and Watch; `leases.rs` Ack, Nack and Extend). They validate, split a request by owning shard, register
//! the reply with the writer ([`Outbound::Begin`]) and send the pieces to the shards. They never see bytes.

mod admin;
mod apps;
mod credit;
mod ctx;
mod leases;
mod reclaim;
mod submit;
mod tasks;

use pm_protocol::pb;
use pm_protocol::{Envelope, ErrorCode, Kind, Role};

pub use self::ctx::ConnCtx;
use crate::metrics as m;
use crate::outbox::Outbound;

/// Handles one decoded frame. Returns false when the connection must close.
pub fn dispatch(ctx: &mut ConnCtx, env: Envelope) -> bool {
    let Some(kind) = env.kind else { return false };
    let allowed = match (&kind, ctx.role) {
        (Kind::Ping(_) | Kind::Pong(_), _) => true,
        (
            Kind::Submit(_)
            | Kind::SubmitTemplate(_)
            | Kind::AppRequest(_)
            | Kind::Cancel(_)
            | Kind::Status(_)
            | Kind::Watch(_),
            Role::Producer | Role::Admin,
        ) => true,
        (Kind::Credit(_) | Kind::Ack(_) | Kind::Nack(_) | Kind::Extend(_) | Kind::Reclaim(_), Role::Agent) => true,
        (
            Kind::Credit(_)
            | Kind::Ack(_)
            | Kind::Nack(_)
            | Kind::Extend(_)
            | Kind::StatsRequest(_)
            | Kind::AppRequest(_),
            Role::Peer,
        ) => true,
        (Kind::StatsRequest(_) | Kind::DeadLetterList(_) | Kind::DeadLetterRedrive(_), Role::Admin) => true,
        (Kind::Hello(_), _) => {
            refuse(ctx, ErrorCode::HandshakeRequired, "Hello may be sent only once", "second_hello");
            return false;
        }
        (
            Kind::Welcome(_)
            | Kind::Error(_)
            | Kind::SubmitAck(_)
            | Kind::Leased(_)
            | Kind::LeaseReply(_)
            | Kind::StatsReply(_)
            | Kind::DeadLetterListReply(_)
            | Kind::DeadLetterRedriveReply(_)
            | Kind::Redirect(_)
            | Kind::CancelReply(_)
            | Kind::Revoke(_)
            | Kind::ReclaimReply(_)
            | Kind::StatusReply(_)
            | Kind::WatchReply(_)
            | Kind::Completed(_)
            | Kind::AppReply(_),
            _,
        ) => {
            let msg = format!("{} is sent only by servers", kind.name());
            refuse(ctx, ErrorCode::UnknownMessage, &msg, "server_only_message");
            return false;
        }
        _ => false,
    };
    if !allowed {
        metrics::counter!(m::REFUSED, "reason" => "role").increment(1);
        let msg = format!("role {} may not send {}", ctx.role.as_str_name(), kind.name());
        ctx.error(ErrorCode::RoleNotAllowed, request_id_of(&kind), msg);
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
        Kind::Credit(c) => credit::handle(ctx, c),
        Kind::Ack(a) => leases::ack(ctx, a),
        Kind::Nack(n) => leases::nack(ctx, n),
        Kind::Extend(e) => leases::extend(ctx, e),
        Kind::StatsRequest(r) => admin::stats(ctx, r),
        Kind::DeadLetterList(r) => admin::dead_list(ctx, r),
        Kind::DeadLetterRedrive(r) => admin::redrive(ctx, r),
        Kind::Cancel(c) => tasks::cancel(ctx, c),
        Kind::Reclaim(r) => reclaim::handle(ctx, r),
        Kind::Status(r) => tasks::status(ctx, r),
        Kind::Watch(r) => tasks::watch(ctx, r),
        _ => {}
    }
    true
}

fn refuse(ctx: &ConnCtx, code: ErrorCode, msg: &str, reason: &'static str) {
    metrics::counter!(m::REFUSED, "reason" => reason).increment(1);
    ctx.error(code, 0, msg);
}

fn request_id_of(kind: &Kind) -> u64 {
    match kind {
        Kind::Submit(s) => s.request_id,
        Kind::Ack(a) => a.request_id,
        Kind::Nack(n) => n.request_id,
        Kind::Extend(e) => e.request_id,
        Kind::StatsRequest(r) => r.request_id,
        Kind::DeadLetterList(r) => r.request_id,
        Kind::DeadLetterRedrive(r) => r.request_id,
        Kind::Cancel(c) => c.request_id,
        Kind::Reclaim(r) => r.request_id,
        Kind::Status(r) => r.request_id,
        Kind::Watch(r) => r.request_id,
        Kind::SubmitTemplate(s) => s.request_id,
        Kind::AppRequest(r) => r.request_id,
        _ => 0,
    }
}
