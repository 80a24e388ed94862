-- Periodic jobs: one row per schedule, shared by every scheduler process (worker -B, beat).
-- next_fire_at is the fire cursor; version is what a scheduler compares-and-sets to claim a
-- fire time, in the transaction that inserts the job.
CREATE TABLE dbqueue_schedules (
    name             TEXT PRIMARY KEY,
    task             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    expression       TEXT NOT NULL,
    timezone         TEXT NOT NULL,
    spec             TEXT NOT NULL,
    args             TEXT NOT NULL,
    kwargs           TEXT NOT NULL,
    options          TEXT NOT NULL,
    payload          BLOB NOT NULL,
    content_type     TEXT NOT NULL,
    job              TEXT NOT NULL,
    catch_up         TEXT NOT NULL DEFAULT 'one' CHECK (catch_up IN ('one', 'skip')),
    enabled          INTEGER NOT NULL DEFAULT 1,
    next_fire_at     REAL NOT NULL,
    last_fire_at     REAL,
    last_job_id      TEXT,
    total_run_count  INTEGER NOT NULL DEFAULT 0,
    version          INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
