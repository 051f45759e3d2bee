"""prefect.yaml names real flows whose parameters render as a form in the Prefect UI."""

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

REPO = Path(__file__).resolve().parents[2]


def test_every_deployment_entrypoint_loads_with_a_typed_parameter_schema() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert [d["name"] for d in spec["deployments"]] == ["train-tabular"]
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
        assert flow.name == deployment["name"]
        schema = parameter_schema(flow).model_dump_for_openapi()
        assert set(schema["properties"]) == {"config", "workspace"}
        # The config is a typed object (the UI renders nested fields), not a free-form dict.
        assert "TabularConfig" in schema["definitions"]
        assert "TrainConfig" in schema["definitions"]
        assert deployment["schedules"][0]["cron"] == "0 3 * * 1"
