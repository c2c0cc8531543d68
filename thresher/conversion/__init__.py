"""The conversion machinery: records → encoded units → shards → manifest, resumable and parallel.

``pipeline.prepare`` drives it; ``convert`` groups and encodes records; ``sink`` writes shards
and finishes them in order; ``progress``, ``tiling`` and ``generations`` decide what a run may
trust and what readers see; ``executors``, ``workers``, ``heap`` and ``interrupt`` run encoding in
worker processes; ``distributed`` runs shard tasks on Dask.
"""
