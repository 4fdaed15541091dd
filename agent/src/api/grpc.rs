//! The direct-run gRPC API (`proto/pm/agent/v1/agent.proto`): `pm.agent.v1.Agent/Run` takes the task JSON
//! and streams the run's events, the last being its result. Served on the HTTP API's port (HTTP/2), behind
//! the same bearer token (`authorization` metadata) and run limit; cancelling the call stops the run.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::auth::bearer_matches;
use super::state::AppState;
use crate::command::Stream as OutStream;
use crate::runner::RunEvent;

/// Generated types and service of package `pm.agent.v1` (the client is generic over any transport).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("pm.agent.v1");
}

use pb::agent_server::{Agent, AgentServer};

struct GrpcAgent(Arc<AppState>);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for GrpcAgent {
    type RunStream = EventStream;

    async fn run(&self, req: Request<pb::RunRequest>) -> Result<Response<EventStream>, Status> {
        let task = pm_task::pipeline::parse_task(req.get_ref().task_json.as_bytes())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let run = self.0.start_run(task, true).map_err(Status::resource_exhausted)?;
        let events = futures::stream::unfold((run.events, run.guard), |(mut rx, guard)| async move {
            let event = rx.recv().await?;
            Some((Ok(to_pb(event)), (rx, guard)))
        });
        Ok(Response::new(Box::pin(events)))
    }
}

fn to_pb(e: RunEvent) -> pb::RunEvent {
    use pb::run_event::Event;
    let event = match e {
        RunEvent::Start { step, executor, run } => Event::Start(pb::CommandStart { step: step as u32, executor, run }),
        RunEvent::Output { stream, data } => Event::Output(pb::Output {
            stream: match stream {
                OutStream::Stdout => pb::OutputStream::Stdout,
                OutStream::Stderr => pb::OutputStream::Stderr,
            } as i32,
            data: data.into_bytes(),
        }),
        RunEvent::End { step, result } => Event::End(pb::CommandEnd {
            step: step as u32,
            exit_code: result.exit_code,
            signal: result.signal,
            timed_out: result.timed_out,
            duration_ms: result.duration_ms,
            error: result.error.unwrap_or_default(),
        }),
        RunEvent::Result { result } => Event::Result(pb::RunResult {
            ok: result.ok,
            error: result.error.clone().unwrap_or_default(),
            result_json: serde_json::to_string(&result).unwrap_or_default(),
        }),
    };
    pb::RunEvent { event: Some(event) }
}

/// The gRPC service as axum routes, behind the bearer token when one is configured.
pub(crate) fn routes(state: Arc<AppState>, max_message: usize) -> axum::Router {
    let token = state.token.clone();
    let check = move |req: Request<()>| -> Result<Request<()>, Status> {
        let Some(token) = &token else { return Ok(req) };
        let given = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if bearer_matches(token, given) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    };
    let svc = AgentServer::new(GrpcAgent(state)).max_decoding_message_size(max_message);
    tonic::service::Routes::new(tonic::service::interceptor::InterceptedService::new(svc, check)).into_axum_router()
}
