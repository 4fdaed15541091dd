//! The HTTP API (docs/http-api.md), for producers that cannot speak the binary protocol: applications and
//! their pipelines, tasks submitted by their parameters, and task status. Served on `--http-listen` beside
//! `/metrics`.
//!
//! Every request is one protocol connection to this node over an in-process pipe, opened with the caller's
//! bearer token and the role the route needs (producer to submit and read, admin to change applications). The
//! node checks the token in `Hello` exactly as for a TCP client, and a submit is answered `202` only once the
//! protocol's `SubmitAck` says the task is durable: the HTTP API adds no second path to the shards to keep in
//! step with the protocol's.
//!
//! The operating routes (queues, task listings, dead letters, events) ask every member of a cluster
//! (`members.rs`). Files: `state.rs` (what handlers share), `error.rs` (error answers), `query.rs` (strict
//! query strings), `guard.rs` (cross-site protection), `peer.rs` (the request's source address, for
//! `--max-connections-per-ip`), then one file per kind of resource.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

mod answer;
mod apps;
mod dead;
mod error;
mod events;
mod guard;
mod members;
mod peer;
mod query;
mod queues;
mod raw;
mod state;
mod tasks;

pub use self::error::ApiError;
pub use self::state::Gateway;

/// The API's routes.
pub fn routes(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/applications", get(apps::list_apps).post(apps::create_app))
        .route("/api/applications/{app}", get(apps::get_app).put(apps::replace_app).delete(apps::delete_app))
        .route("/api/applications/{app}/pipelines", get(apps::list_pipelines).post(apps::create_pipeline))
        .route(
            "/api/applications/{app}/pipelines/{pipeline}",
            get(apps::get_pipeline).put(apps::replace_pipeline).delete(apps::delete_pipeline).post(apps::submit),
        )
        .route("/api/tasks", get(tasks::list))
        .route("/api/tasks/count", get(tasks::count))
        .route("/api/tasks/cancel", post(tasks::cancel))
        .route("/api/tasks/{id}", get(tasks::task_status).delete(raw::cancel))
        .route("/api/queues", get(queues::list))
        .route("/api/queues/{queue}", get(queues::one))
        .route("/api/queues/{queue}/tasks", post(raw::submit))
        .route("/api/queues/{queue}/{action}", post(queues::act))
        .route("/api/dead", get(dead::list))
        .route("/api/dead/redrive", post(dead::redrive))
        .route("/api/dead/delete", post(dead::delete))
        .route("/api/events", get(events::events))
        .layer(axum::middleware::from_fn(guard::same_origin))
        .layer(axum::middleware::from_fn(peer::scope))
        .with_state(gw)
}
