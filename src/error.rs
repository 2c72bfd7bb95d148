//! Failures, classified by who caused them. Each knows its metric label and how the client is
//! told (an exception reply in the protocol whenever a sequence id is known).

use std::fmt;
use std::io;

use crate::wire::codec::ScanError;

/// One problem in a config document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`server.listen`), empty for the whole document.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// The problem `message` at `key`.
pub(crate) fn config_error(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// One failed connect attempt: where (a metastore URI, or the step that failed before any)
/// and why (the typed failure of that step: an unreachable address, a TLS handshake, hms-guard's
/// authentication, no delegation token for the caller, a transport a kerberized metastore
/// cannot carry).
#[derive(Debug)]
pub struct Attempt {
    pub at: String,
    pub failure: Box<dyn std::error::Error + Send + Sync>,
}

impl Attempt {
    pub fn new(
        at: impl Into<String>,
        failure: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Attempt {
            at: at.into(),
            failure: Box::new(failure),
        }
    }
}

/// Every connect attempt failed.
#[derive(Debug)]
pub struct ConnectError {
    pub attempts: Vec<Attempt>,
    /// A metastore was reached but hms-guard could not authenticate there (Kerberos, a
    /// caller's delegation token), or could not forward this client at all.
    pub refused: bool,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.refused {
            "the metastore could not be used"
        } else {
            "no metastore reachable"
        })?;
        for (i, a) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{}: {}", a.at, a.failure)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {}

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

/// A call hms-guard makes on its own before a client's call, which the metastore refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedCall {
    /// The `set_ugi` that gives the session the caller's identity.
    SetUgi,
    /// A call of the client's (its own `set_ugi`, authorization off) replayed on a new
    /// connection.
    Replayed(String),
}

impl fmt::Display for RefusedCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusedCall::SetUgi => f.write_str("set_ugi"),
            RefusedCall::Replayed(method) => f.write_str(method),
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
    /// The metastore answered hms-guard's own call before `method` with an exception.
    #[error("metastore {uri} ({call} refused{}: {bytes} bytes) closed the connection before the reply to {method} was complete", if matches!(.call, RefusedCall::Replayed(_)) { " again" } else { "" })]
    Refused {
        uri: String,
        call: RefusedCall,
        /// The size of the exception reply.
        bytes: usize,
        method: String,
    },
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
            // Counted as closed: hms-guard ends the connection it cannot use.
            UpstreamError::Closed { .. } | UpstreamError::Refused { .. } => "closed",
            UpstreamError::Protocol { .. } => "protocol",
            UpstreamError::Mismatch { .. } => "mismatch",
            UpstreamError::Write { .. } => "write",
            UpstreamError::Read { .. } => "read",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_call_reads_as_the_closed_connection_it_ends_in() {
        let refused = |call| UpstreamError::Refused {
            uri: "thrift://m:9083".into(),
            call,
            bytes: 42,
            method: "get_table".into(),
        };
        let e = refused(RefusedCall::SetUgi);
        assert_eq!(e.kind(), "closed");
        assert_eq!(
            e.to_string(),
            "metastore thrift://m:9083 (set_ugi refused: 42 bytes) closed the connection before the reply to get_table was complete"
        );
        assert_eq!(
            refused(RefusedCall::Replayed("set_ugi".into())).to_string(),
            "metastore thrift://m:9083 (set_ugi refused again: 42 bytes) closed the connection before the reply to get_table was complete"
        );
    }
}
