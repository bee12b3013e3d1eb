"""Scale-out on dask.distributed: archives of scenes and large scenes in parts, resumable.

One unit of work, the *part*: a row band of whole strips with its halo
(:meth:`tiler.plan.PatchGrid.row_bands`), streamed by the engine into a part
file beside the destination and recorded in a journal with the run's
fingerprint. :func:`run` spreads one scene's parts over workers (or runs them
in this process) and assembles them; :func:`batch` does so for every scene of
an archive. Rerun after a crash, either recomputes only what the journal
lacks; the output is bit-identical to a one-process stream (DESIGN.md
invariants 1, 7, 8).
"""

from tiler.distributed._api import WORKER_TIMEOUT, BatchReport, batch, cluster, make_job, run
from tiler.distributed._inputs import expand_inputs, output_name
from tiler.distributed._journal import FINGERPRINT_TAG, Journal, digest, fingerprint, work_folder
from tiler.distributed._runner import BatchAborted, ClusterError, SceneResult, SchedulerLost, execute
from tiler.distributed._tasks import PART_STRIPS, WHOLE_MAX_STRIPS, SceneJob, resolve_parts

__all__ = [
    "run", "batch", "cluster", "make_job", "execute", "BatchReport", "BatchAborted", "ClusterError", "SchedulerLost",
    "SceneResult", "SceneJob", "WORKER_TIMEOUT",
    "Journal", "fingerprint", "digest", "work_folder", "expand_inputs", "output_name", "resolve_parts",
    "FINGERPRINT_TAG", "PART_STRIPS", "WHOLE_MAX_STRIPS",
]
