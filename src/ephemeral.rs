//! A throwaway PostgreSQL cluster from the installed server binaries, for `demo`, tests and
//! benchmarks: `initdb` into a temporary directory, `postgres` on a free loopback port, fast
//! shutdown and removal on drop.
//!
//! When running as root (CI, containers) the server runs as an unprivileged user
//! (`TIDEMARK_PG_USER`, default `postgres`) through `setpriv`, because Postgres refuses root.
//! Binaries come from `TIDEMARK_PG_BIN`, `pg_config --bindir`, `/usr/lib/postgresql/*/bin`
//! (newest first) or `PATH`; `scripts/setup` installs them when none exist.
//!
//! Must not touch: anything outside its temporary directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};

pub struct EphemeralPostgres {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

fn run_as() -> Option<(String, String)> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let user = std::env::var("TIDEMARK_PG_USER").unwrap_or_else(|_| "postgres".into());
    let id = |flag: &str| {
        Command::new("id")
            .arg(flag)
            .arg(&user)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    Some((id("-u")?, id("-g")?))
}

/// Finds a directory holding `initdb` and `postgres`.
pub fn find_bindir() -> Result<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(d) = std::env::var("TIDEMARK_PG_BIN") {
        let d = PathBuf::from(d);
        if has(&d) {
            return Ok(d);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&d) {
            return Ok(d);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
            .filter(|(_, d)| has(d))
            .collect();
        versions.sort();
        if let Some((_, d)) = versions.pop() {
            return Ok(d);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has(&d) {
                return Ok(d);
            }
        }
    }
    Err(Error::new(
        ErrorKind::Unavailable,
        "no PostgreSQL server binaries (initdb, postgres) found; run scripts/setup or set TIDEMARK_PG_BIN",
    ))
}

fn command(bin: PathBuf, user: &Option<(String, String)>) -> Command {
    match user {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("--")
                .arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

impl EphemeralPostgres {
    /// Starts a fresh cluster; returns once it accepts connections.
    pub fn start() -> Result<EphemeralPostgres> {
        let bindir = find_bindir()?;
        let user = run_as();
        let dir = tempfile::Builder::new()
            .prefix("tidemark-pg-")
            .tempdir()
            .map_err(|e| Error::unexpected("cannot create a temp dir").with_source(e))?;
        let data = dir.path().join("data");
        if let Some((uid, gid)) = &user {
            let status = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(Error::unexpected("cannot hand the temp dir to the postgres user"));
            }
        }
        let out = command(bindir.join("initdb"), &user)
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::new(ErrorKind::Unavailable, "cannot run initdb").with_source(e))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::unexpected("no free port").with_source(e))?;
        let log = std::fs::File::create(dir.path().join("postgres.log"))
            .map_err(|e| Error::unexpected("cannot create log").with_source(e))?;
        if let Some((uid, gid)) = &user {
            let _ = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(dir.path().join("postgres.log"))
                .status();
        }
        let child = command(bindir.join("postgres"), &user)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "max_prepared_transactions=16",
                "-c",
                "shared_buffers=256MB",
                "-c",
                "max_wal_size=4GB",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Error::unexpected("log").with_source(e))?)
            .stderr(log)
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Unavailable, "cannot start postgres").with_source(e))?;
        let mut pg = EphemeralPostgres {
            dir,
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && pg.ready(&bindir) {
                return Ok(pg);
            }
            if let Some(c) = pg.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(pg.dir.path().join("postgres.log")).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!("postgres exited ({status}): {}", log.trim()),
                ));
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "postgres did not become ready in 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self, bindir: &Path) -> bool {
        let isready = bindir.join("pg_isready");
        if !isready.is_file() {
            return true;
        }
        Command::new(isready)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        let pool = crate::control::connect(&self.url("postgres"), "tidemark-setup", 1).await?;
        sqlx::query(&format!("CREATE DATABASE {}", crate::schema::quote_ident(name)))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(self.url(name))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for EphemeralPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT = fast shutdown: disconnect clients, stop cleanly, leave no orphans.
            let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
