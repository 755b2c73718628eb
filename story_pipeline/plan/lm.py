"""The optional language-model planner: an OpenAI-compatible chat endpoint writes the shots.

    STORY_PLAN_LM_URL=http://127.0.0.1:8000/v1 STORY_PLAN_LM_MODEL=qwen2.5-7b-instruct story plan story.txt --lm

The script's prose and its cast go to ``POST <url>/chat/completions``; the reply's message must be
JSON ``{"shots": [{"source": "<the words of the script>", "prompt": "a <tabby> leaps ...", "query":
"a cat leaps ..."}]}`` (``query`` optional). Every shot is checked (text, known tokens, at least one
character, length) before anything is written; a bad reply is one sentence. The API key, if any, is
read from the environment variable that ``Settings.plan_lm_key_env`` names (never from a file).
Only the standard library talks to the endpoint.
"""

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from story_pipeline.errors import StoryPipelineError
from story_pipeline.plan.script import Script
from story_pipeline.story.spec import TOKEN_IN_TEXT

SYSTEM = (
    "You split a story into key plots for a video pipeline. A key plot is one event with no cut. "
    "For each key plot write: source (the exact words of the story it comes from), prompt (what is "
    "rendered: 'a <token> <does something> <where>', using the character tokens given), and query (the "
    "motion alone for retrieving a video clip: 'a <class word> <does something>', no place). Reply with "
    'JSON only: {"shots": [{"source": "...", "prompt": "...", "query": "..."}]}.'
)
MAX_REPLY_BYTES = 1 << 20


class PlannerError(StoryPipelineError):
    """The language-model planner is misconfigured, unreachable, or replied with an unusable plan."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    api_key: str = ""
    timeout_s: float = 60.0


def endpoint_from_settings(settings) -> Endpoint:
    """The configured endpoint (``STORY_PLAN_LM_URL``, ``..._MODEL``, ``..._KEY_ENV``); one sentence if unset."""
    if not settings.plan_lm_url:
        raise PlannerError("No language-model planner is configured; set STORY_PLAN_LM_URL (an OpenAI-compatible "
                           "base URL such as http://127.0.0.1:8000/v1) and STORY_PLAN_LM_MODEL, or plan offline "
                           "without --lm.")
    if not re.match(r"^https?://[^\s/]+", settings.plan_lm_url):
        raise PlannerError(f"STORY_PLAN_LM_URL {settings.plan_lm_url!r} is not an http(s) URL; set it to the "
                           "endpoint's base URL, e.g. http://127.0.0.1:8000/v1.")
    if not settings.plan_lm_model:
        raise PlannerError("STORY_PLAN_LM_MODEL is empty; set it to the model name the endpoint serves.")
    key = ""
    if settings.plan_lm_key_env:
        key = os.environ.get(settings.plan_lm_key_env, "")
        if not key:
            raise PlannerError(f"The API key variable {settings.plan_lm_key_env} (STORY_PLAN_LM_KEY_ENV) is not set; "
                               "export it, or clear STORY_PLAN_LM_KEY_ENV for an endpoint without a key.")
    return Endpoint(settings.plan_lm_url.rstrip("/"), settings.plan_lm_model, key, settings.plan_lm_timeout_s)


def _messages(script: Script) -> list[dict]:
    cast = "\n".join(f"- {m.name}: token {m.token}, a {m.class_word}" for m in script.cast)
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Characters:\n{cast}\n\nStory:\n{script.prose.strip()}"}]


def ask(endpoint: Endpoint, messages: list[dict]) -> str:
    """The first choice's message text of one chat completion."""
    body = json.dumps({"model": endpoint.model, "messages": messages, "temperature": 0,
                       "response_format": {"type": "json_object"}}).encode()
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    req = urllib.request.Request(f"{endpoint.url}/chat/completions", data=body, headers=headers, method="POST")
    where = f"The language-model planner at {endpoint.url}"
    try:
        with urllib.request.urlopen(req, timeout=endpoint.timeout_s) as r:
            raw = r.read(MAX_REPLY_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise PlannerError(f"{where} answered HTTP {e.code} ({e.reason}); check STORY_PLAN_LM_URL and "
                           "STORY_PLAN_LM_MODEL.") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PlannerError(f"{where} cannot be reached ({reason}); start it or plan offline without --lm.") from None
    if len(raw) > MAX_REPLY_BYTES:
        raise PlannerError(f"{where} replied with more than {MAX_REPLY_BYTES} bytes; check the endpoint.")
    try:
        return json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise PlannerError(f"{where} did not reply as an OpenAI-compatible chat completion "
                           "(choices[0].message.content); check that the URL ends in /v1.") from None


def lm_shots(script: Script, endpoint: Endpoint) -> list[dict]:
    """Shot dicts (id, prompt, query, _line, _source) from the model's plan; PlannerError if unusable."""
    where = f"The language-model planner at {endpoint.url}"
    text = ask(endpoint, _messages(script))
    text = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text or "")  # a fenced reply is still JSON
    try:
        plan = json.loads(text)
    except ValueError:
        raise PlannerError(f"{where} replied with a plan that is not JSON ({text[:60]!r}); try another model or "
                           "plan offline without --lm.") from None
    shots = plan.get("shots") if isinstance(plan, dict) else None
    if not isinstance(shots, list) or not shots:
        raise PlannerError(f"{where} replied without a non-empty \"shots\" list; try another model or plan "
                           "offline without --lm.")
    tokens = {m.token: m for m in script.cast}
    out, ids = [], {}
    for i, s in enumerate(shots):
        prompt = s.get("prompt") if isinstance(s, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise PlannerError(f"{where} replied with shots[{i}] without a prompt text; try another model or plan "
                               "offline without --lm.")
        used = TOKEN_IN_TEXT.findall(prompt)
        unknown = [t for t in used if t not in tokens]
        if unknown or not used:
            what = f"the unknown token {unknown[0]}" if unknown else "no character token"
            raise PlannerError(f"{where} replied with shots[{i}] whose prompt has {what} ({prompt[:60]!r}); "
                               f"prompts must use {', '.join(tokens)}; try another model or plan offline.")
        query = s.get("query")
        if query is not None and (not isinstance(query, str) or not query.strip()):
            raise PlannerError(f"{where} replied with shots[{i}] whose query is not text; try another model.")
        source = " ".join(str(s.get("source") or prompt).split())
        at = script.prose.find(source[:40]) if source else -1
        line = script.prose_line + (script.prose[:at].count("\n") if at >= 0 else 0)
        words = re.findall(r"[a-z]+", prompt.split(used[0], 1)[1].lower())
        base = re.sub(r"[^a-z0-9]+", "-", f"{used[0][1:-1]}-{words[0] if words else 'shot'}").strip("-")[:60]
        ids[base] = ids.get(base, 0) + 1
        shot = {"id": base if ids[base] == 1 else f"{base}-{ids[base]}", "prompt": " ".join(prompt.split()),
                "_line": line, "_source": source, "_motion": prompt, "_motion_verb": ""}
        if query is not None:
            shot["query"] = " ".join(query.split())
        out.append(shot)
    return out
