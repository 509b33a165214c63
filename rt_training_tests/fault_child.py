"""A micro-batch in its own process, printing each phase, for the fault-injection test to kill with SIGKILL.

python rt_training_tests/fault_child.py '<json: bootstrap, lake, spec (dict), ranges, run_id>'
"""

import json
import sys

from rt_training.ingest.batch import LakeLocation, run_micro_batch
from rt_training.spec import parse_spec
from rt_training.stream.client import KafkaSettings
from rt_training.stream.planner import OffsetRange


def main() -> None:
    job = json.loads(sys.argv[1])
    spec = parse_spec(job["spec"])

    def phase(name: str) -> None:
        print(name, flush=True)

    run_micro_batch(
        KafkaSettings(bootstrap_servers=job["bootstrap"]),
        spec,
        LakeLocation(job["lake"]),
        [OffsetRange.from_dict(r) for r in job["ranges"]],
        job["run_id"],
        on_phase=phase,
    )


if __name__ == "__main__":
    main()
