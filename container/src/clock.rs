//! Wall-clock times as the wire carries them (ISO-8601, UTC, milliseconds).

use std::time::SystemTime;

pub fn iso(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn now_iso() -> String {
    iso(SystemTime::now())
}
