"""Per-frame events of tracked objects, for a reviewer who wants to know which frames to look at.

    started      the object's first mask was given on this frame
    corrected    a mask was given for an object already tracked (it replaces the prediction)
    removed      an empty mask was given: the object is not tracked from this frame on
    lost         the object was visible and is not any more (empty mask, or score under LOST_SCORE)
    reappeared   the object was lost and is visible again
    area_jump    its area changed by more than AREA_JUMP times from the previous frame

The detector keeps one small record per object (never per frame), so its state is O(objects).
"""

from __future__ import annotations

from dataclasses import dataclass

LOST_SCORE = 0.5  # mean probability inside the mask under which an object counts as lost
AREA_JUMP = 2.0  # area ratio (either way) between consecutive frames that is reported
MIN_AREA = 64  # pixels: areas smaller than this do not count as jumps (noise of tiny masks)


@dataclass
class _Seen:
    visible: bool
    area: int


class EventDetector:
    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}

    def update(self, areas: dict[int, int], scores: dict[int, float], started: set[int], corrected: set[int],
               removed: set[int]) -> list[dict]:
        """Events of one frame. `areas` and `scores` cover every object tracked on this frame."""
        events: list[dict] = []
        for i in sorted(removed):
            events.append({"type": "removed", "id": i})
            self._seen.pop(i, None)
        for i in sorted(areas):
            area, score = areas[i], scores.get(i, 0.0)
            visible = area > 0 and score >= LOST_SCORE
            before = self._seen.get(i)
            if i in started:
                events.append({"type": "started", "id": i})
            elif i in corrected:
                events.append({"type": "corrected", "id": i})
            elif before is not None:
                if before.visible and not visible:
                    events.append({"type": "lost", "id": i, "score": round(score, 4)})
                elif visible and not before.visible:
                    events.append({"type": "reappeared", "id": i, "score": round(score, 4)})
                elif visible and min(area, before.area) >= MIN_AREA:
                    ratio = area / before.area
                    if ratio >= AREA_JUMP or ratio <= 1 / AREA_JUMP:
                        events.append({"type": "area_jump", "id": i, "ratio": round(ratio, 3)})
            self._seen[i] = _Seen(visible, area)
        return events

    def state_dict(self) -> dict[int, list[int]]:
        return {i: [int(s.visible), s.area] for i, s in self._seen.items()}

    def load_state_dict(self, state: dict[int, list[int]]) -> None:
        self._seen = {int(i): _Seen(bool(v), int(a)) for i, (v, a) in state.items()}
