//! Published schema → Iceberg schema, partition spec, and the Arrow batches the writer takes.
//!
//! **Field ids** (stable, derived from `schemas/<table>/v<major>.json` alone):
//! - the published columns of a major, in file order, get ids `1..n`;
//! - then every list column's element gets the next id, in column order (`n+1, …`);
//! - a column added by a later minor version (appended to the file) gets the next id after
//!   the table's `last-column-id` when tidemark first delivers with it, then its element.
//!
//! This is the order Iceberg's own fresh-id assignment uses (all fields of a struct first,
//! then their children; `update_schema` continues from `last-column-id`), so the ids follow
//! from the published order and the sequence of minors, and never change for a column.
//!
//! **Type mapping** (lossless): uuid, text, inet → `string`; int2, int4 → `int` (Iceberg has no
//! 16-bit integer); int8 → `long`; float8 → `double`; bool → `boolean`; numeric(p,s) →
//! `decimal(p,s)`; timestamptz → `timestamptz` (µs, UTC); date → `date`; jsonb → `string`
//! (JSON text); text[] → `list<string>`.
//!
//! **Partition spec**: `organization_id` (identity), `day(updated_at)` as `updated_at_day`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef as ArrowSchemaRef};
use iceberg::spec::{
    ListType, NestedField, NestedFieldRef, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec,
};

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Column, ColumnType, TableSchema};

/// Name of the partition field on `updated_at`.
pub const DAY_PARTITION: &str = "updated_at_day";

/// `<table>_v<major>`, the Iceberg table of a published table and major version.
pub fn table_name(schema: &TableSchema) -> String {
    format!("{}_v{}", schema.table.name(), schema.version)
}

/// The Iceberg type of a published column type (without field ids for nested elements).
pub fn iceberg_type(ty: ColumnType, element_id: i32) -> Type {
    let p = |p| Type::Primitive(p);
    match ty {
        ColumnType::Uuid | ColumnType::Text | ColumnType::Inet | ColumnType::Jsonb => p(PrimitiveType::String),
        ColumnType::Int2 | ColumnType::Int4 => p(PrimitiveType::Int),
        ColumnType::Int8 => p(PrimitiveType::Long),
        ColumnType::Float8 => p(PrimitiveType::Double),
        ColumnType::Bool => p(PrimitiveType::Boolean),
        ColumnType::Numeric { precision, scale } => p(PrimitiveType::Decimal {
            precision: precision as u32,
            scale: scale as u32,
        }),
        ColumnType::Timestamptz => p(PrimitiveType::Timestamptz),
        ColumnType::Date => p(PrimitiveType::Date),
        ColumnType::TextArray => Type::List(ListType::new(Arc::new(NestedField::list_element(
            element_id,
            Type::Primitive(PrimitiveType::String),
            false,
        )))),
    }
}

fn field(id: i32, c: &Column, element_id: i32) -> NestedFieldRef {
    Arc::new(NestedField::new(id, &c.name, iceberg_type(c.ty, element_id), !c.nullable).with_doc(&c.description))
}

/// The Iceberg schema of a published schema, with the field ids of the module docs.
pub fn iceberg_schema(schema: &TableSchema) -> Result<Schema> {
    let n = schema.columns.len() as i32;
    let mut next_element = n;
    let fields: Vec<NestedFieldRef> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let element = if c.ty == ColumnType::TextArray {
                next_element += 1;
                next_element
            } else {
                0
            };
            field(i as i32 + 1, c, element)
        })
        .collect();
    let id = |name: &str| schema.column_index(name).map(|i| i as i32 + 1);
    Schema::builder()
        .with_schema_id(0)
        .with_fields(fields)
        // A row version is identified by (id, updated_at): the table keeps every version.
        .with_identifier_field_ids([id("id"), id("updated_at")].into_iter().flatten())
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::Schema,
                format!("cannot map {} to Iceberg", table_name(schema)),
            )
            .with_source(e)
        })
}

/// `organization_id` identity + `day(updated_at)`.
pub fn partition_spec(schema: &TableSchema) -> Result<UnboundPartitionSpec> {
    let id = |name: &str| {
        schema.column_index(name).map(|i| i as i32 + 1).ok_or_else(|| {
            Error::new(
                ErrorKind::Schema,
                format!("{} has no column {name}", table_name(schema)),
            )
        })
    };
    let (org, updated) = (id(&schema.organization_column)?, id("updated_at")?);
    let build = || -> iceberg::Result<UnboundPartitionSpec> {
        Ok(UnboundPartitionSpec::builder()
            .with_spec_id(0)
            .add_partition_field(org, &schema.organization_column, Transform::Identity)?
            .add_partition_field(updated, DAY_PARTITION, Transform::Day)?
            .build())
    };
    build().map_err(|e| {
        Error::new(
            ErrorKind::Schema,
            format!("cannot build the partition spec of {}", table_name(schema)),
        )
        .with_source(e)
    })
}

/// Table properties set at creation.
pub fn table_properties(schema: &TableSchema) -> HashMap<String, String> {
    HashMap::from([
        ("write.format.default".into(), "parquet".into()),
        ("write.parquet.compression-codec".into(), "zstd".into()),
        ("tidemark.table".into(), schema.table.name().into()),
        ("tidemark.schema-major".into(), schema.version.to_string()),
    ])
}

/// What a delivery must do to the table's current schema before writing.
#[derive(Debug)]
pub enum SchemaPlan {
    /// The table has exactly the published columns (same names, order, types, nullability).
    Matches,
    /// The published schema appends these columns (a new minor version): add them.
    Append(Vec<Column>),
}

/// Compares a table's current Iceberg schema with the published one. Anything but an exact
/// match or an appended suffix of nullable columns is a rejection naming the column.
pub fn plan_schema(table: &str, current: &Schema, published: &TableSchema) -> Result<SchemaPlan> {
    let fields = current.as_struct().fields();
    let reject = |what: String| {
        Error::new(
            ErrorKind::DestinationRejected,
            format!(
                "Iceberg table {table} does not fit the published schema {} v{}: {what}",
                published.table, published.version
            ),
        )
    };
    if fields.len() > published.columns.len() {
        let extra: Vec<_> = fields[published.columns.len()..]
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        return Err(reject(format!(
            "the table has columns the schema does not publish: {}",
            extra.join(", ")
        )));
    }
    for (f, c) in fields.iter().zip(&published.columns) {
        if f.name != c.name {
            return Err(reject(format!(
                "column {} of the table is '{}', the schema has '{}'",
                f.id, f.name, c.name
            )));
        }
        if !same_type(&f.field_type, c.ty) {
            return Err(reject(format!(
                "column '{}' is {} in the table, {} maps to {}",
                c.name,
                f.field_type,
                c.ty,
                iceberg_type(c.ty, 0)
            )));
        }
        if f.required == c.nullable {
            return Err(reject(format!(
                "column '{}' is {} in the table but {} in the schema",
                c.name,
                if f.required { "required" } else { "optional" },
                if c.nullable { "nullable" } else { "not null" }
            )));
        }
    }
    let appended = &published.columns[fields.len()..];
    if appended.is_empty() {
        return Ok(SchemaPlan::Matches);
    }
    if let Some(c) = appended.iter().find(|c| !c.nullable) {
        return Err(reject(format!(
            "column '{}' is new and not nullable; a minor version may only add nullable columns",
            c.name
        )));
    }
    Ok(SchemaPlan::Append(appended.to_vec()))
}

fn same_type(t: &Type, ty: ColumnType) -> bool {
    match (t, ty) {
        (Type::List(l), ColumnType::TextArray) => *l.element_field.field_type == Type::Primitive(PrimitiveType::String),
        (t, ty) => *t == iceberg_type(ty, 0),
    }
}

/// Rebuilds a batch of the published Arrow schema with the table's Arrow schema (field ids in
/// the metadata, `+00:00` time zone, 32-bit ints for int2, `element` list items). Zero-copy
/// except for int2 columns.
pub fn to_table_batch(batch: &RecordBatch, target: &ArrowSchemaRef, published: &TableSchema) -> Result<RecordBatch> {
    let columns = published
        .columns
        .iter()
        .zip(target.fields())
        .enumerate()
        .map(|(i, (c, f))| convert(batch.column(i), c.ty, f))
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(target.clone(), columns).map_err(|e| {
        Error::new(
            ErrorKind::DataInvalid,
            format!("cannot shape a batch of {} for Iceberg", published.table),
        )
        .with_source(e)
    })
}

fn convert(array: &ArrayRef, ty: ColumnType, target: &Field) -> Result<ArrayRef> {
    Ok(match (ty, target.data_type()) {
        (ColumnType::Int2, DataType::Int32) => {
            Arc::new(array.as_primitive::<Int16Type>().unary::<_, Int32Type>(i32::from)) as ArrayRef
        }
        (ColumnType::Timestamptz, DataType::Timestamp(_, Some(tz))) => Arc::new(
            array
                .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                .clone()
                .with_timezone(tz.clone()),
        ),
        (ColumnType::TextArray, DataType::List(element)) => {
            let list = array.as_list::<i32>();
            Arc::new(ListArray::try_new(
                element.clone(),
                list.offsets().clone(),
                list.values().clone(),
                list.nulls().cloned(),
            )?)
        }
        _ => array.clone(),
    })
}

/// Spark SQL that creates the same table (for engines that create tables themselves) and the
/// `<table>_v<major>_latest` view of the newest version of each id.
pub fn create_statements(schema: &TableSchema, namespace: &str) -> Vec<String> {
    let table = format!("{}.{}", quote_spark(namespace), quote_spark(&table_name(schema)));
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            format!(
                "  {} {}{} COMMENT '{}'",
                quote_spark(&c.name),
                spark_type(c.ty),
                if c.nullable { "" } else { " NOT NULL" },
                c.description.replace('\\', "\\\\").replace('\'', "\\'")
            )
        })
        .collect();
    let list: Vec<String> = schema.columns.iter().map(|c| quote_spark(&c.name)).collect();
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (\n{}\n) USING iceberg\nPARTITIONED BY ({}, days({}))\nTBLPROPERTIES ('format-version' = '2', 'write.parquet.compression-codec' = 'zstd')",
            columns.join(",\n"),
            quote_spark(&schema.organization_column),
            quote_spark("updated_at")
        ),
        format!(
            "CREATE OR REPLACE VIEW {}.{} AS\nSELECT {} FROM (\n  SELECT *, row_number() OVER (PARTITION BY {} ORDER BY {} DESC) AS _tidemark_rank FROM {table}\n) WHERE _tidemark_rank = 1",
            quote_spark(namespace),
            quote_spark(&format!("{}_latest", table_name(schema))),
            list.join(", "),
            quote_spark("id"),
            quote_spark("updated_at"),
        ),
    ]
}

fn spark_type(ty: ColumnType) -> String {
    match ty {
        ColumnType::Uuid | ColumnType::Text | ColumnType::Inet | ColumnType::Jsonb => "STRING".into(),
        ColumnType::Int2 | ColumnType::Int4 => "INT".into(),
        ColumnType::Int8 => "BIGINT".into(),
        ColumnType::Float8 => "DOUBLE".into(),
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Numeric { precision, scale } => format!("DECIMAL({precision},{scale})"),
        ColumnType::Timestamptz => "TIMESTAMP".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::TextArray => "ARRAY<STRING>".into(),
    }
}

/// Spark SQL identifier quoting: `` `a``b` ``.
pub fn quote_spark(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Registry, Table};

    #[test]
    fn field_ids_follow_the_published_order_then_list_elements() {
        let events = Registry::embedded().get(Table::Events, 1).unwrap();
        let schema = iceberg_schema(&events).unwrap();
        for (i, c) in events.columns.iter().enumerate() {
            let f = schema.field_by_name(&c.name).unwrap();
            assert_eq!(f.id, i as i32 + 1, "{}", c.name);
            assert_eq!(f.required, !c.nullable, "{}", c.name);
        }
        let n = events.columns.len() as i32;
        let Type::List(tags) = schema.field_by_name("tags").unwrap().field_type.as_ref() else {
            panic!("tags is a list")
        };
        assert_eq!(tags.element_field.id, n + 1);
        assert_eq!(schema.highest_field_id(), n + 1);
        assert_eq!(schema.identifier_field_ids().collect::<Vec<_>>().len(), 2);
    }

    #[test]
    fn every_published_table_maps_and_converts() {
        for s in Registry::embedded().iter() {
            let schema = iceberg_schema(s).unwrap();
            let arrow = iceberg::arrow::schema_to_arrow_schema(&schema).unwrap();
            assert_eq!(arrow.fields().len(), s.columns.len());
            partition_spec(s).unwrap();
            assert!(matches!(plan_schema("t", &schema, s).unwrap(), SchemaPlan::Matches));
            assert_eq!(create_statements(s, "ns").len(), 2);
        }
    }

    #[test]
    fn schema_plan_appends_nullable_columns_and_rejects_the_rest() {
        let events = Registry::embedded().get(Table::Events, 1).unwrap();
        let mut older = (*events).clone();
        older.columns.truncate(older.columns.len() - 2);
        let table = iceberg_schema(&older).unwrap();
        // created_at and updated_at are not nullable: appending them is refused.
        let err = plan_schema("ns.events_v1", &table, &events).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DestinationRejected);
        assert!(
            err.to_string().contains("'created_at' is new and not nullable"),
            "{err}"
        );

        let mut newer = (*events).clone();
        newer.columns.push(Column {
            name: "verdict".into(),
            ty: ColumnType::Text,
            nullable: true,
            description: "added in a minor".into(),
            expression: None,
        });
        let table = iceberg_schema(&events).unwrap();
        match plan_schema("ns.events_v1", &table, &newer).unwrap() {
            SchemaPlan::Append(cols) => assert_eq!(cols[0].name, "verdict"),
            other => panic!("{other:?}"),
        }

        let mut wrong = (*events).clone();
        wrong.columns[4].ty = ColumnType::Int8;
        let err = plan_schema("ns.events_v1", &iceberg_schema(&wrong).unwrap(), &events).unwrap_err();
        assert!(
            err.to_string().contains("column 'severity' is long in the table"),
            "{err}"
        );
    }
}
