//! The committed warehouse DDL (`warehouse/<kind>/<table>_v<major>.sql`) is exactly what the
//! published schemas generate: a schema change without `tidemark schema ddl --write warehouse`
//! fails here, naming the file.

use std::path::PathBuf;

use tidemark::deliver::ddl;
use tidemark::schema::Registry;

#[test]
fn committed_warehouse_ddl_matches_the_published_schemas() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("warehouse");
    let registry = Registry::embedded();
    let mut drift = Vec::new();
    let mut files = 0;
    for (kind, dir) in ddl::KINDS {
        for schema in registry.iter() {
            let path = root.join(dir).join(ddl::file_name(schema));
            let generated = ddl::generate(kind, schema).unwrap();
            files += 1;
            match std::fs::read_to_string(&path) {
                Ok(committed) if committed == generated => {}
                Ok(_) => drift.push(format!("{} differs", path.display())),
                Err(_) => drift.push(format!("{} is missing", path.display())),
            }
        }
        // No stale file for a table or major that is no longer published.
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !registry.iter().any(|s| ddl::file_name(s) == name) {
                drift.push(format!("{dir}/{name} belongs to no published schema"));
            }
        }
    }
    assert!(files >= 44, "every kind × table × major: {files}");
    assert!(
        drift.is_empty(),
        "warehouse DDL drifted from schemas/ (run `tidemark schema ddl --write warehouse`): {drift:#?}"
    );
}

#[test]
fn every_statement_quotes_its_identifiers() {
    let registry = Registry::embedded();
    let schema = registry.iter().next().unwrap();
    for (kind, _) in ddl::KINDS {
        let text = ddl::generate(kind, schema).unwrap();
        let quote = match kind.label() {
            "BIGQUERY" | "DATABRICKS" => '`',
            _ => '"',
        };
        for column in &schema.columns {
            let name = if kind.label() == "SNOWFLAKE" {
                column.name.to_uppercase()
            } else {
                column.name.clone()
            };
            assert!(
                text.contains(&format!("{quote}{name}{quote}")),
                "{kind}: column {name} is quoted in\n{text}"
            );
        }
    }
}
