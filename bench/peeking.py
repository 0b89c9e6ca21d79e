"""How much does peeking inflate false positives? A/A experiments on the sandbox's seeded demo guests.

    .venv/bin/python bench/peeking.py [--experiments 200] [--looks 20] [--seed 2026]

Starts a sandbox, runs its 1,200 seeded demo guests through the demo A/B test (``checkout_ab_test``) to
get the sandbox's real bucketing (who lands in A, who in B, in guest order), then simulates A/A outcomes on
that assignment: every guest converts at the control's observed rate whatever its arm, so every
"significant" look is a false positive. Prints, per setting, the false-positive rate of the fixed-horizon
test read once (at the end), read at every look, and of the always-valid (mSPRT) p-value read at every look.
These are the numbers in the README; they are rates, not timings, so the machine's load does not matter.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from flowlab import analysis
from flowlab.admin import SandboxAdmin
from flowlab.analysis.outcomes import sandbox_outcomes, with_outcomes
from flowlab.analysis.sequential import simulate_aa
from flowlab.batch.runlog import load_results
from flowlab.batch.runner import BatchOptions, run_batch_to_file
from flowlab.batch.samples import guests_from_sandbox
from flowlab.sandbox import SandboxServer

FLOW = "checkout_ab_test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--looks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    with (
        SandboxServer(seed=5) as server,
        SandboxAdmin(base_url=server.url) as admin,
        tempfile.TemporaryDirectory() as tmp,
    ):
        path = Path(tmp) / "demo.sqlite"
        options = BatchOptions(base_url=server.url, client_key=server.client_key, friendly_id=FLOW)
        run_batch_to_file(guests_from_sandbox(admin, 1200), options, path, progress=False)
        run = with_outcomes(load_results(path).sort_values("row"), sandbox_outcomes(admin, FLOW))

    table = analysis.conversion_by_variant(run)
    control = str(table["variant"].iloc[0])
    arms = (run["variant"] != control).astype(int).to_numpy()
    rate = float(table["rate"].iloc[0])
    print(f"{len(arms):,} demo guests, {int(arms.sum()):,} in the variant, control converts at {rate:.1%}")
    settings = [
        (args.experiments, args.looks),
        (args.experiments, 100),
        (10 * args.experiments, args.looks),
    ]
    print(f"{'experiments':>11} {'looks':>5} {'fixed, 1 look':>13} {'fixed, peeking':>14} {'sequential':>10}")
    for experiments, looks in settings:
        result = simulate_aa(arms, rate=rate, experiments=experiments, looks=looks, seed=args.seed)
        print(
            f"{experiments:>11,} {result.looks:>5} {result.fixed_final:>13.1%} {result.fixed_peeking:>14.1%} "
            f"{result.sequential_peeking:>10.1%}"
        )
    first = simulate_aa(arms, rate=rate, experiments=args.experiments, looks=args.looks, seed=args.seed)
    print(first.summary())


if __name__ == "__main__":
    main()
