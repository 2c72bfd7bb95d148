//! Framing: where one message ends, for unframed and framed (`TFramedTransport`) transports.
//!
//! `MessageWalker` wraps the protocol scanner. Unframed, it is the scanner. Framed, it reads the
//! 4-byte length first, bounds it, and scans the payload with the frame length as the exact
//! size budget, so a frame whose content disagrees with its length is an error.

use crate::wire::codec::{Limits, MessageHeader, Scan, ScanError, Scanner, TopField};
use crate::wire::transport::Transport;

/// Finds the end of one message (frame prefix included) in a byte stream.
#[derive(Debug)]
pub struct MessageWalker {
    framed: bool,
    frame_len: Option<u32>,
    limit: u64,
    scanner: Scanner,
}

impl MessageWalker {
    pub fn new(transport: Transport, limits: Limits) -> Self {
        MessageWalker {
            framed: transport.framed,
            frame_len: None,
            limit: limits.max_message_bytes,
            scanner: Scanner::new(transport.protocol, limits),
        }
    }

    /// Ready for the next message.
    pub fn reset(&mut self) {
        self.frame_len = None;
        self.scanner.reset();
        self.scanner.set_max_message_bytes(self.limit);
    }

    /// The current message's header, once read.
    pub fn header(&self) -> Option<&MessageHeader> {
        self.scanner.header()
    }

    /// The current message's top struct's first field header, once walked.
    pub fn top_field(&self) -> Option<TopField> {
        self.scanner.top_field()
    }

    /// Walks `buf` (the bytes after those already walked); see `Scanner::advance`.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Scan, ScanError> {
        let mut prefix = 0;
        if self.framed && self.frame_len.is_none() {
            if buf.len() < 4 {
                return Ok(Scan::NeedMore(0));
            }
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if u64::from(len) > self.limit {
                return Err(ScanError::TooLarge { limit: self.limit });
            }
            self.frame_len = Some(len);
            self.scanner.set_max_message_bytes(u64::from(len));
            prefix = 4;
        }
        // Never walk past the frame: the bytes after it belong to the next message.
        let frame_left = self
            .frame_len
            .map_or(u64::MAX, |len| u64::from(len) - self.scanner.consumed());
        let body = &buf[prefix..];
        let body = &body[..body
            .len()
            .min(usize::try_from(frame_left).unwrap_or(usize::MAX))];
        match self.scanner.advance(body)? {
            Scan::NeedMore(n) => {
                if let Some(len) = self.frame_len {
                    if self.scanner.consumed() == u64::from(len) {
                        return Err(ScanError::FrameTruncated {
                            frame: u64::from(len),
                        });
                    }
                }
                Ok(Scan::NeedMore(prefix + n))
            }
            Scan::Complete(n) => {
                if let Some(len) = self.frame_len {
                    if self.scanner.consumed() != u64::from(len) {
                        return Err(ScanError::FrameMismatch {
                            frame: u64::from(len),
                            message: self.scanner.consumed(),
                        });
                    }
                }
                Ok(Scan::Complete(prefix + n))
            }
        }
    }
}

/// A whole message, with the 4-byte length prefix when the transport is framed.
pub fn frame(transport: Transport, message: bytes::BytesMut) -> bytes::BytesMut {
    if !transport.framed {
        return message;
    }
    let mut framed = bytes::BytesMut::with_capacity(message.len() + 4);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    framed
}

/// The message without its frame prefix.
pub fn unframed(transport: Transport, bytes: &[u8]) -> &[u8] {
    if transport.framed {
        &bytes[4..]
    } else {
        bytes
    }
}
