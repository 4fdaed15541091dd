//! The pipeline-manager wire contract: a pure codec, no sockets and no policy. What the messages carry (the
//! task JSON, templates) and where tasks go (the ring) are `pm-task`'s.
//!
//! - [`pb`]: the prost types generated from `proto/pm/v1/*.proto` (the public spec; clients in other
//!   languages are generated from the same files).
//! - [`codec`]: [`FrameCodec`], 4-byte big-endian length + one [`pb::Envelope`], with the length checked
//!   before anything is allocated.
//! - [`kinds`]: one table of the message kinds: name, direction, the roles that may send each, whether it
//!   carries a request id.
//! - [`limits`]: protocol version and default limits shared by servers and clients.
//!
//! ```text
//!  0        4                        4+len
//!  +--------+------------------------+
//!  | len BE | Envelope (protobuf)    |   len <= max_frame_bytes (default 4 MiB)
//!  +--------+------------------------+
//! ```

pub mod codec;
pub mod kinds;
pub mod limits;

/// Generated protobuf types of package `pm.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/pm.v1.rs"));
}

pub use codec::{FrameCodec, WireError};
pub use kinds::{Direction, KindInfo, Roles};
pub use limits::PROTOCOL_VERSION;
pub use pb::envelope::Kind;
pub use pb::{Envelope, ErrorCode, Role};
pub use prost::Message;

macro_rules! into_envelope {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(
            impl From<pb::$ty> for Envelope {
                fn from(m: pb::$ty) -> Self {
                    Envelope { kind: Some(Kind::$variant(m)) }
                }
            }
        )*
    };
}

into_envelope! {
    Hello => Hello, Welcome => Welcome, Error => Error, Submit => Submit, SubmitAck => SubmitAck,
    Credit => Credit, Leased => Leased, Ack => Ack, Nack => Nack, Extend => Extend,
    LeaseReply => LeaseReply, StatsRequest => StatsRequest, StatsReply => StatsReply,
    DeadLetterList => DeadLetterList, DeadLetterListReply => DeadLetterListReply,
    DeadLetterRedrive => DeadLetterRedrive, DeadLetterRedriveReply => DeadLetterRedriveReply,
    Ping => Ping, Pong => Pong, Redirect => Redirect, Cancel => Cancel, CancelReply => CancelReply,
    Revoke => Revoke, Reclaim => Reclaim, ReclaimReply => ReclaimReply, Status => Status,
    StatusReply => StatusReply, Watch => Watch, WatchReply => WatchReply, Completed => Completed,
    AppRequest => AppRequest, AppReply => AppReply, SubmitTemplate => SubmitTemplate,
    QueueControl => QueueControl, QueueControlReply => QueueControlReply, TaskList => TaskList,
    TaskListReply => TaskListReply, DeadLetterDelete => DeadLetterDelete, DeadLetterDeleteReply => DeadLetterDeleteReply,
    RaftBatch => RaftBatch,
}

impl pb::Error {
    /// An error answering request `request_id` (0 = about the connection itself).
    pub fn new(code: ErrorCode, request_id: u64, message: impl Into<String>) -> Self {
        pb::Error { code: code as i32, message: message.into(), request_id }
    }
}
