"""The story video asset of one story (built by ``assets/stories.py``): its rendered shots in order."""

from pathlib import Path

import dagster as dg

from story_pipeline.assets._story_common import load_for_run, user_errors, video_key
from story_pipeline.previews import gif_data_uri, png_data_uri
from story_pipeline.resources import ShotChecksResource, StorageResource


def video_asset_def(story_file: Path, story, group: str, renders: list[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    @dg.asset(
        key=video_key(story.id), group_name=group, kinds={"mp4"}, deps=renders,
        description=f"The story video of {story_file.name}: rendered shots in order, title card, storyboard.",
    )
    def story_video(storage: StorageResource,
                    shot_checks: ShotChecksResource) -> dg.MaterializeResult:
        from story_pipeline.render.assemble import assemble_story_video

        story = load_for_run(story_file)
        with user_errors():
            out = assemble_story_video(story, storage.settings(), crossfade_frames=shot_checks.crossfade_frames)
        flagged = ", ".join(f"{k} ({', '.join(v)})" for k, v in out.flagged.items()) or "none"
        return dg.MaterializeResult(
            metadata={"video": dg.MetadataValue.path(str(out.video)), "seconds": round(out.seconds, 2),
                      "frames": out.frames, "size": f"{out.size[1]}x{out.size[0]}", "flagged_shots": flagged,
                      "storyboard": dg.MetadataValue.path(str(out.storyboard)),
                      "storyboard_preview": dg.MetadataValue.md(f"![storyboard]({png_data_uri(out.storyboard)})"),
                      "preview": dg.MetadataValue.md(f"![story]({gif_data_uri(out.gif)})")},
        )

    return story_video
