//! [`Db`] on a Durable Object's SQLite storage.

use serde::de::DeserializeOwned;
use serde_json::Value;
use worker::{SqlStorage, SqlStorageValue};

use crate::db::{Db, SqlValue};
use crate::error::{ApiError, ApiResult};

pub struct SqlDb(pub SqlStorage);

fn bind(params: Vec<SqlValue>) -> Vec<SqlStorageValue> {
    params
        .into_iter()
        .map(|p| match p {
            SqlValue::Null => SqlStorageValue::Null,
            SqlValue::Int(i) => SqlStorageValue::Integer(i),
            SqlValue::Text(s) => SqlStorageValue::String(s),
        })
        .collect()
}

impl SqlDb {
    /// The rows as JSON values (not generic: one copy in the wasm).
    fn rows(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<Vec<Value>> {
        self.0
            .exec(sql, bind(params))
            .and_then(|c| c.to_array::<Value>())
            .map_err(ApiError::internal)
    }
}

impl Db for SqlDb {
    fn query<T: DeserializeOwned>(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<Vec<T>> {
        // Each row is read as a JSON value, then decoded by `crate::json` as the native `Db`
        // the tests run on does: decoding rows straight from the JS objects would compile
        // another decoder per row type into the wasm.
        self.rows(sql, params)?
            .into_iter()
            .map(|row| crate::json::decode(row).map_err(ApiError::internal))
            .collect()
    }

    fn exec(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<usize> {
        let cursor = self.0.exec(sql, bind(params)).map_err(ApiError::internal)?;
        // Drain the cursor so the statement has run to completion before counting.
        for row in cursor.raw() {
            row.map_err(ApiError::internal)?;
        }
        Ok(cursor.rows_written())
    }
}

/// Opens the object's storage and brings its schema up to date (once per object instance).
pub fn open(
    storage: &worker::Storage,
    ready: &std::cell::Cell<bool>,
    migrations: &[&[&str]],
) -> ApiResult<SqlDb> {
    let db = SqlDb(storage.sql());
    if !ready.get() {
        crate::db::migrate(&db, migrations)?;
        ready.set(true);
    }
    Ok(db)
}
