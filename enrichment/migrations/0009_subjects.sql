-- Privacy hardening: a job is found by every personal identifier its lead carried.

-- SHA-256 of each normalised personal identifier (email, linkedin_url, name at company) of the
-- lead, beside `subject_hash` (the identifier that keyed the job; enrichment/leads.py).
-- Kept after the 90-day purge clears the lead: erasure must still find the job.
ALTER TABLE enrichment_jobs ADD COLUMN person_hashes text[] NOT NULL DEFAULT '{}';
UPDATE enrichment_jobs SET person_hashes = ARRAY(
    SELECT encode(sha256(convert_to(lower(btrim(v)), 'UTF8')), 'hex')
    FROM unnest(ARRAY[lead->>'email', lead->>'linkedin_url']) AS v WHERE v IS NOT NULL);
CREATE INDEX enrichment_jobs_person_hashes ON enrichment_jobs USING gin (person_hashes);

-- A company-level job where person-level enrichment is off holds company fields only.
UPDATE enrichment_jobs j SET lead = lead - 'name' - 'email' - 'linkedin_url'
    FROM workspaces w WHERE w.id = j.workspace_id
    AND (w.region = 'eu' OR NOT w.person_level_enabled)
    AND j.template = 'company_profile' AND j.lead ?| array['name', 'email', 'linkedin_url'];
