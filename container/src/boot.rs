//! This run of the control server: a random id made once per process. Heartbeats, `/health`,
//! every agent record and every 404 carry it, so the Worker can tell a run that has not
//! started yet from a run lost with an earlier boot (and a resent event from a new one).

use std::sync::OnceLock;

/// The boot id (16 characters of a random token), the same for the whole process.
pub fn id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| crate::secret::random_token().chars().take(16).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_id_per_process() {
        assert_eq!(super::id().len(), 16);
        assert_eq!(super::id(), super::id());
    }
}
