//! Child processes: spawning and reaping ([`reaper`]), stopping a process group
//! ([`terminate`]), capturing output ([`output`]), running short commands ([`command`]) and
//! reading /proc ([`procfs`]).

pub mod command;
pub mod output;
pub mod procfs;
pub mod reaper;
pub mod terminate;

pub use reaper::{Exit, ExitWatch, Reaper};
