//! Child processes: spawning and reaping ([`reaper`]), stopping a process group
//! ([`terminate`]), capturing output ([`output`]) and running short commands ([`command`]).

pub mod command;
pub mod output;
pub mod reaper;
pub mod terminate;

pub use reaper::{Exit, ExitWatch, Reaper};
