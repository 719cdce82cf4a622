-- Answers with provenance (docs/api.md#provenance): per field its confidence, sources and
-- provider; the trace of every provider call. Results stored before this have neither
-- (NULL): they answer as before.
ALTER TABLE enrichment_results
    ADD COLUMN provenance jsonb,
    ADD COLUMN trace      jsonb;

-- The threshold a job was asked with: a value below it is not in the answer, and an answer
-- kept for the cache serves a later request only at this threshold or a stricter one.
ALTER TABLE enrichment_jobs
    ADD COLUMN min_confidence numeric NOT NULL DEFAULT 0.5
        CHECK (min_confidence >= 0 AND min_confidence <= 1);
