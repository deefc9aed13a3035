"""ConnectorX → pyarrow → zstd Parquet, streamed (`return_type="arrow_stream"`), so memory stays
bounded by a batch instead of the whole result (the default `return_type="arrow"` materializes
every row before the first one is written and cannot hold 50M rows in 24 GiB)."""

import _common


def main() -> None:
    args = _common.parse_args("ConnectorX → pyarrow Parquet")
    import connectorx as cx
    import pyarrow.parquet as pq

    timer = _common.Timer()
    reader = cx.read_sql(args.url, args.query, return_type="arrow_stream", batch_size=args.batch_rows)
    writer = None
    rows = 0
    for batch in reader:
        if writer is None:
            writer = pq.ParquetWriter(args.out, batch.schema, compression="zstd", compression_level=_common.level(args))
        writer.write_batch(batch)
        rows += batch.num_rows
    if writer is None:
        writer = pq.ParquetWriter(args.out, reader.schema, compression="zstd", compression_level=_common.level(args))
    writer.close()
    import importlib.metadata as md

    _common.report("connectorx", md.version("connectorx"), rows, timer, [f"arrow_stream batch_size={args.batch_rows}"])


if __name__ == "__main__":
    main()
