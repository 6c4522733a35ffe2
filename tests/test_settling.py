"""The settling trace: when, and how much, the alphas' derived cell moved during a search."""
import torch

from dcanas.settling import SettlingTrace, edges_changed
from dcanas.spaces import SPACES
from dcanas.spaces.darts.genotype import GENOTYPES


def _cell(*ops):
    return [("node", k, op) for k, op in enumerate(ops)]


def test_changes_and_the_last_quarter_are_counted():
    trace = SettlingTrace(planned=8)  # the last quarter: alpha steps 7 and 8
    cells = [_cell("a", "a"), _cell("a", "b"), _cell("a", "b"), _cell("a", "a"), _cell("a", "a"), _cell("a", "a"),
             _cell("b", "a"), _cell("b", "b")]
    for cell in cells:
        trace.observe(cell)
    s = trace.summary()
    assert s["alpha_steps"] == 8 and s["changes"] == 4 and s["last_change"] == 8 and s["unchanged_for"] == 0
    assert s["late_changes"] == 2  # steps 7 and 8
    assert s["edges"] == 2 and s["late_edges_changed"] == 2  # step 6's (a, a) against the final (b, b)
    assert s["unsettled_edges"] == 2
    assert "2 of the cell's 2 edges were not fixed through the last quarter" in trace.note()


def test_a_cell_fixed_through_the_last_quarter_gives_no_note():
    trace = SettlingTrace(planned=8)  # changes before the last quarter do not count against it
    for cell in (_cell("a", "x"), _cell("b", "x"), _cell("b", "y"), _cell("a", "y"), _cell("b", "y"),
                 _cell("b", "x"), _cell("b", "x"), _cell("b", "x")):
        trace.observe(cell)
    s = trace.summary()
    assert s["changes"] == 5 and s["late_changes"] == 0 and s["unsettled_edges"] == 0 and trace.note() is None


def test_an_edge_that_takes_turns_late_is_unsettled_even_if_it_ends_where_it_began():
    # two tied ops on the second edge: the last quarter (steps 7 and 8, from step 6's cell) starts and ends
    # with x, but was not fixed
    trace = SettlingTrace(planned=8)
    for op in "xxxxxxyx":
        trace.observe(_cell("a", op))
    s = trace.summary()
    assert s["late_edges_changed"] == 0 and s["unsettled_edges"] == 1 and s["late_changes"] == 2
    assert trace.note().startswith("1 of the cell's 2 edges were not fixed")


def test_the_trace_resumes_from_its_state_dict():
    cells = [_cell(op, "x" if op < "c" else "y") for op in "aabbacca"]
    whole = SettlingTrace(planned=8)
    for cell in cells:
        whole.observe(cell)
    first = SettlingTrace(planned=8)
    for cell in cells[:7]:
        first.observe(cell)
    saved = torch.load(_roundtrip(first.state_dict()), weights_only=True)  # as a checkpoint stores it
    resumed = SettlingTrace(planned=8)
    resumed.load_state_dict(saved)
    resumed.observe(cells[7])
    assert resumed.summary() == whole.summary() and resumed.note() == whole.note()


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_cell_edges_count_what_two_genotypes_do_not_share():
    darts = SPACES.get("darts")
    v1, v2 = GENOTYPES.get("DARTS_V1"), GENOTYPES.get("DARTS_V2")
    assert len(darts.cell_edges(v2)) == 16 and edges_changed(darts.cell_edges(v2), darts.cell_edges(v2)) == 0
    swapped = v2._replace(normal=[("sep_conv_5x5", 0)] + list(v2.normal[1:]))
    assert edges_changed(darts.cell_edges(v2), darts.cell_edges(swapped)) == 1
    assert edges_changed(darts.cell_edges(v1), darts.cell_edges(v2)) > 0
    nb201 = SPACES.get("nb201")
    a = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    b = "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert len(nb201.cell_edges(a)) == 6 and edges_changed(nb201.cell_edges(a), nb201.cell_edges(b)) == 1


def test_a_search_records_its_trace_over_the_alpha_steps_only(tmp_path):
    from dcanas.search_loop import run_search
    from dcanas.search_config import SearchConfig

    # digits: 22 steps an epoch at batch 32 (half the images each for weights and alphas); 11 of warm-up
    config = SearchConfig(dataset="digits", epochs=2, max_steps=30, batch_size=32, warmup_epochs=0.5)
    result = run_search(config, tmp_path / "run", progress=False)
    settling = result.to_dict()["settling"]
    assert result.steps == 30 and settling["alpha_steps"] == 30 - 11
    assert settling["edges"] == 16 and 0 <= settling["late_edges_changed"] <= settling["unsettled_edges"] <= 16
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"over {settling['alpha_steps']} alpha steps" in report
    assert (settling["unsettled_edges"] > 0) == any("last quarter of the search" in n for n in result.notes)
