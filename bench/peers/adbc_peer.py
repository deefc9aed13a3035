"""ADBC PostgreSQL driver → pyarrow → zstd Parquet, streamed (`fetch_record_batch()`: the driver
reads binary COPY and hands out Arrow batches as they fill)."""

import _common


def main() -> None:
    args = _common.parse_args("ADBC PostgreSQL → pyarrow Parquet")
    import adbc_driver_postgresql.dbapi as dbapi
    import pyarrow.parquet as pq

    timer = _common.Timer()
    conn = dbapi.connect(args.url)
    cur = conn.cursor()
    cur.execute(args.query)
    reader = cur.fetch_record_batch()
    writer = pq.ParquetWriter(args.out, reader.schema, compression="zstd", compression_level=_common.level(args))
    rows = 0
    for batch in reader:
        writer.write_batch(batch)
        rows += batch.num_rows
    writer.close()
    cur.close()
    conn.close()
    import importlib.metadata as md

    _common.report(
        "adbc",
        f"adbc-driver-postgresql {md.version('adbc-driver-postgresql')}",
        rows,
        timer,
    )


if __name__ == "__main__":
    main()
