//! Failures, classified by who caused them. Each knows its metric label and how the client is
//! told (an exception reply in the protocol whenever a sequence id is known).

use std::io;

use crate::codec::ScanError;
use crate::upstream::ConnectError;

/// The client broke the protocol or the limits.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid Thrift message: {0}")]
    Protocol(ScanError),
    #[error("message not complete within {0} ms")]
    Timeout(u64),
    #[error("hms-guard holds its limit of {0} request bytes over all connections; retry later")]
    Busy(u64),
    #[error("client closed the connection in the middle of a message")]
    ClosedMidMessage,
    /// A SASL frame that cannot be taken (a wrapped token GSSAPI refuses — forged, repeated,
    /// out of order — or a frame over the bound).
    #[error("{0}")]
    Frame(io::Error),
    #[error("client connection failed: {0}")]
    Io(io::Error),
}

impl ClientError {
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Protocol(ScanError::TooLarge { .. })
            | ClientError::Protocol(ScanError::CountTooLarge { .. }) => "too_large",
            ClientError::Protocol(_) => "protocol",
            ClientError::Timeout(_) => "timeout",
            ClientError::Busy(_) => "busy",
            ClientError::ClosedMidMessage => "closed_mid_message",
            ClientError::Frame(_) => "sasl_frame",
            ClientError::Io(_) => "io",
        }
    }
}

/// The metastore failed or misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Connect(ConnectError),
    #[error("metastore {uri} did not answer {method} within {ms} ms")]
    Timeout {
        uri: String,
        method: String,
        ms: u64,
    },
    #[error("metastore {uri} closed the connection before the reply to {method} was complete")]
    Closed { uri: String, method: String },
    #[error("metastore {uri} sent an invalid reply to {method}: {err}")]
    Protocol {
        uri: String,
        method: String,
        err: ScanError,
    },
    #[error("metastore {uri} answered {method} (sequence id {seqid}) with a {got_kind} of {got_method} (sequence id {got_seqid})")]
    Mismatch {
        uri: String,
        method: String,
        seqid: i32,
        got_method: String,
        got_seqid: i32,
        got_kind: String,
    },
    #[error("sending {method} to metastore {uri} failed: {err}")]
    Write {
        uri: String,
        method: String,
        err: io::Error,
    },
    #[error("reading the reply to {method} from metastore {uri} failed: {err}")]
    Read {
        uri: String,
        method: String,
        err: io::Error,
    },
}

impl UpstreamError {
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Closed { .. } => "closed",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Mismatch { .. } => "mismatch",
            UpstreamError::Write { .. } => "write",
            UpstreamError::Read { .. } => "read",
        }
    }
}
