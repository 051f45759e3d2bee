"""Deployment of a registered model: a container build context (bundle), a verified Docker
image, Kubernetes manifests and a Triton model repository. Nothing here talks to MLflow: the
flow resolves the model and hands its facts in as a :class:`~trustflow.deploy.bundle.Release`."""
