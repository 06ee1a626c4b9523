"""The Profile Import Executor: profile files in, one clean profile per person out.

models   the Profile record: source key spellings, normalisation, validation reasons
readers  streaming CSV / JSON Lines / JSON array readers, resumable from a byte offset
merge    identity and the merge policy (newer non-empty fields win)
store    the profiles database: profiles, import jobs, quarantine, processed files
job      what a job run is given (ImportOptions) and reports per batch (BatchInfo)
agent    ProfileImportAgent, the ``profile_import`` kind: watches the inbox folder

The job graph itself (discover -> parse -> validate -> dedupe -> upsert -> report) is
``graph.import_job``; ``bga import`` is ``graph.cli_import``.
"""
