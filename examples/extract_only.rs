//! Times extraction alone (COPY + decode, batches dropped) for one organization's range:
//! `cargo run --example extract_only -- <url> <table> <org> <from> <to>`.
use futures::StreamExt;
use tidemark::extract::{WindowQuery, extract};
use tidemark::schema::Registry;

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let pool = tidemark::control::connect(&a[1], "tidemark-extract", 2).await.unwrap();
    let reg = Registry::embedded();
    let schema = reg.get(a[2].parse().unwrap(), 1).unwrap();
    let org = a[3].parse().unwrap();
    let from = chrono::DateTime::parse_from_rfc3339(&a[4]).unwrap().to_utc();
    let to = chrono::DateTime::parse_from_rfc3339(&a[5]).unwrap().to_utc();
    let t = std::time::Instant::now();
    let (mut s, stats) = extract(
        pool,
        WindowQuery {
            schema: &schema,
            organization_id: org,
            start: from,
            end: to,
        },
        16384,
    );
    let mut rows = 0;
    while let Some(b) = s.next().await {
        rows += b.unwrap().num_rows();
    }
    let st = stats.await.unwrap();
    println!(
        "{rows} rows, {} source bytes in {:.2}s",
        st.source_bytes,
        t.elapsed().as_secs_f64()
    );
}
