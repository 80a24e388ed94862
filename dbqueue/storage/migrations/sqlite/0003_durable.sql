-- Durable workflows: checkpoints of a job's calls and phases, fan-outs and their children.
-- A job row says whether it has checkpoints (so only those jobs read them when they start),
-- and a fan-out child names its fan-out and its position in it.
ALTER TABLE dbqueue_jobs ADD COLUMN checkpointed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE dbqueue_jobs ADD COLUMN fan_out_id TEXT;
ALTER TABLE dbqueue_jobs ADD COLUMN fan_out_index INTEGER;

-- A fan-out's children are found through their parent (dbqueue_jobs_parent): one index less
-- to maintain each time a child is claimed or finishes.
-- Parents suspended for their children, for the recovery pass.
CREATE INDEX dbqueue_jobs_waiting ON dbqueue_jobs (id) WHERE status = 'waiting';

-- One row per recorded call (call_index >= 0) or named phase (call_index = -1) of a job.
-- The foreign keys need PRAGMA foreign_keys=ON, which dbqueue's engine sets on connect.
CREATE TABLE dbqueue_checkpoints (
    job_id        TEXT NOT NULL REFERENCES dbqueue_jobs (id) ON DELETE CASCADE,
    call_index    INTEGER NOT NULL,
    call_type     TEXT NOT NULL,
    result        BLOB,
    content_type  TEXT,
    error_type    TEXT,
    error         TEXT,
    created_at    REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    PRIMARY KEY (job_id, call_index, call_type)
);

-- One row per fan-out: its strategy, how many children finished each way, and its decision.
CREATE TABLE dbqueue_fan_outs (
    id            TEXT PRIMARY KEY,
    parent_id     TEXT NOT NULL REFERENCES dbqueue_jobs (id) ON DELETE CASCADE,
    call_index    INTEGER NOT NULL,
    strategy      TEXT NOT NULL CHECK (strategy IN ('fail_fast', 'collect_all', 'threshold')),
    threshold     REAL,
    needed        INTEGER NOT NULL,
    total         INTEGER NOT NULL CHECK (total >= 0),
    completed     INTEGER NOT NULL DEFAULT 0 CHECK (completed >= 0),
    failed        INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0),
    cancelled     INTEGER NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN (
        'pending', 'completed', 'failed', 'timed_out', 'cancelled'
    )),
    timeout_at    REAL,
    cancel_on_parent_failure INTEGER NOT NULL DEFAULT 1,
    created_at    REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    decided_at    REAL
);
CREATE INDEX dbqueue_fan_outs_parent ON dbqueue_fan_outs (parent_id);
-- Undecided fan-outs with a deadline, for the timeout pass.
CREATE INDEX dbqueue_fan_outs_timeout ON dbqueue_fan_outs (timeout_at)
    WHERE status = 'pending' AND timeout_at IS NOT NULL;
-- Decided fan-outs, for the recovery pass (which looks for unfinished children). The counts
-- stay out of every index, so counting a child updates the row in place (a HOT update).
CREATE INDEX dbqueue_fan_outs_decided ON dbqueue_fan_outs (decided_at)
    WHERE status <> 'pending'
