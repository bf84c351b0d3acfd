"""The promotion policy, as a pure function over model-version tags: the `champion` alias moves only to a
version with a lower FID measured against the same reference images through the same feature network, under the
same evaluation protocol (N, reference split and size, resize, precision: `records.Protocol.tag`).

`decide` judges one candidate against the champion it read; `settled_champion` is the same policy over the whole
registry (the lowest comparable FID), which concurrent registrations converge on (`registry.settle_champion`)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

TAG_FID = "fid"
TAG_DATA_MD5 = "data_md5"
TAG_EXTRACTOR_SHA = "feature_extractor_sha256"
TAG_PROTOCOL = "evaluation_protocol"
COMPARABLE_ON = {TAG_DATA_MD5: "reference data", TAG_EXTRACTOR_SHA: "feature extractor",
                 TAG_PROTOCOL: "evaluation protocol"}


@dataclass(frozen=True)
class Floor:
    """What a forced promotion decided: `version` is champion by hand, and versions up to `through` (every version
    there was then) no longer compete, so that settling never undoes the force; later versions compete again."""
    version: int
    through: int

    def tag(self) -> str:
        return json.dumps({"version": self.version, "through": self.through})


def read_floor(value: str | None) -> Floor | None:
    """The floor recorded in a registered model's tag; None when there is none or it is unreadable."""
    try:
        recorded = json.loads(value or "")
        return Floor(int(recorded["version"]), int(recorded["through"]))
    except (ValueError, TypeError, KeyError):
        return None


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    forced: bool = False  # moved although not better (recorded on the version)


def tag_fid(tags: Mapping[str, str]) -> float:
    """FID recorded in a version's tags; +inf when absent or unparsable (never blocks a promotion)."""
    try:
        return float(tags[TAG_FID])
    except (KeyError, TypeError, ValueError):
        return math.inf


def decide(candidate: Mapping[str, str], champion: Mapping[str, str] | None, same_version: bool = False,
           force: bool = False) -> Decision:
    """Whether the version tagged `candidate` should replace the one tagged `champion` (None: no champion)."""
    if champion is None:
        return Decision(True, "no champion yet")
    if same_version:
        return Decision(False, "already champion")
    new, old = tag_fid(candidate), tag_fid(champion)
    differ = differences(candidate, champion)
    if differ:
        verdict = Decision(False, f"FIDs not comparable: different {' and '.join(differ)} (the champion's "
                                  f"{TAG_PROTOCOL}: {champion.get(TAG_PROTOCOL, 'not recorded')})")
    elif new < old:
        verdict = Decision(True, f"FID {new:.4f} < champion's {old:.4f}")
    else:
        verdict = Decision(False, f"FID {new:.4f} >= champion's {old:.4f}")
    if force and not verdict.promote:
        return Decision(True, f"forced ({verdict.reason})", forced=True)
    return verdict


def differences(a: Mapping[str, str], b: Mapping[str, str]) -> list[str]:
    """What keeps the FIDs of two versions apart (COMPARABLE_ON's names of the tags that differ); none: comparable."""
    return [what for tag, what in COMPARABLE_ON.items() if a.get(tag) != b.get(tag)]


def comparable(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether the FIDs of two versions can be compared (the same reference data, extractor and protocol)."""
    return not differences(a, b)


def settled_champion(champion: int, versions: Mapping[int, Mapping[str, str]], floor: Floor | None = None,
                     passed_over: frozenset[int] = frozenset()) -> int:
    """The version `champion` should give way to (itself when none): the lowest FID among the versions comparable
    with it, leaving out those a forced promotion set aside (`floor`) and those `passed_over`. A tie keeps the
    champion, then the earlier version, as `decide` keeps the champion on a tie. It depends only on the registry's
    contents, not on the order registrations ran in: every writer computing it from the same contents agrees."""
    reference = versions[champion]
    contenders = [number for number, tags in versions.items()
                  if number == champion or (number not in passed_over and comparable(tags, reference)
                                            and (floor is None or number > floor.through or number == floor.version))]
    return min(contenders, key=lambda number: (tag_fid(versions[number]), number != champion, number))
