//! Wire types and input validation shared by the Gastown Worker and the town container.
//!
//! This crate compiles for native targets and for `wasm32-unknown-unknown`: it has no I/O, no
//! async runtime and no clock. Times travel as ISO-8601 strings produced by the caller.
//!
//! - [`backoff`]: the exponential backoff both sides retry by.
//! - [`control`]: the container control server's requests and responses (camelCase, as the
//!   reference implementation's TypeScript types).
//! - [`heartbeat`]: the batched heartbeat the container sends to the Worker.
//! - [`records`]: the records the Worker's API answers with (beads, agents, mail, reviews, ...).
//! - [`refinery`]: merge jobs (a reviewed branch into the default branch, with quality gates).
//! - [`text`]: cutting free text to a bound, marked with `…`.
//! - [`validate`]: the checks both sides apply to ids, branch names, git URLs and environment
//!   variables before anything touches a disk, a process or a database.

pub mod backoff;
pub mod control;
pub mod heartbeat;
pub mod records;
pub mod refinery;
pub mod text;
pub mod usage;
pub mod validate;

pub use control::*;
pub use heartbeat::*;
pub use refinery::*;
pub use usage::{Tokens, UsageReport};
pub use validate::{ValidationIssue, ValidationPolicy};
