"""The promotion policy, as a pure function over model-version tags: the `champion` alias moves only to a
version with a lower FID measured against the same reference images through the same feature network, under the
same evaluation protocol (N, reference split and size, resize, precision: `records.Protocol.tag`)."""

from __future__ import annotations

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
    differ = [what for tag, what in COMPARABLE_ON.items() if candidate.get(tag) != champion.get(tag)]
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
