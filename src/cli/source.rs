//! `tidemark source install-delete-capture`: delete capture on the source database (see
//! `crate::capture` and docs/DELETES.md).

use clap::Subcommand;

use super::Context;
use super::output::{json, print_table};
use crate::capture;
use crate::error::Result;
use crate::schema::Table;

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Record hard deletes of the hot tables so windows export them as `_op = 'D'` rows.
    ///
    /// Creates, in the source role's current schema, the delete log `tidemark_delete_log`
    /// (table, id, organization, deleted_at = now() of the deleting transaction, the row's last
    /// values as jsonb) and an AFTER DELETE trigger `tidemark_delete_capture` on each table.
    /// Deletes made by the cold-storage pass (`tidemark tombstone`, which sets
    /// tidemark.archival = 'on') are not recorded: archiving is not a business delete.
    /// TRUNCATE is not captured. Idempotent: run it again after adding tables.
    ///
    /// Needs a role that may create tables and triggers on the hot tables (the table owner).
    /// With --uninstall, removes the triggers; once no table is captured, also the delete log,
    /// with any deletes not yet exported.
    InstallDeleteCapture {
        /// Tables to capture, comma-separated (default: all ten hot tables).
        #[arg(long, value_delimiter = ',')]
        tables: Vec<Table>,
        /// Remove the capture from these tables (all by default) instead of installing it.
        #[arg(long)]
        uninstall: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, cmd: SourceCommand) -> Result<u8> {
    match cmd {
        SourceCommand::InstallDeleteCapture {
            tables,
            uninstall,
            json: as_json,
        } => {
            let tables = if tables.is_empty() { Table::ALL.to_vec() } else { tables };
            let source = ctx.source().await?;
            let report = if uninstall {
                capture::uninstall(&source, &tables).await?
            } else {
                capture::install(&source, &*ctx.registry()?, &tables).await?
            };
            if as_json {
                json(&report);
            } else {
                match &report.delete_log {
                    Some(log) => println!("delete log: {log}"),
                    None => println!("delete log: not installed"),
                }
                let rows: Vec<Vec<String>> = report
                    .tables
                    .iter()
                    .map(|t| {
                        vec![
                            t.table.to_string(),
                            if t.captured { "captured" } else { "-" }.to_string(),
                        ]
                    })
                    .collect();
                print_table(&["table", "deletes"], &rows);
            }
            Ok(0)
        }
    }
}
