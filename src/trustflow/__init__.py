"""trustflow: the pure core of the pipeline (data, models, evaluation).

Nothing in this package imports Prefect or MLflow; orchestration lives in ``tasks/`` and
``flows/`` so that the core can be reused from DVC stages, notebooks and the inference server.
"""

__version__ = "0.1.0"
