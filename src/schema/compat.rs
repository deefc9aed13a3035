//! Schema evolution rules: inside a major, a revision of `schemas/<table>/v<major>.json` may only
//! *add nullable columns after the released ones* (and edit descriptions). Anything else
//! (removing, retyping, reordering or re-deriving a column, tightening or loosening its
//! nullability, changing the primary key, cursor or organization column) breaks readers of the
//! released contract and belongs in a new major file, `v<major+1>.json`.
//!
//! "The previous release" is the lock file `schemas/RELEASED.json`, committed with the schemas
//! and rewritten only by `tidemark schema release`: for every released file it holds the file's
//! *contract* (what readers depend on: names, order, types, nullability, expressions, keys; not
//! descriptions) and the SHA-256 of that contract, so a hand edit of the lock is detected. The
//! check needs no git history and no network, so it runs the same in CI, in a shallow clone and
//! in a container. `--against DIR` compares with another copy of the schemas instead (e.g. the
//! last tag's, from `git archive`).
//!
//! Must not touch: the database, anything outside the schemas directory and the lock file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ColumnType, Table, TableSchema};
use crate::error::{Error, ErrorKind, Result};

/// Name of the lock file inside the schemas directory.
pub const LOCK_FILE: &str = "RELEASED.json";
const LOCK_FORMAT: u32 = 1;
const LOCK_ABOUT: &str = "Written by `tidemark schema release`; do not edit. The contract of every released schema file: `tidemark schema check` refuses any change to it other than new nullable columns after the released ones.";

/// One column as readers depend on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub nullable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// What readers of a schema file depend on: everything but the descriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub table: Table,
    pub version: u32,
    pub primary_key: Vec<String>,
    pub cursor: Vec<String>,
    pub organization_column: String,
    pub columns: Vec<ContractColumn>,
}

impl Contract {
    pub fn of(schema: &TableSchema) -> Contract {
        Contract {
            table: schema.table,
            version: schema.version,
            primary_key: schema.primary_key.clone(),
            cursor: schema.cursor.clone(),
            organization_column: schema.organization_column.clone(),
            columns: schema
                .columns
                .iter()
                .map(|c| ContractColumn {
                    name: c.name.clone(),
                    ty: c.ty,
                    nullable: c.nullable,
                    expression: c.expression.clone(),
                })
                .collect(),
        }
    }

    /// `<table>/v<major>.json`.
    pub fn file_name(&self) -> String {
        format!("{}/v{}.json", self.table.name(), self.version)
    }

    /// Hex SHA-256 of the contract's compact JSON (fields in declaration order).
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).expect("a contract serialises")))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    pub sha256: String,
    pub contract: Contract,
}

/// `schemas/RELEASED.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLock {
    pub about: String,
    pub format: u32,
    /// Keyed by `<table>/v<major>.json`.
    pub schemas: BTreeMap<String, LockEntry>,
}

impl ReleaseLock {
    pub fn empty() -> ReleaseLock {
        ReleaseLock {
            about: LOCK_ABOUT.into(),
            format: LOCK_FORMAT,
            schemas: BTreeMap::new(),
        }
    }

    pub fn read(path: &Path) -> Result<ReleaseLock> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Schema,
                format!("cannot read the release lock {}", path.display()),
            )
            .with_source(e)
        })?;
        let lock: ReleaseLock = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::Schema,
                format!("invalid release lock {}: {e}", path.display()),
            )
        })?;
        if lock.format != LOCK_FORMAT {
            return Err(Error::new(
                ErrorKind::Schema,
                format!(
                    "release lock {} has format {}; this tidemark reads format {LOCK_FORMAT}",
                    path.display(),
                    lock.format
                ),
            ));
        }
        Ok(lock)
    }

    /// A lock holding exactly these contracts.
    pub fn of<'a>(contracts: impl IntoIterator<Item = &'a Contract>) -> ReleaseLock {
        let mut lock = ReleaseLock::empty();
        for c in contracts {
            lock.schemas.insert(
                c.file_name(),
                LockEntry {
                    sha256: c.sha256(),
                    contract: c.clone(),
                },
            );
        }
        lock
    }

    /// The lock's text: JSON, one column per line so that a release reads well in a diff.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{{");
        let _ = writeln!(out, "  \"about\": {},", j(&self.about));
        let _ = writeln!(out, "  \"format\": {},", self.format);
        let _ = writeln!(out, "  \"schemas\": {{");
        let n = self.schemas.len();
        for (i, (file, entry)) in self.schemas.iter().enumerate() {
            let c = &entry.contract;
            let _ = writeln!(out, "    {}: {{", j(file));
            let _ = writeln!(out, "      \"sha256\": {},", j(&entry.sha256));
            let _ = writeln!(out, "      \"contract\": {{");
            let _ = writeln!(out, "        \"table\": {},", j(&c.table));
            let _ = writeln!(out, "        \"version\": {},", c.version);
            let _ = writeln!(out, "        \"primary_key\": {},", j(&c.primary_key));
            let _ = writeln!(out, "        \"cursor\": {},", j(&c.cursor));
            let _ = writeln!(out, "        \"organization_column\": {},", j(&c.organization_column));
            let _ = writeln!(out, "        \"columns\": [");
            for (k, col) in c.columns.iter().enumerate() {
                let comma = if k + 1 < c.columns.len() { "," } else { "" };
                let _ = writeln!(out, "          {}{comma}", j(col));
            }
            let _ = writeln!(out, "        ]");
            let _ = writeln!(out, "      }}");
            let _ = writeln!(out, "    }}{}", if i + 1 < n { "," } else { "" });
        }
        let _ = writeln!(out, "  }}");
        let _ = writeln!(out, "}}");
        out
    }
}

/// Compact JSON of a value.
fn j<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

/// What is wrong, one kind per rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    ColumnRemoved,
    ColumnRetyped,
    NullabilityTightened,
    NullabilityLoosened,
    NewColumnNotNullable,
    ColumnMoved,
    ExpressionChanged,
    PrimaryKeyChanged,
    CursorChanged,
    OrganizationColumnChanged,
    ReleasedFileRemoved,
    MajorMissing,
    InvalidFile,
    LockTampered,
}

/// One refused change.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The schema file, as given (`schemas/findings/v1.json`).
    pub file: String,
    pub table: Option<Table>,
    pub version: Option<u32>,
    pub column: Option<String>,
    pub kind: ViolationKind,
    /// One line: what changed, and what to do instead.
    pub message: String,
}

/// A change the next `schema release` will record (not an error).
#[derive(Debug, Clone, Serialize)]
pub struct Unreleased {
    pub file: String,
    /// `new_file` or `added_columns`.
    pub change: &'static str,
    pub added_columns: Vec<String>,
}

/// Result of `tidemark schema check`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub schemas_dir: String,
    /// The previous release: the lock file, or a directory of schema files.
    pub against: String,
    pub files_checked: usize,
    pub violations: Vec<Violation>,
    pub unreleased: Vec<Unreleased>,
}

/// The previous release to compare with.
#[derive(Debug, Clone)]
pub enum Baseline {
    /// A lock file (`schemas/RELEASED.json`); a missing file means nothing was released yet.
    Lock(PathBuf),
    /// Another copy of the schema files (e.g. the last release's, from `git archive`).
    Dir(PathBuf),
}

impl Baseline {
    /// `--against PATH`: a directory is a copy of the schemas, anything else a lock file.
    pub fn from_path(path: &Path) -> Baseline {
        if path.is_dir() {
            Baseline::Dir(path.to_path_buf())
        } else {
            Baseline::Lock(path.to_path_buf())
        }
    }

    fn describe(&self) -> String {
        match self {
            Baseline::Lock(p) => p.display().to_string(),
            Baseline::Dir(p) => format!("{} (schema files)", p.display()),
        }
    }
}

/// Every `<table>/v<major>.json` under `dir`: contracts of the files that parse (and sit where
/// they say they belong), a violation for each that does not.
pub fn read_dir(dir: &Path) -> Result<(BTreeMap<String, Contract>, Vec<Violation>)> {
    let mut contracts = BTreeMap::new();
    let mut problems = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::new(
            ErrorKind::Schema,
            format!("cannot read the schemas directory {}", dir.display()),
        )
        .with_source(e)
    })?;
    let mut paths = Vec::new();
    for entry in entries.flatten() {
        let tdir = entry.path();
        if !tdir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&tdir).into_iter().flatten().flatten() {
            paths.push(f.path());
        }
    }
    paths.sort();
    for path in paths {
        let (Some(tname), Some(fname)) = (
            path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()),
            path.file_name().and_then(|n| n.to_str()),
        ) else {
            continue;
        };
        let Some(major) = fname
            .strip_prefix('v')
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let shown = path.display().to_string();
        let invalid = |message: String| Violation {
            file: shown.clone(),
            table: tname.parse().ok(),
            version: Some(major),
            column: None,
            kind: ViolationKind::InvalidFile,
            message,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(invalid(format!("{shown}: cannot read: {e}")));
                continue;
            }
        };
        match TableSchema::parse(&text, &shown) {
            Ok(schema) if schema.table.name() == tname && schema.version == major => {
                contracts.insert(schema.file_name(), Contract::of(&schema));
            }
            Ok(schema) => problems.push(invalid(format!(
                "{shown}: declares table '{}' version {} but its path says '{tname}' version {major}",
                schema.table, schema.version
            ))),
            Err(e) => problems.push(invalid(e.message().to_string())),
        }
    }
    Ok((contracts, problems))
}

/// The contracts of the previous release, and any problem with the lock itself.
fn released(baseline: &Baseline) -> Result<(BTreeMap<String, Contract>, Vec<Violation>)> {
    match baseline {
        Baseline::Dir(d) => {
            let (contracts, problems) = read_dir(d)?;
            if let Some(p) = problems.first() {
                return Err(Error::new(
                    ErrorKind::Schema,
                    format!("the baseline {} has an invalid schema file: {}", d.display(), p.message),
                ));
            }
            Ok((contracts, Vec::new()))
        }
        Baseline::Lock(path) => {
            if !path.exists() {
                return Ok((BTreeMap::new(), Vec::new()));
            }
            let lock = ReleaseLock::read(path)?;
            let mut problems = Vec::new();
            let mut contracts = BTreeMap::new();
            for (file, entry) in lock.schemas {
                if entry.sha256 != entry.contract.sha256() || file != entry.contract.file_name() {
                    problems.push(Violation {
                        file: path.display().to_string(),
                        table: Some(entry.contract.table),
                        version: Some(entry.contract.version),
                        column: None,
                        kind: ViolationKind::LockTampered,
                        message: format!(
                            "{}: the entry for {file} does not match its sha256 (edited by hand?); restore it from version control: only `tidemark schema release` writes this file",
                            path.display()
                        ),
                    });
                }
                contracts.insert(file, entry.contract);
            }
            Ok((contracts, problems))
        }
    }
}

/// Checks every schema file under `dir` against the previous release.
pub fn check(dir: &Path, baseline: &Baseline) -> Result<Report> {
    let (current, mut violations) = read_dir(dir)?;
    let (released, lock_problems) = released(baseline)?;
    violations.extend(lock_problems);
    let shown = |file: &str| dir.join(file).display().to_string();
    let mut unreleased = Vec::new();
    for (file, old) in &released {
        match current.get(file) {
            Some(new) => {
                violations.extend(compare(old, new, &shown(file)));
                let added: Vec<String> = new
                    .columns
                    .iter()
                    .filter(|c| !old.columns.iter().any(|o| o.name == c.name))
                    .map(|c| c.name.clone())
                    .collect();
                if !added.is_empty() {
                    unreleased.push(Unreleased {
                        file: shown(file),
                        change: "added_columns",
                        added_columns: added,
                    });
                }
            }
            None if violations.iter().any(|v| v.file == shown(file)) => {}
            None => violations.push(Violation {
                file: shown(file),
                table: Some(old.table),
                version: Some(old.version),
                column: None,
                kind: ViolationKind::ReleasedFileRemoved,
                message: format!(
                    "{}: released major v{} of {} is gone; destinations may still receive it: restore the file (a major is retired per destination with `tidemark destination set-schema-versions`, never by deleting it)",
                    shown(file),
                    old.version,
                    old.table
                ),
            }),
        }
    }
    for file in current.keys().filter(|f| !released.contains_key(*f)) {
        unreleased.push(Unreleased {
            file: shown(file),
            change: "new_file",
            added_columns: Vec::new(),
        });
    }
    // Majors of a table are v1, v2, ... without gaps.
    let mut majors: BTreeMap<Table, BTreeSet<u32>> = BTreeMap::new();
    for c in current.values() {
        majors.entry(c.table).or_default().insert(c.version);
    }
    for (table, versions) in &majors {
        let max = *versions.iter().next_back().expect("non-empty");
        for v in (1..max).filter(|v| !versions.contains(v)) {
            let file = format!("{}/v{v}.json", table.name());
            if violations.iter().any(|x| x.file == shown(&file)) {
                continue;
            }
            violations.push(Violation {
                file: shown(&file),
                table: Some(*table),
                version: Some(v),
                column: None,
                kind: ViolationKind::MajorMissing,
                message: format!(
                    "{}: missing, but v{max} exists: majors of a table are numbered v1, v2, ... without gaps",
                    shown(&file)
                ),
            });
        }
    }
    violations.sort_by(|a, b| (&a.file, &a.column).cmp(&(&b.file, &b.column)));
    Ok(Report {
        ok: violations.is_empty(),
        schemas_dir: dir.display().to_string(),
        against: baseline.describe(),
        files_checked: current.len()
            + violations
                .iter()
                .filter(|v| v.kind == ViolationKind::InvalidFile)
                .count(),
        violations,
        unreleased,
    })
}

/// Records the current files as released: checks them against the lock first and refuses on
/// any violation (the report says why). Returns the report and whether the lock changed.
pub fn release(dir: &Path) -> Result<(Report, bool)> {
    let lock_path = dir.join(LOCK_FILE);
    let report = check(dir, &Baseline::Lock(lock_path.clone()))?;
    if !report.ok {
        return Ok((report, false));
    }
    let (current, _) = read_dir(dir)?;
    let text = ReleaseLock::of(current.values()).render();
    let changed = std::fs::read_to_string(&lock_path).ok().as_deref() != Some(text.as_str());
    if changed {
        std::fs::write(&lock_path, &text).map_err(|e| {
            Error::new(
                ErrorKind::Schema,
                format!("cannot write the release lock {}", lock_path.display()),
            )
            .with_source(e)
        })?;
    }
    Ok((report, changed))
}

/// Compares one released contract with its current revision (same table and major).
pub fn compare(old: &Contract, new: &Contract, file: &str) -> Vec<Violation> {
    let next = Path::new(file)
        .with_file_name(format!("v{}.json", old.version + 1))
        .display()
        .to_string();
    let bump = format!(
        "a breaking change goes in a new major: make it {next} (and keep v{}.json as released)",
        old.version
    );
    let mut out = Vec::new();
    let mut push = |kind: ViolationKind, column: Option<&str>, what: String| {
        let at = column.map(|c| format!(" column {c}:")).unwrap_or_default();
        out.push(Violation {
            file: file.to_string(),
            table: Some(old.table),
            version: Some(old.version),
            column: column.map(str::to_string),
            kind,
            message: format!("{file}:{at} {what} since the last release; {bump}"),
        });
    };
    if old.primary_key != new.primary_key {
        push(
            ViolationKind::PrimaryKeyChanged,
            None,
            format!(
                "primary key changed from {:?} to {:?}",
                old.primary_key, new.primary_key
            ),
        );
    }
    if old.cursor != new.cursor {
        push(
            ViolationKind::CursorChanged,
            None,
            format!("cursor changed from {:?} to {:?}", old.cursor, new.cursor),
        );
    }
    if old.organization_column != new.organization_column {
        push(
            ViolationKind::OrganizationColumnChanged,
            None,
            format!(
                "organization column changed from {} to {}",
                old.organization_column, new.organization_column
            ),
        );
    }
    let mut kept = Vec::new();
    for o in &old.columns {
        let Some((pos, n)) = new.columns.iter().enumerate().find(|(_, n)| n.name == o.name) else {
            push(
                ViolationKind::ColumnRemoved,
                Some(&o.name),
                format!(
                    "removed (it was {}{})",
                    o.ty,
                    if o.nullable { ", nullable" } else { ", not null" }
                ),
            );
            continue;
        };
        kept.push((o.name.as_str(), pos));
        if o.ty != n.ty {
            push(
                ViolationKind::ColumnRetyped,
                Some(&o.name),
                format!("type changed from {} to {}", o.ty, n.ty),
            );
        }
        if o.nullable && !n.nullable {
            push(
                ViolationKind::NullabilityTightened,
                Some(&o.name),
                "nullability tightened from nullable to not null (released rows and readers allow null)".into(),
            );
        } else if !o.nullable && n.nullable {
            push(
                ViolationKind::NullabilityLoosened,
                Some(&o.name),
                "nullability loosened from not null to nullable (readers and warehouse tables rely on not null)".into(),
            );
        }
        if o.expression != n.expression {
            let show = |e: &Option<String>| match e {
                Some(e) => format!("expression `{e}`"),
                None => "the source column".into(),
            };
            push(
                ViolationKind::ExpressionChanged,
                Some(&o.name),
                format!(
                    "derivation changed from {} to {} (the values of a released column would change meaning)",
                    show(&o.expression),
                    show(&n.expression)
                ),
            );
        }
    }
    // Released columns keep their order and come first; new columns are appended.
    if let Some((i, (name, pos))) = kept.iter().enumerate().find(|(i, (_, pos))| pos != i) {
        push(
            ViolationKind::ColumnMoved,
            Some(name),
            format!(
                "moved from position {} to {} (released columns keep their order and new columns go after them; positional loaders depend on it)",
                i + 1,
                pos + 1
            ),
        );
    }
    for n in &new.columns {
        if !n.nullable && !old.columns.iter().any(|o| o.name == n.name) {
            push(
                ViolationKind::NewColumnNotNullable,
                Some(&n.name),
                "added as not null (a revision may only add nullable columns: released rows have no value for it)"
                    .into(),
            );
        }
    }
    out
}

/// The report as text: one line per violation, then what the next release would record.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for v in &report.violations {
        let _ = writeln!(
            out,
            "violation [{}] {}",
            serde_json::to_value(v.kind)
                .expect("serialisable")
                .as_str()
                .unwrap_or(""),
            v.message
        );
    }
    for u in &report.unreleased {
        match u.change {
            "new_file" => {
                let _ = writeln!(
                    out,
                    "unreleased: {} is new (recorded by the next `tidemark schema release`)",
                    u.file
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "unreleased: {} adds nullable column(s) {} (recorded by the next `tidemark schema release`)",
                    u.file,
                    u.added_columns.join(", ")
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "{}: {} schema file(s) in {} checked against {}: {} violation(s)",
        if report.ok { "ok" } else { "refused" },
        report.files_checked,
        report.schemas_dir,
        report.against,
        report.violations.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Registry;

    fn findings() -> Contract {
        Contract::of(&Registry::embedded().get(Table::Findings, 1).unwrap())
    }

    fn kinds(old: &Contract, new: &Contract) -> Vec<(ViolationKind, Option<String>)> {
        compare(old, new, "schemas/findings/v1.json")
            .into_iter()
            .map(|v| (v.kind, v.column))
            .collect()
    }

    fn col(c: &Contract, name: &str) -> usize {
        c.columns.iter().position(|x| x.name == name).unwrap()
    }

    #[test]
    fn an_unchanged_contract_and_a_new_nullable_column_pass() {
        let old = findings();
        assert!(kinds(&old, &old).is_empty());
        let mut new = old.clone();
        new.columns.push(ContractColumn {
            name: "triage_note".into(),
            ty: ColumnType::Text,
            nullable: true,
            expression: None,
        });
        assert!(kinds(&old, &new).is_empty());
    }

    #[test]
    fn a_removed_column_is_refused_with_the_fix() {
        let old = findings();
        let mut new = old.clone();
        new.columns.retain(|c| c.name != "cvss");
        let v = compare(&old, &new, "schemas/findings/v1.json");
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::ColumnRemoved);
        assert_eq!(v[0].column.as_deref(), Some("cvss"));
        assert!(
            v[0].message.contains("schemas/findings/v1.json: column cvss: removed"),
            "{}",
            v[0].message
        );
        assert!(
            v[0].message.contains("make it schemas/findings/v2.json"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn a_retyped_column_is_refused() {
        let old = findings();
        let mut new = old.clone();
        let i = col(&new, "severity");
        new.columns[i].ty = ColumnType::Text;
        let v = compare(&old, &new, "f");
        assert_eq!(
            kinds(&old, &new),
            vec![(ViolationKind::ColumnRetyped, Some("severity".into()))]
        );
        assert!(v[0].message.contains("from int2 to text"), "{}", v[0].message);
        // Widening is a retype too.
        new.columns[i].ty = ColumnType::Int4;
        assert_eq!(kinds(&old, &new)[0].0, ViolationKind::ColumnRetyped);
    }

    #[test]
    fn nullability_changes_are_refused_both_ways() {
        let old = findings();
        let mut new = old.clone();
        let i = col(&new, "cvss");
        new.columns[i].nullable = false;
        assert_eq!(
            kinds(&old, &new),
            vec![(ViolationKind::NullabilityTightened, Some("cvss".into()))]
        );
        let mut new = old.clone();
        let i = col(&new, "title");
        new.columns[i].nullable = true;
        assert_eq!(
            kinds(&old, &new),
            vec![(ViolationKind::NullabilityLoosened, Some("title".into()))]
        );
    }

    #[test]
    fn a_new_required_column_is_refused() {
        let old = findings();
        let mut new = old.clone();
        new.columns.push(ContractColumn {
            name: "risk_score".into(),
            ty: ColumnType::Numeric { precision: 5, scale: 2 },
            nullable: false,
            expression: None,
        });
        assert_eq!(
            kinds(&old, &new),
            vec![(ViolationKind::NewColumnNotNullable, Some("risk_score".into()))]
        );
    }

    #[test]
    fn keys_and_cursor_changes_are_refused() {
        let old = findings();
        let mut new = old.clone();
        new.primary_key = vec!["id".into(), "organization_id".into()];
        new.cursor = vec!["created_at".into(), "id".into()];
        new.organization_column = "rule_id".into();
        let k: Vec<_> = kinds(&old, &new).into_iter().map(|k| k.0).collect();
        assert_eq!(
            k,
            vec![
                ViolationKind::PrimaryKeyChanged,
                ViolationKind::CursorChanged,
                ViolationKind::OrganizationColumnChanged
            ]
        );
    }

    #[test]
    fn moving_a_column_or_inserting_before_released_ones_is_refused() {
        let old = findings();
        let mut new = old.clone();
        new.columns.swap(2, 3);
        let k = kinds(&old, &new);
        assert_eq!(k.len(), 1, "{k:?}");
        assert_eq!(k[0].0, ViolationKind::ColumnMoved);
        let mut new = old.clone();
        new.columns.insert(
            1,
            ContractColumn {
                name: "note".into(),
                ty: ColumnType::Text,
                nullable: true,
                expression: None,
            },
        );
        assert_eq!(
            kinds(&old, &new),
            vec![(ViolationKind::ColumnMoved, Some("organization_id".into()))]
        );
    }

    #[test]
    fn changing_a_derivation_is_refused() {
        let old = findings();
        let mut new = old.clone();
        let i = col(&new, "title");
        new.columns[i].expression = Some("upper(title)".into());
        assert_eq!(
            kinds(&old, &new),
            vec![(ViolationKind::ExpressionChanged, Some("title".into()))]
        );
    }

    fn write_dir(contracts: &[(&str, serde_json::Value)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (file, json) in contracts {
            let p = dir.path().join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, serde_json::to_string_pretty(json).unwrap()).unwrap();
        }
        dir
    }

    fn v1_json() -> serde_json::Value {
        serde_json::to_value(&*Registry::embedded().get(Table::Findings, 1).unwrap()).unwrap()
    }

    #[test]
    fn release_then_check_then_a_breaking_edit_is_refused_and_the_lock_is_kept() {
        let dir = write_dir(&[("findings/v1.json", v1_json())]);
        let (report, changed) = release(dir.path()).unwrap();
        assert!(report.ok && changed, "{report:?}");
        let lock_text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        let lock = ReleaseLock::read(&dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(lock.schemas.len(), 1);
        // Released again unchanged: the lock is byte-identical.
        assert!(!release(dir.path()).unwrap().1);

        let mut broken = v1_json();
        broken["columns"][7]["type"] = "text".into();
        std::fs::write(dir.path().join("findings/v1.json"), broken.to_string()).unwrap();
        let report = check(dir.path(), &Baseline::Lock(dir.path().join(LOCK_FILE))).unwrap();
        assert!(!report.ok);
        assert_eq!(report.violations[0].kind, ViolationKind::ColumnRetyped);
        let (report, changed) = release(dir.path()).unwrap();
        assert!(!report.ok && !changed, "release refuses a breaking change");
        assert_eq!(std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(), lock_text);
    }

    #[test]
    fn a_removed_released_file_a_gap_and_a_tampered_lock_are_violations() {
        let mut v3 = v1_json();
        v3["version"] = 3.into();
        let dir = write_dir(&[("findings/v1.json", v1_json()), ("findings/v3.json", v3)]);
        let lock = ReleaseLock::of([&findings()]);
        let mut text = lock.render();
        let report = check(dir.path(), &Baseline::Lock(dir.path().join(LOCK_FILE))).unwrap();
        assert_eq!(report.violations.len(), 1, "{report:?}");
        assert_eq!(report.violations[0].kind, ViolationKind::MajorMissing);

        std::fs::write(dir.path().join(LOCK_FILE), &text).unwrap();
        std::fs::remove_file(dir.path().join("findings/v3.json")).unwrap();
        std::fs::remove_file(dir.path().join("findings/v1.json")).unwrap();
        let report = check(dir.path(), &Baseline::Lock(dir.path().join(LOCK_FILE))).unwrap();
        let k: Vec<_> = report.violations.iter().map(|v| v.kind).collect();
        assert_eq!(k, vec![ViolationKind::ReleasedFileRemoved], "{report:?}");

        text = text.replacen("\"int2\"", "\"int4\"", 1);
        std::fs::write(dir.path().join(LOCK_FILE), &text).unwrap();
        let report = check(dir.path(), &Baseline::Lock(dir.path().join(LOCK_FILE))).unwrap();
        assert!(
            report.violations.iter().any(|v| v.kind == ViolationKind::LockTampered),
            "{report:?}"
        );
    }

    #[test]
    fn a_file_in_the_wrong_place_is_invalid() {
        let dir = write_dir(&[("events/v1.json", v1_json())]);
        let report = check(dir.path(), &Baseline::Lock(dir.path().join(LOCK_FILE))).unwrap();
        assert_eq!(report.violations[0].kind, ViolationKind::InvalidFile);
        assert!(
            report.violations[0].message.contains("its path says 'events'"),
            "{report:?}"
        );
    }
}
