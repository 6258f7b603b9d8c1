//! The commands besides `run`: each uses the data path, none is part of it.
//!
//! - [`check`]: everything `run` needs, verified without attaching anything;
//! - [`status`]: a summary of the running daemon, read from its metrics endpoint;
//! - [`oneshot`]: `capture`, a dumpcap-style capture that ends.

pub mod check;
pub mod oneshot;
pub mod status;
