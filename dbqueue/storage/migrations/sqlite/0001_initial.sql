-- The job table, the worker registry and per-queue state.
CREATE TABLE dbqueue_jobs (
    id            TEXT PRIMARY KEY,
    task          TEXT NOT NULL,
    queue         TEXT NOT NULL,
    priority      INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'running', 'completed', 'failed', 'retrying', 'waiting', 'cancelled', 'paused'
    )),
    payload       BLOB NOT NULL,
    content_type  TEXT NOT NULL,
    result        BLOB,
    result_type   TEXT,
    error_type    TEXT,
    error         TEXT,
    traceback     TEXT,
    attempt       INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_retries   INTEGER,
    run_at        REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    expires_at    REAL,
    created_at    REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    started_at    REAL,
    finished_at   REAL,
    worker        TEXT,
    unique_key    TEXT,
    parent_id     TEXT,
    root_id       TEXT,
    options       TEXT
);

-- Exactly what the claim reads: due jobs of a queue by priority, then age.
CREATE INDEX dbqueue_jobs_claim ON dbqueue_jobs (queue, priority DESC, run_at)
    WHERE status IN ('pending', 'retrying');
-- Heartbeat-less jobs for the reaper, and a worker's own jobs.
CREATE INDEX dbqueue_jobs_running ON dbqueue_jobs (worker) WHERE status = 'running';
-- Pruning finished jobs by age.
CREATE INDEX dbqueue_jobs_finished ON dbqueue_jobs (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
-- At most one live job per unique key, enforced by the database.
CREATE UNIQUE INDEX dbqueue_jobs_live_unique ON dbqueue_jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND status IN ('pending', 'running', 'retrying', 'waiting', 'paused');
CREATE INDEX dbqueue_jobs_parent ON dbqueue_jobs (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE dbqueue_workers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    queues        TEXT NOT NULL,
    concurrency   INTEGER NOT NULL,
    pool          TEXT NOT NULL,
    info          TEXT,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
);

CREATE TABLE dbqueue_queues (
    name          TEXT PRIMARY KEY,
    paused        INTEGER NOT NULL DEFAULT 0,
    updated_at    REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
