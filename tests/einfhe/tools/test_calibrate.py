"""`einfhe.tools.calibrate`: the measured op prices make a table the cost model reads, from the function and from
the `einfhe calibrate` command."""

from einfhe.plan.cost import PRICED_OPS, CostModel
from einfhe.tools.calibrate import calibrate

RING = 16384


def test_calibration_writes_a_table_the_model_reads():
    table = calibrate((14,), (1,), repeats=1, log=lambda line: None)
    model = CostModel.from_json(table)
    assert all(model.price(op, RING, 1, 0) > 0 for op in PRICED_OPS)
    assert model.price("rescale", RING, 1, 1) > 0  # extrapolated: not measured at the last level
    assert model.ct_bytes(RING, 1, 0) > model.ct_bytes(RING, 1, 1)


def test_cli_calibrate_writes_a_cost_table(tmp_path):
    from einfhe.cli import main
    from einfhe.plan.cost import load_cost_model

    out = tmp_path / "costs.json"
    assert main(["calibrate", "--rings", "14", "--depths", "1", "--repeats", "1", "--out", str(out)]) == 0
    assert load_cost_model(str(out)).price("rotate", 16384, 1, 0) > 0
