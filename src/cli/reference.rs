//! `tidemark reference install|generate` and `tidemark reference postgres`: the reference
//! application for trying tidemark out and for benchmarks, on any database you point it at,
//! or on a throwaway cluster.

use clap::Subcommand;

use super::{Context, parse_instant};
use crate::control::{self, APP_CONTROL};
use crate::ephemeral::EphemeralPostgres;
use crate::error::Result;
use crate::reference::{self, GenerateSpec};

#[derive(Debug, Subcommand)]
pub enum ReferenceCommand {
    /// Create the reference application's tables (organizations + the ten hot tables).
    Install,
    /// Generate deterministic synthetic rows (needs superuser: it disables the updated_at trigger while loading).
    Generate {
        #[arg(long, default_value_t = 42)]
        seed: i32,
        #[arg(long, default_value_t = 3)]
        orgs: i32,
        /// Rows of `events`; other tables get proportional counts.
        #[arg(long, default_value_t = 100_000)]
        rows: i64,
        #[arg(long, default_value_t = 7)]
        days: i32,
        /// End of the generated history (RFC 3339 or date); default: the last full hour minus one hour.
        #[arg(long, value_parser = parse_instant)]
        end: Option<chrono::DateTime<chrono::Utc>>,
        /// Write `organizations` and `events` only (the same events rows as a full run): for
        /// large benchmarks, where the other nine tables would only take disk.
        #[arg(long)]
        only_events: bool,
    },
    /// Start a throwaway PostgreSQL cluster, print its URL on stdout, and keep it until
    /// interrupted (SIGINT/SIGTERM). For benchmarks and manual experiments.
    Postgres {
        /// Database to create in the cluster.
        #[arg(long, default_value = "app")]
        database: String,
    },
}

pub async fn run(ctx: &Context, cmd: ReferenceCommand) -> Result<u8> {
    match cmd {
        ReferenceCommand::Install => {
            let pool = control::connect(ctx.database_url()?, APP_CONTROL, 1).await?;
            reference::install(&pool).await?;
            println!("reference application schema installed");
            Ok(0)
        }
        ReferenceCommand::Generate {
            seed,
            orgs,
            rows,
            days,
            end,
            only_events,
        } => {
            let pool = control::connect(ctx.database_url()?, APP_CONTROL, 1).await?;
            let end =
                end.unwrap_or_else(|| crate::plan::align_down(chrono::Utc::now() - chrono::Duration::hours(1), 3600));
            let started = std::time::Instant::now();
            reference::generate(
                &pool,
                &GenerateSpec {
                    seed,
                    organizations: orgs,
                    rows,
                    days,
                    end,
                    only_events,
                },
            )
            .await?;
            let others = if only_events {
                "no rows in the other tables"
            } else {
                "proportional rows in the other tables"
            };
            println!(
                "generated {rows} events ({others}) for {orgs} organizations over {days} days ending {end} in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        ReferenceCommand::Postgres { database } => {
            let pg = EphemeralPostgres::start()?;
            let url = pg.create_database(&database).await?;
            println!("{url}");
            eprintln!(
                "throwaway PostgreSQL running (data in {}); interrupt to stop",
                pg.data_dir().display()
            );
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .map_err(|e| crate::Error::unexpected("cannot listen for SIGTERM").with_source(e))?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            drop(pg);
            Ok(0)
        }
    }
}
