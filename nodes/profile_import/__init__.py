"""The Profile Import Executor: profile files in, one clean profile per person out.

models     the Profile record: source key spellings, normalisation, validation reasons
readers    streaming CSV / JSON Lines / JSON array readers, resumable from a byte offset
merge      identity and the merge policy (newer non-empty fields win)
store      the profiles database: profiles, import jobs, quarantine, processed files
job        what a job run is given (ImportOptions) and reports per batch (BatchInfo)
job_graph  the job graph (discover -> parse -> validate -> dedupe -> upsert -> report) and
           ``run_job`` / ``import_file``, which run it
agent      ProfileImportAgent, the ``profile_import`` kind: watches the inbox folder

``bga import`` is ``graph.cli_import``.
"""
