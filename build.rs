// Rebuild when a migration is added or changed: they are embedded by `sqlx::migrate!`.
// Every published schema file `schemas/<table>/v<major>.json` is embedded too: this writes the
// list of them (`$OUT_DIR/embedded_schemas.rs`), so adding a major needs no code change.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=schemas");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let mut files = Vec::new();
    for table in std::fs::read_dir(&root).expect("schemas/ exists") {
        let table = table.expect("readable schemas/").path();
        if !table.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&table).expect("readable schema directory") {
            let path = file.expect("readable schema directory").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let is_major = name
                .strip_prefix('v')
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if is_major {
                let rel = format!(
                    "{}/{name}",
                    table
                        .file_name()
                        .and_then(|n| n.to_str())
                        .expect("UTF-8 table directory")
                );
                files.push((rel, path.display().to_string()));
            }
        }
    }
    files.sort();
    let mut out = String::from("/// `(path under schemas/, contents)` of every published schema file.\n");
    out.push_str("pub(crate) static EMBEDDED_SCHEMAS: &[(&str, &str)] = &[\n");
    for (rel, abs) in &files {
        out.push_str(&format!("    ({rel:?}, include_str!({abs:?})),\n"));
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("embedded_schemas.rs");
    std::fs::write(dest, out).expect("write embedded_schemas.rs");
}
