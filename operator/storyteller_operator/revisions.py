"""Revisions: each distinct thing the worker pods run gets a number. Pure, no I/O.

What the pods run is the rendered worker config, the image and the referenced Secrets' versions (a rotated
key is read only when a container starts): any change to one of them is a new revision, and nothing else
is (resizing, resources and scheduling roll no new revision). Going back to what an earlier revision ran
serves that revision's number again, as a Deployment reuses its old ReplicaSet.

The history lives in the tenant's status (`status.revisions`, newest first, at most
spec.revisionHistoryLimit entries): the operator keeps no state of its own, and a restarted operator
numbers the same way. Each entry keeps short digests of the config's parts, so the next revision can say
in one line what changed without the old config at hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

# Keys of an entry in status.revisions (the CRD's status schema lists the same).
NUMBER = "revision"
CONFIG_HASH = "configHash"
IMAGE = "image"
SECRETS_HASH = "secretsHash"
CHANGE = "change"
CREATED = "created"
DIGESTS = "digests"

IMAGE_PART = "image"  # the digest key of the image
SECRET_PART = "secret/"  # prefix of a referenced Secret's digest key
FIRST_CHANGE = "first revision"
MAX_CHANGE_CHARS = 256  # the change line stays one line of `kubectl describe`
_DIGEST_CHARS = 8  # enough to tell a part's versions apart; the whole config keeps its own full hash


@dataclasses.dataclass(frozen=True)
class Identity:
    """What one revision's pods run."""

    config_hash: str
    image: str
    secrets_hash: str
    digests: Mapping[str, str]  # part of the config ("story.instructions"), image, secret/NAME → digest

    def matches(self, entry: Mapping[str, Any]) -> bool:
        return (entry.get(CONFIG_HASH), entry.get(IMAGE), entry.get(SECRETS_HASH)) == (
            self.config_hash,
            self.image,
            self.secrets_hash,
        )


def _digest(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


def config_parts(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config cut into the parts a change line names: two levels deep ("story.instructions",
    "tts.voice"), one for a top-level value that is not an object."""
    parts: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            parts.update({f"{key}.{sub}": inner for sub, inner in value.items()})
        else:
            parts[key] = value
    return parts


def identity(
    config: Mapping[str, Any],
    config_hash: str,
    image: str,
    secret_versions: Mapping[str, str],
    secrets_hash: str,
) -> Identity:
    """The identity of what pods rendered from `config`, `image` and these Secret versions would run."""
    digests = {part: _digest(value) for part, value in config_parts(config).items()}
    digests[IMAGE_PART] = _digest(image)
    digests.update({f"{SECRET_PART}{name}": _digest(v) for name, v in secret_versions.items()})
    return Identity(config_hash=config_hash, image=image, secrets_hash=secrets_hash, digests=digests)


def describe_change(before: Mapping[str, Any] | None, after: Identity) -> str:
    """One line: what `after` changed against the entry `before` ("story.instructions changed; image
    a → b; Secret acme-openai rotated")."""
    if before is None:
        return FIRST_CHANGE
    old: Mapping[str, str] = before.get(DIGESTS) or {}
    new = after.digests
    changed = sorted(p for p in {*old, *new} if old.get(p) != new.get(p))
    config = [p for p in changed if p != IMAGE_PART and not p.startswith(SECRET_PART)]
    secrets = [p.removeprefix(SECRET_PART) for p in changed if p.startswith(SECRET_PART)]
    words = []
    if config:
        words.append(", ".join(config) + " changed")
    if before.get(IMAGE) != after.image:
        words.append(f"image {before.get(IMAGE)} → {after.image}")
    if secrets:
        words.append(f"Secret {', '.join(secrets)} rotated")
    line = "; ".join(words) or "config changed"  # an entry from before digests were kept
    return line if len(line) <= MAX_CHANGE_CHARS else line[: MAX_CHANGE_CHARS - 1] + "…"


@dataclasses.dataclass(frozen=True)
class Assigned:
    number: int  # the revision the pods of this identity carry
    history: list[dict[str, Any]]  # status.revisions after it: newest first
    created: bool  # a new number was handed out (not a return to an earlier one)


def entry(history: Sequence[Mapping[str, Any]], number: Any) -> Mapping[str, Any]:
    """The entry of revision `number` in `history` ({} when it has none)."""
    return next((e for e in history if e.get(NUMBER) == number), {})


def entries(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """status.revisions as stored, the ones with a number (newest first)."""
    stored = status.get("revisions")
    if not isinstance(stored, list):
        return []
    return [e for e in stored if isinstance(e, Mapping) and isinstance(e.get(NUMBER), int)]


def _kept(ordered: Sequence[Mapping[str, Any]], keep: Collection[int], limit: int) -> list[dict[str, Any]]:
    """Newest first: every entry numbered in `keep` however old (what the pods run or may run again), and
    the newest others up to `limit` entries in all."""
    room = max(limit - sum(1 for e in ordered if e[NUMBER] in keep), 0)
    others = {int(e[NUMBER]) for e in ordered if e[NUMBER] not in keep}
    newest_others = set(sorted(others, reverse=True)[:room])
    return [dict(e) for e in ordered if e[NUMBER] in keep or e[NUMBER] in newest_others]


def assign(
    history: Sequence[Mapping[str, Any]],
    ident: Identity,
    *,
    serving: int | None,
    now: str,
    limit: int,
    keep: Collection[int] = (),
) -> Assigned:
    """The revision `ident` is, and the history with it. A known identity keeps its number; a new one gets
    the next number and a change line against the revision being served (`serving`, else the newest).

    Entries beyond `limit` (at least 1) go, oldest first, but never the one the pods are to run, the one
    they run (`serving`: the stable revision under a canary) or one in `keep` (a pinned revision): a
    rollout must always find the entry of what it runs, so the history may hold up to three entries more
    than a limit below three."""
    limit = max(limit, 1)
    ordered = sorted(history, key=lambda e: int(e[NUMBER]), reverse=True)
    held = {*keep, *([serving] if serving is not None else [])}
    for entry in ordered:
        if ident.matches(entry):
            number = int(entry[NUMBER])
            return Assigned(number, _kept(ordered, {*held, number}, limit), created=False)
    before = next((e for e in ordered if e[NUMBER] == serving), ordered[0] if ordered else None)
    number = (int(ordered[0][NUMBER]) + 1) if ordered else 1
    new = {
        NUMBER: number,
        CONFIG_HASH: ident.config_hash,
        IMAGE: ident.image,
        SECRETS_HASH: ident.secrets_hash,
        CHANGE: describe_change(before, ident),
        CREATED: now,
        DIGESTS: dict(ident.digests),
    }
    return Assigned(number, _kept([new, *ordered], {*held, number}, limit), created=True)
