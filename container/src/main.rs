mod agents;
mod clock;
mod config;
mod error;
mod git;
mod process;

fn main() {}
