"""The Dagster code location, as `dg` scaffolds it: everything under ``hybrid_assets/defs/`` is loaded
by ``load_from_defs_folder`` (each path's assets, checks, jobs and automation sensors in its own
folder; RAFT, serving and evaluation beside them; the shared resource in ``defs/resources.py``).

Loading it imports no torch: heavy imports live inside asset bodies (tested).
"""

import dagster as dg

from hybrid_assets.settings import PROJECT_ROOT, apply_offline_env

apply_offline_env()

defs = dg.load_from_defs_folder(project_root=PROJECT_ROOT)
