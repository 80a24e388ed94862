-- The job table, the worker registry and per-queue state.
CREATE TABLE dbqueue_jobs (
    id            varchar(64) PRIMARY KEY,
    task          varchar(255) NOT NULL,
    queue         varchar(255) NOT NULL,
    priority      integer NOT NULL DEFAULT 0,
    status        varchar(16) NOT NULL DEFAULT 'pending',
    payload       bytea NOT NULL,
    content_type  varchar(64) NOT NULL,
    result        bytea,
    result_type   varchar(64),
    error_type    varchar(255),
    error         text,
    traceback     text,
    attempt       integer NOT NULL DEFAULT 0,
    max_retries   integer,
    run_at        double precision NOT NULL DEFAULT (extract(epoch from clock_timestamp())),
    expires_at    double precision,
    created_at    double precision NOT NULL DEFAULT (extract(epoch from clock_timestamp())),
    started_at    double precision,
    finished_at   double precision,
    worker        varchar(64),
    unique_key    varchar(255),
    parent_id     varchar(64),
    root_id       varchar(64),
    options       text,
    CONSTRAINT dbqueue_jobs_status_check CHECK (status IN (
        'pending', 'running', 'completed', 'failed', 'retrying', 'waiting', 'cancelled', 'paused'
    )),
    CONSTRAINT dbqueue_jobs_attempt_check CHECK (attempt >= 0)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

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
    id            varchar(64) PRIMARY KEY,
    name          varchar(255) NOT NULL,
    hostname      varchar(255) NOT NULL,
    pid           integer NOT NULL,
    queues        text NOT NULL,
    concurrency   integer NOT NULL,
    pool          varchar(32) NOT NULL,
    info          text,
    started_at    double precision NOT NULL,
    heartbeat_at  double precision NOT NULL
);

CREATE TABLE dbqueue_queues (
    name          varchar(255) PRIMARY KEY,
    paused        boolean NOT NULL DEFAULT false,
    updated_at    double precision NOT NULL DEFAULT (extract(epoch from clock_timestamp()))
);
