//! Connecting to the configured catalog, and classifying iceberg errors into the crate's kinds.

use std::collections::HashMap;
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder};

use super::config::CatalogConfig;
use super::storage::{ObjectStorage, ObjectStorageFactory};
use crate::error::{Error, ErrorKind, Result};

/// Builds (and for SQL and Glue, connects) the catalog. `warehouse` is the normalized
/// warehouse location; `s3` the S3 settings Glue reuses for its own client.
pub async fn connect(
    config: &CatalogConfig,
    warehouse: &str,
    storage: ObjectStorage,
    s3: &S3Settings,
) -> Result<Arc<dyn Catalog>> {
    let factory = Arc::new(ObjectStorageFactory::new(storage));
    match config {
        CatalogConfig::Sql {
            url,
            name,
            max_connections,
        } => {
            let uri = url.resolve()?;
            let scheme = uri.expose().split(':').next().unwrap_or_default();
            if !matches!(scheme, "postgres" | "postgresql") {
                return Err(Error::config(format!(
                    "ICEBERG_S3 sql catalog {url}: unsupported database '{scheme}'; this build has the Postgres driver only (postgres://…)"
                )));
            }
            // One plain connection first, with a deadline: the catalog's pool would retry a
            // refused connection for 30 s per attempt, and its errors say less.
            let probe = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                <sqlx::PgConnection as sqlx::Connection>::connect(uri.expose()),
            )
            .await;
            match probe {
                Ok(Ok(conn)) => {
                    let _ = sqlx::Connection::close(conn).await;
                }
                Ok(Err(e)) => {
                    return Err(Error::new(
                        sqlx_kind(&e),
                        format!("cannot connect to the Iceberg SQL catalog '{name}' ({url})"),
                    )
                    .with_source(e));
                }
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::DestinationTransient,
                        format!("cannot connect to the Iceberg SQL catalog '{name}' ({url}): no answer in 10 s"),
                    ));
                }
            }
            let props = HashMap::from([
                (
                    iceberg_catalog_sql::SQL_CATALOG_PROP_URI.to_string(),
                    uri.expose().to_string(),
                ),
                (
                    iceberg_catalog_sql::SQL_CATALOG_PROP_WAREHOUSE.to_string(),
                    warehouse.to_string(),
                ),
                (
                    iceberg_catalog_sql::SQL_CATALOG_PROP_BIND_STYLE.to_string(),
                    "DollarNumeric".to_string(),
                ),
                (
                    "pool.max-connections".to_string(),
                    max_connections.unwrap_or(4).to_string(),
                ),
            ]);
            let catalog = iceberg_catalog_sql::SqlCatalogBuilder::default()
                .with_storage_factory(factory)
                .load(name.clone(), props)
                .await
                .map_err(|e| classify(format!("cannot open the Iceberg SQL catalog '{name}' ({url})"), e))?;
            Ok(Arc::new(catalog))
        }
        CatalogConfig::Rest {
            uri,
            warehouse: rest_warehouse,
            prefix,
            token,
            credential,
            oauth2_server_uri,
            scope,
        } => {
            let mut props = HashMap::from([(iceberg_catalog_rest::REST_CATALOG_PROP_URI.to_string(), uri.clone())]);
            props.insert(
                iceberg_catalog_rest::REST_CATALOG_PROP_WAREHOUSE.to_string(),
                rest_warehouse.clone().unwrap_or_else(|| warehouse.to_string()),
            );
            if let Some(p) = prefix {
                props.insert("prefix".into(), p.clone());
            }
            if let Some(t) = token {
                props.insert("token".into(), t.resolve()?.expose().to_string());
            }
            if let Some(c) = credential {
                props.insert("credential".into(), c.resolve()?.expose().to_string());
            }
            if let Some(u) = oauth2_server_uri {
                props.insert("oauth2-server-uri".into(), u.clone());
            }
            if let Some(s) = scope {
                props.insert("scope".into(), s.clone());
            }
            let catalog = iceberg_catalog_rest::RestCatalogBuilder::default()
                .with_storage_factory(factory)
                .load("tidemark", props)
                .await
                .map_err(|e| classify(format!("cannot open the Iceberg REST catalog {uri}"), e))?;
            Ok(Arc::new(catalog))
        }
        #[cfg(feature = "iceberg-glue")]
        CatalogConfig::Glue { endpoint, catalog_id } => {
            use iceberg_catalog_glue as glue;
            let mut props = HashMap::from([(glue::GLUE_CATALOG_PROP_WAREHOUSE.to_string(), warehouse.to_string())]);
            if let Some(e) = endpoint {
                props.insert(glue::GLUE_CATALOG_PROP_URI.to_string(), e.clone());
            }
            if let Some(id) = catalog_id {
                props.insert(glue::GLUE_CATALOG_PROP_CATALOG_ID.to_string(), id.clone());
            }
            if let Some(r) = &s3.region {
                props.insert(glue::AWS_REGION_NAME.to_string(), r.clone());
            }
            if let Some((id, secret, token)) = &s3.keys {
                props.insert(glue::AWS_ACCESS_KEY_ID.to_string(), id.clone());
                props.insert(glue::AWS_SECRET_ACCESS_KEY.to_string(), secret.clone());
                if let Some(t) = token {
                    props.insert(glue::AWS_SESSION_TOKEN.to_string(), t.clone());
                }
            }
            let catalog = glue::GlueCatalogBuilder::default()
                .with_storage_factory(factory)
                .load("tidemark", props)
                .await
                .map_err(|e| classify("cannot open the AWS Glue catalog".to_string(), e))?;
            Ok(Arc::new(catalog))
        }
        #[cfg(not(feature = "iceberg-glue"))]
        CatalogConfig::Glue { .. } => {
            let _ = s3;
            Err(Error::config(
                "ICEBERG_S3 catalog type 'glue' is not in this build; rebuild with `--features iceberg-glue`",
            ))
        }
    }
}

/// Resolved S3 settings the Glue client shares with the object store (never logged).
#[derive(Default)]
#[cfg_attr(not(feature = "iceberg-glue"), allow(dead_code))]
pub struct S3Settings {
    pub region: Option<String>,
    /// Access key id, secret, session token.
    pub keys: Option<(String, String, Option<String>)>,
}

/// Maps an iceberg error (and what caused it: sqlx, object_store, HTTP) onto the crate's kinds.
/// `what` names the object (catalog, table, file) and the operation.
pub fn classify(what: String, e: iceberg::Error) -> Error {
    let kind = kind_of(&e);
    Error::new(kind, what).with_source(e)
}

fn sqlx_kind(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid authorization / password, insufficient privilege
            Some(c) if c.starts_with("28") || c == "42501" => ErrorKind::DestinationAuth,
            // the catalog database does not exist
            Some("3D000") => ErrorKind::Config,
            _ => ErrorKind::DestinationTransient,
        },
        sqlx::Error::Configuration(_) => ErrorKind::Config,
        _ => ErrorKind::DestinationTransient,
    }
}

fn kind_of(e: &iceberg::Error) -> ErrorKind {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(sqlx) = s.downcast_ref::<sqlx::Error>() {
            return sqlx_kind(sqlx);
        }
        if let Some(os) = s.downcast_ref::<object_store::Error>() {
            return match os {
                object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. } => {
                    ErrorKind::DestinationAuth
                }
                object_store::Error::NotSupported { .. } | object_store::Error::NotImplemented { .. } => {
                    ErrorKind::Config
                }
                _ => ErrorKind::DestinationTransient,
            };
        }
        source = s.source();
    }
    let text = e.to_string();
    if text.contains("status: 401") || text.contains("status: 403") {
        return ErrorKind::DestinationAuth;
    }
    match e.kind() {
        // The table metadata or data does not fit (schema, partition values, duplicate files,
        // encrypted table): repeating it cannot help.
        iceberg::ErrorKind::DataInvalid | iceberg::ErrorKind::FeatureUnsupported => ErrorKind::DestinationRejected,
        _ => ErrorKind::DestinationTransient,
    }
}
