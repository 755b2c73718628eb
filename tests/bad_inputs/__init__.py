"""Bad inputs through the real `story` command: every case is generated in a temporary folder,
run through the CLI, and must end in one sentence naming the input (or, where accepting is right,
a rejection naming the file and the reason), with no traceback and nothing half-written.

    OMP_NUM_THREADS=1 .venv/bin/pytest -q tests/bad_inputs

The case tables are in test_story_files.py, test_videos.py and test_config.py (``CASES`` lists:
id, builder, command, expected words); builders.py makes the files, harness.py runs and judges.
"""
