"""Review of a whole archive (issue 25): ``ctviewer report ROOT... --out DIR`` classifies every
study into its own folder under ``DIR/studies/``, records each finished attempt in
``DIR/manifest.jsonl`` and resumes where a killed run stopped; ``--cluster local[:N]`` or
``--cluster tcp://HOST:PORT`` runs the studies on a Dask distributed cluster.

- ``manifest.Manifest``: the append-only record (one JSON line per attempt, fsync'd);
- ``run.process_study``: one study, on whichever process runs it (the model loaded once per
  process); ``run.run_archive``: the driver (scan, skip what is done, run, record, summarise).
"""

from .manifest import Manifest, input_hash
from .run import ArchiveSummary, StudyJob, jobs_of, process_study, run_archive

__all__ = ["ArchiveSummary", "Manifest", "StudyJob", "input_hash", "jobs_of", "process_study", "run_archive"]
