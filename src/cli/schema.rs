//! `tidemark schema list|show`.

use clap::Subcommand;

use super::Context;
use super::output::{json, print_table};
use crate::error::Result;
use crate::schema::Table;

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// List published tables and versions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one table's published schema.
    Show {
        table: String,
        #[arg(long, default_value_t = 1)]
        version: u32,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Context, cmd: SchemaCommand) -> Result<u8> {
    let registry = ctx.registry()?;
    match cmd {
        SchemaCommand::List { json: as_json } => {
            if as_json {
                let list: Vec<_> = registry.iter().map(|s| serde_json::json!({"table": s.table, "version": s.version, "columns": s.columns.len(), "description": s.description})).collect();
                json(&list);
            } else {
                let rows: Vec<Vec<String>> = registry
                    .iter()
                    .map(|s| {
                        vec![
                            s.table.to_string(),
                            format!("v{}", s.version),
                            s.columns.len().to_string(),
                            s.description.clone(),
                        ]
                    })
                    .collect();
                print_table(&["TABLE", "VERSION", "COLUMNS", "DESCRIPTION"], &rows);
            }
        }
        SchemaCommand::Show {
            table,
            version,
            json: as_json,
        } => {
            let schema = registry.get(table.parse::<Table>()?, version)?;
            if as_json {
                json(&*schema);
            } else {
                println!("{} v{}: {}\n", schema.table, schema.version, schema.description);
                let rows: Vec<Vec<String>> = schema
                    .columns
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.ty.to_string(),
                            if c.nullable { "null".into() } else { "not null".into() },
                            c.description.clone(),
                        ]
                    })
                    .collect();
                print_table(&["COLUMN", "TYPE", "NULL", "DESCRIPTION"], &rows);
            }
        }
    }
    Ok(0)
}
