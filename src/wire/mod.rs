//! The wire: the Thrift codec (`codec`: bounded scanning, reading, writing, splicing), the
//! transport (`transport`: protocol and framing detected, others refused), whole messages
//! (`framing`), the metastore's schema and its schema-exact reader (`schema`), the method
//! table (`router`), and the proxy's own answers in the protocol (`answer`).

pub mod answer;
pub mod codec;
pub mod framing;
pub mod router;
pub mod schema;
pub mod transport;
