//! The repository under test: its root and its TOML files (wrangler.toml, Cargo.toml).

use std::path::{Path, PathBuf};

/// The workspace's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Every value of `key` in the table `header` of a TOML text, written as in the file:
/// `"[package]"` (one table) or `"[[durable_objects.bindings]]"` (an array of tables).
/// Text that is not valid TOML has no values.
pub fn toml_values(text: &str, header: &str, key: &str) -> Vec<String> {
    let Ok(doc) = text.parse::<toml::Table>() else { return Vec::new() };
    let path = header.trim_matches(|c| c == '[' || c == ']');
    let mut node = Some(toml::Value::Table(doc));
    for part in path.split('.') {
        node = node.and_then(|n| n.get(part).cloned());
    }
    let tables = match node {
        Some(toml::Value::Array(items)) => items,
        Some(table @ toml::Value::Table(_)) => vec![table],
        _ => Vec::new(),
    };
    tables
        .iter()
        .filter_map(|t| match t.get(key)? {
            toml::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .collect()
}

/// The first value of `key` in `header` (see [`toml_values`]).
pub fn toml_value(text: &str, header: &str, key: &str) -> Option<String> {
    toml_values(text, header, key).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tables_and_arrays_of_tables() {
        let text = "[package]\nname = \"p\" # comment\n\n[[bin]]\nname = \"b\"\n\n[[x.y]]\nk = \"1\"\n[[x.y]]\nk = 2\n";
        assert_eq!(toml_value(text, "[package]", "name").as_deref(), Some("p"));
        assert_eq!(toml_value(text, "[[bin]]", "name").as_deref(), Some("b"));
        assert_eq!(toml_values(text, "[[x.y]]", "k"), ["1", "2"]);
        assert!(toml_values(text, "[[nope]]", "k").is_empty());
        assert!(toml_values("not = toml = x", "[a]", "k").is_empty());
    }
}
