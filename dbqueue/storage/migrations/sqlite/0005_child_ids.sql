-- A fan-out's children are found by their primary keys, which their fan-out derives
-- (fanouts.child_id): the index on parent_id goes, so claiming or finishing a job that has a
-- parent no longer writes an entry into it each time its row moves.
DROP INDEX IF EXISTS dbqueue_jobs_parent;

-- Whether the fan-out's children have those derived ids (every fan-out spawned from now on);
-- an older one's children are looked for across all UUIDs.
ALTER TABLE dbqueue_fan_outs ADD COLUMN keyed_children INTEGER NOT NULL DEFAULT 0;
