"""llm_magic.notebook_context: the last N executed cells as prompt text within a token budget."""

from __future__ import annotations

from llm_magic.notebook_context import recent_cells
from llm_magic.summaries import estimate_tokens

INPUTS = ["", "import math", "x = math.pi\nx", "", "1/0", "y = 2", "current cell"]
OUTPUTS = {2: 3.141592653589793}
ERRORS = {4: "Traceback (most recent call last):\n  File ...\nZeroDivisionError: division by zero"}


def test_the_last_cells_with_results_and_errors_oldest_first():
    block, kept, cut = recent_cells(INPUTS, OUTPUTS, ERRORS, current=6, n=3, budget=1000)
    assert kept == 3 and not cut
    assert block.startswith("The last 3 executed notebook cells, oldest first:")
    assert block.index("In [2]:") < block.index("In [4]:") < block.index("In [5]:")
    assert "Out [2]: 3.141592653589793" in block
    assert "ZeroDivisionError: division by zero" in block
    assert "current cell" not in block and "import math" not in block  # only before the current one, only 3


def test_the_budget_keeps_the_newest_cells_and_cuts_the_oldest_kept():
    long_source = "\n".join(f"value_{i} = {i}" for i in range(2000))
    inputs = ["", long_source, "print('hi')", "z = 1", "now"]
    block, kept, cut = recent_cells(inputs, {}, {}, current=4, n=3, budget=200)
    assert cut and estimate_tokens(block) <= 200
    assert "z = 1" in block and "print('hi')" in block
    assert "characters cut]" in block or "value_1999" not in block


def test_no_cells_yet():
    assert recent_cells([""], {}, {}, current=1, n=5, budget=100) == ("", 0, False)
