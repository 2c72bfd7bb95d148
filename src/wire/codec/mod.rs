//! Thrift wire codec: the bounded, streaming message scanner, message headers and the few
//! messages the proxy writes itself (exception replies).
//!
//! The proxy never decodes and re-encodes a whole message: the scanner walks the original
//! bytes to find where each message ends, so unknown fields and unknown methods pass untouched.
//!
//! Files: `wire` (protocol, the one type enum `Ty`, `ScanError`, varint and zigzag helpers),
//! `header` (message headers, parsed and written), `scanner` (finds where a message ends),
//! `reader` (pull reader over a whole message), `value` (decoded value trees), `writer` (writes
//! messages), `splice` (changes one field in place) and `reply` (the proxy's own replies).
//! Imports go one way only: `wire` ← `header` ← `scanner`, `reader` ← `value` ← `writer` ←
//! `reply`, with `splice` on `reader`; no file imports one that imports it back.

pub mod header;
pub mod path;
pub mod reader;
pub mod reply;
pub mod scanner;
pub mod splice;
pub mod value;
pub mod wire;
pub mod writer;

pub use header::{MessageHeader, MessageType};
pub use scanner::{Limits, Scan, Scanner, TopField};
pub use wire::{Protocol, ScanError, Ty};
