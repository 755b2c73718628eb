"""The ``<story>/story_plan`` asset of a story whose source is a script (built by ``assets/stories.py``).

The code location plans the script when it loads (the offline planner is deterministic and cheap), so
it knows the shots; this asset writes that plan as a story file under the artifacts folder and shows
it. It is upstream of every ``<shot>_spec``. The shot assets read the script itself (``load_story``
plans a ``.txt`` in memory), so they never depend on this file being current; the story sensor and
`story run` include it in every run of a script's shots, so the record follows the script.
"""

import hashlib
from pathlib import Path

import dagster as dg

from story_pipeline.assets._story_common import user_errors
from story_pipeline.resources import StorageResource


def plan_key(story_id: str) -> dg.AssetKey:
    return dg.AssetKey([story_id, "story_plan"])


def plan_asset_def(script: Path, story, group: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=plan_key(story.id), group_name=group, kinds={"yaml"},
        description=f"The shots planned from the story script {script.name}: one per key plot (story plan).",
        metadata={"story_file": dg.MetadataValue.path(str(script))},
    )
    def story_plan(storage: StorageResource) -> dg.MaterializeResult:
        from story_pipeline.plan import write_plan_record

        with user_errors():
            plan, out = write_plan_record(script, storage.settings().artifacts_dir)
        rows = ["| line | shot | prompt | query |", "|---|---|---|---|"]
        rows += ["| " + " | ".join(row) + " |" for row in plan.rows()]
        return dg.MaterializeResult(
            metadata={"shots": len(plan.story.shots), "planner": plan.planner,
                      "plan": dg.MetadataValue.md("\n".join(rows).replace("<", "&lt;")),
                      "story_yaml": dg.MetadataValue.md(f"```yaml\n{plan.yaml}```"),
                      "path": dg.MetadataValue.path(str(out))},
            data_version=dg.DataVersion(hashlib.sha256(plan.yaml.encode()).hexdigest()[:16]),
        )

    return story_plan
