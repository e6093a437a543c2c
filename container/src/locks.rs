//! One async lock per key, made on first use: for work that must run one at a time per rig or
//! per share key while other keys go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct KeyedLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    /// The lock of `key` (the same one for every caller with that key).
    pub fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_string()).or_default().clone()
    }
}
