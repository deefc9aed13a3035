//! `tidemark schema list|show|check|release`.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::Context;
use super::output::{json, print_table};
use crate::control::destinations::DestinationKind;
use crate::deliver::ddl as warehouse_ddl;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::Table;
use crate::schema::compat::{self, Baseline, LOCK_FILE};

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
    /// Refuse non-additive changes to released schema files (exit 3 on any violation).
    ///
    /// Compares every `<table>/v<major>.json` in the schemas directory (--schemas-dir, default
    /// ./schemas) with the previous release, recorded in `<dir>/RELEASED.json` by `schema
    /// release`. Inside a major only new nullable columns after the released ones are allowed;
    /// a breaking change goes in `v<major+1>.json`.
    Check {
        /// Compare with this lock file, or with this directory of schema files (e.g. the last
        /// release's, from `git archive <tag> schemas | tar -x`), instead of <dir>/RELEASED.json.
        #[arg(long)]
        against: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Record the current schema files as released (rewrites <dir>/RELEASED.json); refuses,
    /// like `check`, when a released contract was broken.
    Release {
        #[arg(long)]
        json: bool,
    },
    /// Warehouse DDL (raw history table, analyst table, `latest` view) generated from the
    /// published schemas: print it, write the `warehouse/` tree, or check that tree for drift.
    ///
    /// Without --write/--check, prints the DDL of --warehouse (and --table, if given).
    /// `--write warehouse` (re)writes warehouse/<kind>/<table>_v<major>.sql for every kind;
    /// `--check warehouse` exits 3 naming every file that differs from what the schemas give.
    Ddl {
        /// SNOWFLAKE, BIGQUERY, DATABRICKS or POSTGRES_REPLICA (default: all, for --write/--check).
        #[arg(long)]
        warehouse: Option<DestinationKind>,
        #[arg(long)]
        table: Option<Table>,
        /// Write the files under this directory (normally `warehouse`).
        #[arg(long, conflicts_with = "check")]
        write: Option<PathBuf>,
        /// Compare the files under this directory with the generated DDL.
        #[arg(long)]
        check: Option<PathBuf>,
    },
}

/// `--schemas-dir`, else `./schemas`.
fn schemas_dir(ctx: &Context) -> Result<PathBuf> {
    let dir = ctx.schemas_dir.clone().unwrap_or_else(|| PathBuf::from("schemas"));
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::invalid(format!(
            "no schemas directory at {}: run in the repository root or pass --schemas-dir",
            dir.display()
        )))
    }
}

fn check(ctx: &Context, against: Option<&Path>, as_json: bool) -> Result<u8> {
    let dir = schemas_dir(ctx)?;
    let baseline = match against {
        Some(p) => Baseline::from_path(p),
        None => Baseline::Lock(dir.join(LOCK_FILE)),
    };
    let report = compat::check(&dir, &baseline)?;
    if as_json {
        json(&report);
    } else {
        print!("{}", compat::render_text(&report));
    }
    Ok(if report.ok { 0 } else { 3 })
}

fn release(ctx: &Context, as_json: bool) -> Result<u8> {
    let dir = schemas_dir(ctx)?;
    let (report, changed) = compat::release(&dir)?;
    let lock = dir.join(LOCK_FILE);
    if as_json {
        json(&serde_json::json!({"released": report.ok, "lock": lock, "changed": changed, "report": report}));
    } else {
        print!("{}", compat::render_text(&report));
        if report.ok && changed {
            println!("released: wrote {}; commit it with the schema files", lock.display());
        } else if report.ok {
            println!("released: {} already records these schema files", lock.display());
        } else {
            println!("not released: {} is unchanged", lock.display());
        }
    }
    Ok(if report.ok { 0 } else { 3 })
}

pub fn run(ctx: &Context, cmd: SchemaCommand) -> Result<u8> {
    match cmd {
        SchemaCommand::Check { against, json } => return check(ctx, against.as_deref(), json),
        SchemaCommand::Release { json } => return release(ctx, json),
        SchemaCommand::Ddl {
            warehouse,
            table,
            write,
            check,
        } => return ddl(ctx, warehouse, table, write.as_deref(), check.as_deref()),
        _ => {}
    }
    let registry = ctx.registry()?;
    match cmd {
        SchemaCommand::Check { .. } | SchemaCommand::Release { .. } | SchemaCommand::Ddl { .. } => {
            unreachable!("handled above")
        }
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
                            match &c.expression {
                                Some(e) => format!("{} [derived: {e}]", c.description),
                                None => c.description.clone(),
                            },
                        ]
                    })
                    .collect();
                print_table(&["COLUMN", "TYPE", "NULL", "DESCRIPTION"], &rows);
            }
        }
    }
    Ok(0)
}

fn ddl(
    ctx: &Context,
    warehouse: Option<DestinationKind>,
    table: Option<Table>,
    write: Option<&Path>,
    check: Option<&Path>,
) -> Result<u8> {
    let registry = ctx.registry()?;
    let kinds: Vec<DestinationKind> = match warehouse {
        Some(k) => {
            warehouse_ddl::directory(k)?;
            vec![k]
        }
        None if write.is_some() || check.is_some() => warehouse_ddl::KINDS.iter().map(|(k, _)| *k).collect(),
        None => {
            return Err(Error::invalid(
                "pass --warehouse KIND (or --write/--check DIR for every kind)",
            ));
        }
    };
    let schemas: Vec<_> = registry.iter().filter(|s| table.is_none_or(|t| s.table == t)).collect();
    let mut drift = Vec::new();
    for kind in kinds {
        let dir = warehouse_ddl::directory(kind)?;
        for schema in &schemas {
            let text = warehouse_ddl::generate(kind, schema)?;
            let rel = Path::new(dir).join(warehouse_ddl::file_name(schema));
            match (write, check) {
                (Some(root), _) => {
                    let path = root.join(&rel);
                    std::fs::create_dir_all(path.parent().expect("has a parent"))
                        .and_then(|_| std::fs::write(&path, &text))
                        .map_err(|e| Error::invalid(format!("cannot write {}", path.display())).with_source(e))?;
                    println!("wrote {}", path.display());
                }
                (None, Some(root)) => {
                    let path = root.join(&rel);
                    match std::fs::read_to_string(&path) {
                        Ok(committed) if committed == text => {}
                        Ok(_) => drift.push(format!("{} differs from the DDL its schema gives", path.display())),
                        Err(_) => drift.push(format!("{} is missing", path.display())),
                    }
                }
                (None, None) => print!("{text}"),
            }
        }
    }
    if drift.is_empty() {
        if let Some(root) = check {
            println!("warehouse DDL under {} matches the published schemas", root.display());
        }
        return Ok(0);
    }
    for d in &drift {
        eprintln!("drift: {d}");
    }
    Err(Error::new(
        ErrorKind::Schema,
        format!(
            "{} warehouse DDL file(s) drifted from schemas/; regenerate with `tidemark schema ddl --write warehouse` and commit",
            drift.len()
        ),
    ))
}
