"""The one package that talks to MLflow, one module per job:

- ``store``: which store a workspace uses, whether it answers, its experiments;
- ``runs``: the pipeline run's lifecycle and what a crashed run left open;
- ``log``: what a run logs (config, lineage, gates, candidates, seen rows);
- ``models``: logged models, logged once per content hash and reused only when whole;
- ``registry``: registered versions and the facts each records;
- ``champion``: the fair comparison with the champion and the compare-and-set on the alias;
- ``cards``: the model card;
- ``source``: the registry as the inference server's model source (no Prefect);
- ``tags``: the tag names.

This file imports nothing, so ``trustflow serve`` loads ``source`` without Prefect.
"""
