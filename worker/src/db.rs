//! The SQL seam between the Durable Objects' logic and their SQLite storage.
//!
//! The logic (rig, town, identity modules) is written against [`Db`], so it is plain Rust that
//! compiles and type-checks natively; the wasm build implements [`Db`] on the Durable Object's
//! `SqlStorage`. Every statement is synchronous: a sequence of `exec` calls with no `await`
//! between them is atomic in a Durable Object (no other event runs in between, and the writes
//! are committed together), which is what makes sling and done atomic.

use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// A bound parameter. Values from requests only ever reach SQL as one of these.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Text(String),
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}
impl From<&String> for SqlValue {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}
impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<u32> for SqlValue {
    fn from(v: u32) -> Self {
        Self::Int(i64::from(v))
    }
}
impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        Self::Int(i64::from(v))
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// `params![a, b, c]`: a `Vec<SqlValue>`.
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => { vec![$($crate::db::SqlValue::from($v)),*] };
}

pub trait Db {
    /// Runs a query and decodes each row (an object keyed by column name) into `T`.
    fn query<T: DeserializeOwned>(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<Vec<T>>;

    /// Runs a statement; returns the number of rows it wrote. SQLite in a Durable Object counts
    /// index entries too (an UPDATE of an indexed column of one row writes 2 or more), so test
    /// "did it change anything" with `> 0`, never `== 1`.
    fn exec(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<usize>;

    fn first<T: DeserializeOwned>(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<Option<T>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

#[derive(serde::Deserialize)]
struct Version {
    version: i64,
}

/// Brings a Durable Object's schema to `migrations.len()`. Migration `n` (0-based) takes the
/// schema from version `n` to `n + 1`; the version is kept in `gastown_schema`, so a later
/// release only appends migrations.
pub fn migrate<D: Db>(db: &D, migrations: &[&[&str]]) -> ApiResult<()> {
    db.exec("CREATE TABLE IF NOT EXISTS gastown_schema (version INTEGER NOT NULL)", vec![])?;
    let current =
        db.first::<Version>("SELECT version FROM gastown_schema", vec![])?.map(|v| v.version);
    let from = current.unwrap_or(0).max(0) as usize;
    if from > migrations.len() {
        return Err(ApiError::Internal(format!("schema version {from} is newer than this code")));
    }
    for stmts in &migrations[from..] {
        for stmt in *stmts {
            db.exec(stmt, vec![])?;
        }
    }
    let to = migrations.len() as i64;
    if current.is_none() {
        db.exec("INSERT INTO gastown_schema (version) VALUES (?)", params![to])?;
    } else if from as i64 != to {
        db.exec("UPDATE gastown_schema SET version = ?", params![to])?;
    }
    Ok(())
}

/// A `SELECT` with optional equality filters and pagination. Column names are `&'static str`
/// written in this crate; only values come from requests, and they are bound.
pub struct Select {
    sql: String,
    params: Vec<SqlValue>,
    has_where: bool,
}

impl Select {
    pub fn new(base: &'static str) -> Self {
        Self { sql: base.to_string(), params: Vec::new(), has_where: false }
    }

    /// Adds `AND column = ?` when `value` is set.
    pub fn eq(mut self, column: &'static str, value: Option<impl Into<SqlValue>>) -> Self {
        if let Some(v) = value {
            self.sql.push_str(if self.has_where { " AND " } else { " WHERE " });
            self.sql.push_str(column);
            self.sql.push_str(" = ?");
            self.params.push(v.into());
            self.has_where = true;
        }
        self
    }

    /// Finishes with `ORDER BY <order> LIMIT ? OFFSET ?`.
    pub fn page(mut self, order: &'static str, limit: u32, offset: u32) -> (String, Vec<SqlValue>) {
        self.sql.push_str(" ORDER BY ");
        self.sql.push_str(order);
        self.sql.push_str(" LIMIT ? OFFSET ?");
        self.params.push(limit.into());
        self.params.push(offset.into());
        (self.sql, self.params)
    }

    pub fn order(mut self, order: &'static str) -> (String, Vec<SqlValue>) {
        self.sql.push_str(" ORDER BY ");
        self.sql.push_str(order);
        (self.sql, self.params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn select_binds_values_and_never_inlines_them() {
        let (sql, params) = Select::new("SELECT * FROM beads")
            .eq("status", Some("open"))
            .eq("type", None::<String>)
            .eq("convoy_id", Some("x'; DROP TABLE beads; --"))
            .page("rowid", 10, 20);
        assert_eq!(sql, "SELECT * FROM beads WHERE status = ? AND convoy_id = ? ORDER BY rowid LIMIT ? OFFSET ?");
        assert_eq!(params[1], SqlValue::Text("x'; DROP TABLE beads; --".into()));
        assert_eq!(params[2..], [SqlValue::Int(10), SqlValue::Int(20)]);
    }

    /// Records statements; answers the version query with `version`.
    struct Recorder {
        version: Option<i64>,
        log: RefCell<Vec<String>>,
    }

    impl Db for Recorder {
        fn query<T: DeserializeOwned>(&self, sql: &str, _: Vec<SqlValue>) -> ApiResult<Vec<T>> {
            self.log.borrow_mut().push(sql.to_string());
            let rows: Vec<serde_json::Value> =
                self.version.iter().map(|v| serde_json::json!({ "version": v })).collect();
            serde_json::from_value(serde_json::Value::Array(rows)).map_err(ApiError::internal)
        }

        fn exec(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<usize> {
            self.log.borrow_mut().push(format!("{sql} {params:?}"));
            Ok(1)
        }
    }

    #[test]
    fn migrations_apply_only_what_is_new() {
        let m: &[&[&str]] = &[&["CREATE A"], &["CREATE B", "ALTER A"]];
        let fresh = Recorder { version: None, log: RefCell::default() };
        migrate(&fresh, m).expect("fresh");
        let log = fresh.log.into_inner();
        assert!(log.iter().any(|s| s == "CREATE A []") && log.iter().any(|s| s == "ALTER A []"));
        assert!(log
            .last()
            .is_some_and(|s| s.starts_with("INSERT INTO gastown_schema") && s.contains("Int(2)")));

        let at_one = Recorder { version: Some(1), log: RefCell::default() };
        migrate(&at_one, m).expect("upgrade");
        let log = at_one.log.into_inner();
        assert!(!log.iter().any(|s| s.starts_with("CREATE A")));
        assert!(log.iter().any(|s| s.starts_with("UPDATE gastown_schema") && s.contains("Int(2)")));

        let newer = Recorder { version: Some(3), log: RefCell::default() };
        assert!(migrate(&newer, m).is_err());
    }
}
