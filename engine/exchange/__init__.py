"""Data in and out of files: import from CSV and XLSX (export belongs here too). Above
`engine.records`: every row goes through its write path (`Bulk`, `Records.create`/`update`).

    files    a file's rows as a stream (CSV in any delimiter and encoding, XLSX)
    columns  which field each column fills: by name, by label, by a mapping
    cells    cells as people write them → the JSON values a write takes
    imports  the import itself: rows in batches through bulk, all-or-none or good rows
    fast_rows  the fast path of a plain entity's new records: cells straight to columns
    jobs     imports run in a thread, their state kept in kt_import_job
"""
