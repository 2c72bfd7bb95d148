//! Transport detection: from the first bytes a client sends, decide how its messages are framed
//! and encoded, or recognise a transport the proxy does not speak (yet) and say which.

use std::fmt;

use crate::wire::codec::Protocol;

/// How one connection's messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    pub protocol: Protocol,
    /// Each message preceded by a 4-byte big-endian length (`TFramedTransport`).
    pub framed: bool,
}

impl Transport {
    /// A short label for logs and metrics: `binary`, `framed_binary`, `compact`, `framed_compact`.
    pub fn label(&self) -> &'static str {
        match (self.framed, self.protocol) {
            (false, Protocol::Binary) => "binary",
            (true, Protocol::Binary) => "framed_binary",
            (false, Protocol::Compact) => "compact",
            (true, Protocol::Compact) => "framed_compact",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Starts the proxy recognises but does not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Tls,
    Sasl,
    Http,
    NonStrictBinary,
    Unknown,
}

impl Rejected {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejected::Tls => "tls",
            Rejected::Sasl => "sasl",
            Rejected::Http => "http",
            Rejected::NonStrictBinary => "non_strict_binary",
            Rejected::Unknown => "unknown",
        }
    }

    /// Human explanation for the log.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Tls => "TLS handshake: TLS is not enabled on this listener",
            Rejected::Sasl => "SASL negotiation (Kerberos/PLAIN): SASL is not enabled on this listener (answered with a SASL BAD message saying so)",
            Rejected::Http => "HTTP request: this is the Thrift port (the admin port serves HTTP)",
            Rejected::NonStrictBinary => {
                "non-strict binary Thrift (old clients): only strict binary is accepted"
            }
            Rejected::Unknown => "not a Thrift binary or compact message",
        }
    }
}

/// Outcome of looking at a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    NeedMore,
    Accept(Transport),
    Reject(Rejected),
}

/// The most bytes `detect` ever needs to decide.
pub const DETECT_BYTES: usize = 6;

const HTTP_METHODS: [&[u8; 4]; 9] = [
    b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
];

/// Classifies a connection from its first bytes (at most `DETECT_BYTES` are looked at).
pub fn detect(first: &[u8]) -> Detect {
    let Some(&b0) = first.first() else {
        return Detect::NeedMore;
    };
    let unframed = |protocol| {
        Detect::Accept(Transport {
            protocol,
            framed: false,
        })
    };
    match b0 {
        0x80 => {
            return match first.get(1) {
                None => Detect::NeedMore,
                Some(0x01) => unframed(Protocol::Binary),
                Some(_) => Detect::Reject(Rejected::Unknown),
            }
        }
        0x82 => {
            return match first.get(1) {
                None => Detect::NeedMore,
                Some(b) if b & 0x1f == 1 => unframed(Protocol::Compact),
                Some(_) => Detect::Reject(Rejected::Unknown),
            }
        }
        0x16 => {
            return match first.get(1) {
                None => Detect::NeedMore,
                Some(0x03) => Detect::Reject(Rejected::Tls),
                Some(_) => Detect::Reject(Rejected::Unknown),
            }
        }
        _ => {}
    }
    if b0.is_ascii_uppercase() {
        if first.len() < 4 {
            return Detect::NeedMore;
        }
        if HTTP_METHODS.iter().any(|m| &first[..4] == *m) {
            return Detect::Reject(Rejected::Http);
        }
        return Detect::Reject(Rejected::Unknown);
    }
    if first.len() < DETECT_BYTES {
        return Detect::NeedMore;
    }
    // A 4-byte big-endian length: a frame (followed by a message start), a non-strict binary
    // method name length (followed by the name), or a SASL status byte + payload length.
    let framed = |protocol| {
        Detect::Accept(Transport {
            protocol,
            framed: true,
        })
    };
    match (first[4], first[5]) {
        (0x80, 0x01) if b0 < 0x80 => return framed(Protocol::Binary),
        (0x82, b) if b0 < 0x80 && b & 0x1f == 1 => return framed(Protocol::Compact),
        _ => {}
    }
    let len = u32::from_be_bytes([first[0], first[1], first[2], first[3]]);
    if (1..=5).contains(&b0) && first[5].is_ascii_alphanumeric() {
        // TSaslTransport: status (START=1 … COMPLETE=5), payload length, mechanism name.
        return Detect::Reject(Rejected::Sasl);
    }
    if (1..=1024).contains(&len) && first[4].is_ascii_graphic() {
        return Detect::Reject(Rejected::NonStrictBinary);
    }
    Detect::Reject(Rejected::Unknown)
}

/// What a SASL client (Kerberos, PLAIN) is told before the connection closes: a negotiation
/// message with status BAD carrying the reason (`sasl::bad`), which clients show as "Peer indicated
/// failure: …" instead of a bare end of stream.
pub const SASL_REFUSAL: &str = "hms-guard: SASL (Kerberos) is not enabled on this listener; \
name the user with set_ugi, connect through a pinned sidecar, or present a TLS client \
certificate (hms-guard docs/IDENTITY.md)";
