//! The Prometheus text endpoint: the server the daemon runs ([`server`], with the
//! [`exposition`] format it serves) and the client `capture-daemon status` reads it with
//! ([`client`]).

pub mod client;
pub mod exposition;
pub mod server;
