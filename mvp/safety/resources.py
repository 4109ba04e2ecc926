"""Crisis resources (config/crisis_resources.yaml) and the safety message shown before a reply.

What it is for: when a client message is a crisis the app shows `safety_message(detection)`: calm
words, the advice of each detected category (from config/safety_rules.yaml, `category_info`), the
hotlines and the emergency numbers. A Detection flagged for review (a failed check) gets the
resources too.

    from mvp import safety
    print(safety.safety_message(safety.detect("我不想活了")))
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from mvp.paths import CONFIG_DIR
from mvp.safety.rules import _Checker, _read_yaml

DEFAULT_RESOURCES_PATH = CONFIG_DIR / "crisis_resources.yaml"


@dataclass(frozen=True)
class Resource:
    name: str
    phone: str


@dataclass(frozen=True)
class CrisisResources:
    """Hotlines and emergency numbers from config/crisis_resources.yaml."""

    hotlines: tuple[Resource, ...]
    emergency_medical: str
    emergency_police: str
    verified: str = ""

    def phone_numbers(self) -> tuple[str, ...]:
        """Every number shown to clients (the PII scrubber keeps these)."""
        return tuple(r.phone for r in self.hotlines) + (self.emergency_medical, self.emergency_police)

    def hotline_text(self) -> str:
        return "；".join(f"{r.name} {r.phone}" for r in self.hotlines)


def load_resources(path: str | Path | None = None) -> CrisisResources:
    """Read and validate crisis_resources.yaml (default config/crisis_resources.yaml)."""
    path = Path(path) if path is not None else DEFAULT_RESOURCES_PATH
    data = _read_yaml(path)
    ck = _Checker(path)
    ck.keys(data, "", ("version", "verified", "hotlines", "emergency"), required=("hotlines", "emergency"))
    if not isinstance(data["hotlines"], list) or not data["hotlines"]:
        raise ck.fail("hotlines", "must be a non-empty list of {name, phone}")
    hotlines = []
    for i, entry in enumerate(data["hotlines"]):
        ck.keys(entry, f"hotlines[{i}]", ("name", "phone", "note"), required=("name", "phone"))
        phone = ck.text(entry["phone"], f"hotlines[{i}].phone")
        if not re.fullmatch(r"[0-9][0-9 -]{1,18}[0-9]", phone):
            raise ck.fail(f"hotlines[{i}].phone", f"'{phone}' is not a phone number (digits, spaces, dashes)")
        hotlines.append(Resource(ck.text(entry["name"], f"hotlines[{i}].name"), phone))
    emergency = ck.keys(data["emergency"], "emergency", ("medical", "police"), required=("medical", "police"))
    return CrisisResources(tuple(hotlines), ck.text(emergency["medical"], "emergency.medical"),
                           ck.text(emergency["police"], "emergency.police"), str(data.get("verified") or ""))


@functools.lru_cache(maxsize=1)
def default_resources() -> CrisisResources:
    return load_resources()


def safety_message(detection, resources: CrisisResources | None = None, rules=None) -> str:
    """A calm Chinese message with crisis resources, shown before the reply; "" when no crisis.

    `rules` (a RuleSet) gives the category advice; default: config/safety_rules.yaml.
    """
    if not detection.is_crisis:
        return ""
    from mvp.safety.detect import _KNOWN, default_ruleset

    info = {**_KNOWN, **(rules or default_ruleset()).info}
    res = resources or default_resources()
    lines = ["谢谢你愿意把这些告诉我，我能感受到你现在很不好受。你的安全对我来说是最重要的。"]
    for cat in info:
        if cat in detection.categories:
            lines.append(info[cat].advice.format(medical=res.emergency_medical, police=res.emergency_police))
    lines.append("你不必一个人扛着，这些专业的求助渠道可以帮到你：")
    lines += [f"· {r.name}：{r.phone}" for r in res.hotlines]
    lines.append(f"· 情况紧急时：拨打 {res.emergency_medical}（急救）或 {res.emergency_police}（报警）")
    lines.append("也可以联系一位你信任的人，请他/她现在陪在你身边。我也会在这里继续陪你聊。")
    return "\n".join(lines)
