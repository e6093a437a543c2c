//! [`Db`] on a Durable Object's SQLite storage.

use serde::de::DeserializeOwned;
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

impl Db for SqlDb {
    fn query<T: DeserializeOwned>(&self, sql: &str, params: Vec<SqlValue>) -> ApiResult<Vec<T>> {
        self.0.exec(sql, bind(params)).and_then(|c| c.to_array::<T>()).map_err(ApiError::internal)
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
