//! The listener side: accepting connections (`server`: limits, drain on shutdown), serving
//! one client connection call by call (`connection`: read, decide, forward or answer, finish),
//! the caller's identity (`identity`: pinned, certificate, Kerberos, or `set_ugi`), and the
//! global budget of request bytes held (`budget`).

pub mod budget;
pub mod connection;
pub mod identity;
pub mod server;
