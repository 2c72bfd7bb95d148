//! The proxy's own answers, in the client's protocol and framing, with the call's sequence
//! id: a denial in the method's declared exception, a `TApplicationException` otherwise.

use bytes::BytesMut;

use crate::wire::codec::reply::{application_exception, declared_exception, AppErrorKind};
use crate::wire::codec::MessageHeader;
use crate::wire::router::Method;
use crate::wire::transport::Transport;

/// A denial: the method's declared `MetaException` at its field id, else a
/// `TApplicationException`.
pub fn denial(
    transport: Transport,
    entry: Option<&'static Method>,
    header: &MessageHeader,
    message: &str,
) -> BytesMut {
    match entry.and_then(|m| m.meta_exception) {
        Some(field) => declared_exception(
            transport.protocol,
            transport.framed,
            &header.name,
            header.seqid,
            field,
            message,
        ),
        None => failure(transport, header, AppErrorKind::Unknown, message),
    }
}

/// A `TApplicationException` of `kind` answering the call `header` names.
pub fn failure(
    transport: Transport,
    header: &MessageHeader,
    kind: AppErrorKind,
    message: &str,
) -> BytesMut {
    application_exception(
        transport.protocol,
        transport.framed,
        &header.name,
        header.seqid,
        kind,
        message,
    )
}

/// An answer the proxy gives itself: the method's string result.
pub fn answered(transport: Transport, header: &MessageHeader, result: &str) -> BytesMut {
    crate::wire::codec::reply::string_result(
        transport.protocol,
        transport.framed,
        &header.name,
        header.seqid,
        result,
    )
}
