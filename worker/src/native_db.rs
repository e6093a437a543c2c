//! [`Db`] on an in-memory SQLite (rusqlite, bundled: the same engine as a Durable Object's
//! storage), so the objects' SQL logic runs under `cargo test`, with no `wrangler dev`.
//! Test-only: the Worker itself never links it.

use rusqlite::types::ValueRef;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::db::{Db, SqlValue};
use crate::error::{ApiError, ApiResult};

pub struct NativeDb(rusqlite::Connection);

fn bind(params: &[SqlValue]) -> Vec<rusqlite::types::Value> {
    params
        .iter()
        .map(|p| match p {
            SqlValue::Null => rusqlite::types::Value::Null,
            SqlValue::Int(i) => rusqlite::types::Value::Integer(*i),
            SqlValue::Text(s) => rusqlite::types::Value::Text(s.clone()),
        })
        .collect()
}

/// A column as a Durable Object hands it to serde: numbers, strings and null.
fn json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => Value::from(f),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::from(b.to_vec()),
    }
}

impl NativeDb {
    /// A fresh database with `migrations` applied, as an object's first request does.
    pub fn with(migrations: &[&[&str]]) -> Self {
        let db = Self(rusqlite::Connection::open_in_memory().expect("in-memory SQLite"));
        crate::db::migrate(&db, migrations).expect("migrations apply");
        db
    }

    /// SQLite's plan for `sql` (`EXPLAIN QUERY PLAN`), one step per line.
    pub fn plan(&self, sql: &str, params: Vec<SqlValue>) -> String {
        #[derive(serde::Deserialize)]
        struct Step {
            detail: String,
        }
        let steps: Vec<Step> =
            self.query(&format!("EXPLAIN QUERY PLAN {sql}"), params).expect("a plan");
        steps.into_iter().map(|s| s.detail).collect::<Vec<_>>().join("\n")
    }
}

impl Db for NativeDb {
    fn query<T: DeserializeOwned>(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<Vec<T>> {
        let mut stmt = self.0.prepare(sql).map_err(ApiError::internal)?;
        let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let mut rows =
            stmt.query(rusqlite::params_from_iter(bind(&params))).map_err(ApiError::internal)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(ApiError::internal)? {
            let mut object = Map::new();
            for (i, name) in names.iter().enumerate() {
                object.insert(name.clone(), json(row.get_ref(i).map_err(ApiError::internal)?));
            }
            out.push(crate::json::decode(Value::Object(object)).map_err(ApiError::internal)?);
        }
        Ok(out)
    }

    fn exec(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<usize> {
        let mut stmt = self.0.prepare(sql).map_err(ApiError::internal)?;
        let mut rows =
            stmt.query(rusqlite::params_from_iter(bind(&params))).map_err(ApiError::internal)?;
        while rows.next().map_err(ApiError::internal)?.is_some() {}
        Ok(usize::try_from(self.0.changes()).unwrap_or(usize::MAX))
    }
}
