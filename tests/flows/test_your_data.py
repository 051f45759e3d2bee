"""A new table end to end, as a new user has it: `schema infer` writes the schema, and a run on
the file with nothing else set registers a model named after the data, audited by the groups
the schema gives (a numeric feature by its bins)."""

from __future__ import annotations

import yaml

from flows.cli import main
from tests.conftest import SAMPLE_RUN, write_csv
from tests.flows.helpers import client_for, run_cli


def test_an_inferred_schema_runs_and_names_the_model_after_the_data(
    adult_sample, tmp_path, capsys
) -> None:
    source = write_csv(adult_sample, tmp_path / "census.csv")
    assert main(["schema", "infer", str(source), "--target", "income",
                 "--sensitive", "sex,age"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    schema = tmp_path / "census.yaml"
    schema.write_text(text)
    bins = yaml.safe_load(text)["columns"]["age"]["bins"]

    ws = tmp_path / "ws"
    code, summary, err = run_cli(
        capsys, "--workspace", str(ws), "--set", f"data.source=csv:{source}",
        "--set", f"data.dataset={schema}", *SAMPLE_RUN,
    )  # fmt: skip

    # Adult's models are unfair by age at the default limit: the gate says so, by age group.
    assert code == 1 and summary["error_type"] == "GateFailed", summary
    assert summary["error"].startswith("census v1 (")  # named after the data, not adult-income
    assert "equalized_odds_difference for age = " in summary["error"]
    assert "Traceback" not in err
    client = client_for(ws)
    version = client.get_model_version("census", "1")  # registered with its audit, not promoted
    assert version.tags["trustflow.fairness.passed"] == "false"
    run = client.get_run(version.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "census"
    edges = [f"{edge:g}" for edge in bins]
    card = next((ws / "mlartifacts").rglob("census-v1.md")).read_text()
    assert f"<{edges[0]}" in card and f">={edges[-1]}" in card  # the age groups, by name
