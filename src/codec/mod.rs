//! Thrift wire codec: the bounded, streaming message scanner, message headers and the few
//! messages the proxy writes itself (exception replies).
//!
//! The proxy never decodes and re-encodes a whole message: the scanner walks the original
//! bytes to find where each message ends, so unknown fields and unknown methods pass untouched.

pub mod header;
pub mod reader;
pub mod reply;
pub mod scanner;
pub mod splice;
pub mod value;
pub mod writer;

pub use header::{MessageHeader, MessageType};
pub use scanner::{Limits, Protocol, Scan, ScanError, Scanner};
