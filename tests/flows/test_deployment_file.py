"""prefect.yaml names real flows whose parameters render as a form in the Prefect UI."""

import json
from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from flows.cli import main
from flows.pipelines import PIPELINES
from trustflow.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_every_pipeline_is_deployed_as_declared(capsys) -> None:
    """The pipelines registry is the one list: prefect.yaml, the flows and the CLI agree."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    for pipeline in PIPELINES.values():
        assert deployments[pipeline.flow_name]["entrypoint"] == pipeline.entrypoint
        assert pipeline.flow().name == pipeline.flow_name
        assert load_config(pipeline.config_file, [], pipeline.config) == pipeline.defaults
    assert main(["pipelines", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["pipelines"]
    assert [p["name"] for p in listed] == ["tabular", "digits"]
    digits = {"flow": "train-digits", "experiment": "train-digits", "model": "digits-cnn"}
    assert listed[1] == listed[1] | digits | {"config": "configs/digits.yaml"}


def test_every_deployment_entrypoint_loads_with_a_typed_parameter_schema() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert list(deployments) == ["train-tabular", "train-digits", "deploy-model"]
    schemas = {}
    for name, deployment in deployments.items():
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert flow.name == name
        assert deployment["work_pool"]["name"] == "trustflow-process"
        assert deployment["concurrency_limit"] == 1
        schemas[name] = parameter_schema(flow).model_dump_for_openapi()

    train = schemas["train-tabular"]
    assert set(train["properties"]) == {"config", "workspace"}
    # The config is a typed object (the UI renders nested fields), not a free-form dict.
    assert "TabularConfig" in train["definitions"]
    assert "TrainConfig" in train["definitions"]
    assert deployments["train-tabular"]["schedules"][0]["cron"] == "0 3 * * 1"

    deploy = schemas["deploy-model"]["properties"]
    assert deploy["target"]["enum"] == ["bundle", "docker", "kubernetes", "triton"]
    assert deploy["model"]["default"] == "models:/adult-income@champion"
    assert deploy["port"]["type"] == "integer" and deploy["vendor_wheels"]["type"] == "boolean"
    assert "schedules" not in deployments["deploy-model"]  # deployments are triggered
