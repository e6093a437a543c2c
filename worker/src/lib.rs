//! The Gastown Worker. Placeholder until the Worker issue lands: it only pins the crate into
//! the workspace so the shared types are checked for it.
pub use shared_types;
