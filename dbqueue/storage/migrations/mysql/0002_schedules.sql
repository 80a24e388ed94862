-- Periodic jobs: one row per schedule, shared by every scheduler process (worker -B, beat).
-- next_fire_at is the fire cursor; version is what a scheduler compares-and-sets to claim a
-- fire time, in the transaction that inserts the job.
CREATE TABLE dbqueue_schedules (
    name             varchar(255) NOT NULL PRIMARY KEY,
    task             varchar(255) NOT NULL,
    queue            varchar(255) NOT NULL,
    kind             varchar(16) NOT NULL,
    expression       text NOT NULL,
    timezone         varchar(64) NOT NULL,
    spec             text NOT NULL,
    args             mediumtext NOT NULL,
    kwargs           mediumtext NOT NULL,
    options          text NOT NULL,
    payload          longblob NOT NULL,
    content_type     varchar(64) NOT NULL,
    job              text NOT NULL,
    catch_up         varchar(8) NOT NULL DEFAULT 'one',
    enabled          boolean NOT NULL DEFAULT true,
    next_fire_at     double NOT NULL,
    last_fire_at     double NULL,
    last_job_id      varchar(64) NULL,
    total_run_count  bigint NOT NULL DEFAULT 0,
    version          bigint NOT NULL DEFAULT 0,
    created_at       double NOT NULL,
    updated_at       double NOT NULL,
    CONSTRAINT dbqueue_schedules_catch_up_check CHECK (catch_up IN ('one', 'skip'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
