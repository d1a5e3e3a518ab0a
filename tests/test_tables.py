"""The one table printer (vislab.reporting.tables)."""
from vislab.models.summary import LayerRow
from vislab.reporting.tables import format_cell, layers_markdown, markdown_table, mean_std


def test_markdown_table_by_hand():
    rows = [{"name": "svm", "C": 1.0, "acc": 0.91234, "dim": 1280},
            {"name": "linear head", "acc": 0.5, "dim": 8}]
    table = markdown_table(rows, {"name": "classifier", "C": "C", "acc": "test acc", "dim": "dim"}, {"C": "g", "acc": ".3f"})
    assert table.splitlines() == [
        "| classifier  |   C | test acc |  dim |",
        "|-------------|----:|---------:|-----:|",
        "| svm         |   1 |    0.912 | 1280 |",
        "| linear head |     |    0.500 |    8 |",
    ]


def test_markdown_table_text_columns_and_default_formats():
    assert markdown_table([{"a": "x", "b": None}], ["a", "b"]) == "| a   | b   |\n|-----|-----|\n| x   |     |"
    assert [format_cell(v) for v in (None, 0.123456, 12.3456, 7, "s")] == ["", "0.1235", "12.35", "7", "s"]
    assert format_cell(3, lambda v: f"<{v}>") == "<3>"


def test_markdown_table_alignment_can_be_chosen():
    rows = [{"layer": "conv1", "params": "1,792"}, {"layer": "fc", "params": "4,097,000"}]
    assert markdown_table(rows, ["layer", "params"], right=["params"]).splitlines() == [
        "| layer |    params |",
        "|-------|----------:|",
        "| conv1 |     1,792 |",
        "| fc    | 4,097,000 |",
    ]


def test_layers_markdown_shape_without_batch_params_with_commas_share_in_percent():
    rows = [LayerRow("conv1", "features.0", "Conv2d", (1, 64, 112, 112), 9408, 0.25),
            LayerRow("fc", "fc", "Linear", None, 1234567, 0.75)]  # never ran: no shape
    assert layers_markdown(rows).splitlines() == [
        "| layer | type   | output shape |    params |  share |",
        "|-------|--------|--------------|----------:|-------:|",
        "| conv1 | Conv2d | 64x112x112   |     9,408 | 25.00% |",
        "| fc    | Linear | -            | 1,234,567 | 75.00% |",
    ]


def test_mean_std_writes_a_mean_over_seeds_and_a_bare_single_seed():
    assert mean_std(0.79467, 0.01642, 3) == "0.795 +- 0.016 (3 seeds)"
    assert mean_std(0.5229) == "0.523"
