//! Clock, ids and settings from the Workers runtime.

use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// `crypto.randomUUID()`: random v4 UUIDs without pulling getrandom into the wasm.
    #[wasm_bindgen(js_namespace = crypto, js_name = randomUUID)]
    fn random_uuid() -> String;
}

pub fn new_id() -> String {
    random_uuid()
}

pub fn now_millis() -> i64 {
    js_sys::Date::now() as i64
}

pub fn now_iso() -> String {
    crate::time::iso_from_millis(now_millis())
}

/// A Worker var or secret; unset and empty are the same.
pub fn var(env: &worker::Env, name: &str) -> Option<String> {
    env.secret(name).ok().map(|s| s.to_string()).filter(|s| !s.is_empty())
}
