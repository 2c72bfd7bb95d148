//! Operations: the audit trail (`audit`: one JSON line per decided call, a writer thread,
//! backpressure), every metric (`metrics`), the admin HTTP port (`admin`: `/metrics`,
//! `/healthz`, `/readyz`), and the process log (`telemetry`).

pub mod admin;
pub mod audit;
pub mod metrics;
pub mod telemetry;
