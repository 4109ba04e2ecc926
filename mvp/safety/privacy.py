"""PII scrubbing with typed placeholders, for exports (train/) and optionally at storage time.

What it is for: phone numbers, 身份证 numbers, bank cards, e-mail, QQ / WeChat ids, street addresses
and names that clients type must not reach training data. Each is replaced by a typed placeholder
(`PLACEHOLDERS`: 〔电话〕, 〔身份证〕, 〔银行卡〕, 〔邮箱〕, 〔QQ〕, 〔微信〕, 〔地址〕, 〔姓名〕).

How it is used (plain Python, no server):
    from mvp.safety.privacy import scrub, scrub_messages, scrub_record
    scrub("我叫张伟，电话13812345678").text        # '我叫〔姓名〕，电话〔电话〕'
    messages, counts = scrub_messages(messages)    # role/content dicts; counts for the manifest
    row, counts = scrub_record({"prompt": [...], "chosen": [...], "rejected": [...]})

Rules, all deterministic (the same text always gives the same output):
  - numbers are replaced only when they validate: 18-digit 身份证 with a correct check digit (15-digit
    old ones only right after the word 身份证), bank cards of 16-19 digits passing Luhn, mainland
    mobiles (1[3-9] + 9 digits, with +86, spaces or dashes) and landlines with an area code;
  - crisis hotline numbers from config/crisis_resources.yaml (and 12356/110/120) are kept;
  - QQ / WeChat ids only where introduced as such (QQ号, 微信, vx, wx ...);
  - addresses need a street number (…路88号) or a building (…小区3栋501); a bare city is kept;
  - names only where introduced (我叫张伟, 我的名字是…, 我老公张伟, 我妈李秀英: relation + a common
    surname + given name). A name learned in one message is replaced in every message scrubbed
    together (`Scrubber.learn`), so prompt, chosen and rejected stay aligned.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

KINDS: tuple[str, ...] = ("email", "id_card", "bank_card", "phone", "qq", "wechat", "address", "name")
PLACEHOLDERS: dict[str, str] = {
    "email": "〔邮箱〕", "id_card": "〔身份证〕", "bank_card": "〔银行卡〕", "phone": "〔电话〕",
    "qq": "〔QQ〕", "wechat": "〔微信〕", "address": "〔地址〕", "name": "〔姓名〕",
}
# Always kept, even if the resources file lists fewer (national hotline, police, ambulance).
ALWAYS_KEEP_NUMBERS: tuple[str, ...] = ("12356", "110", "120", "119", "122")
MAX_GIVEN_NAME = 2

_D = "[0-9０-９]"                                   # digits, full-width included
_SEP = r"[ \-－–]"                                  # separators people put inside numbers
_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_ID18 = re.compile(rf"(?<![0-9０-９A-Za-z])[1-9１-９]{_D}{{5}}{_SEP}?(?:18|19|20|１８|１９|２０){_D}{{2}}"
                   rf"{_D}{{4}}{_SEP}?{_D}{{3}}[0-9０-９Xx](?![0-9０-９A-Za-z])")
_ID15 = re.compile(rf"(身份证(?:号码?|号)?\s*(?:是|为|[:：])?\s*)([1-9]{_D}{{14}})(?![0-9０-９A-Za-z])")
_CARD = re.compile(rf"(?<![0-9０-９A-Za-z])(?:{_D}{{16,19}}|{_D}{{4}}(?:{_SEP}{_D}{{4}}){{3}}(?:{_SEP}{_D}{{1,3}})?)"
                   rf"(?![0-9０-９A-Za-z])")
_MOBILE = re.compile(rf"(?<![0-9０-９+])(?:\(?\+?86\)?{_SEP}?)?[1１][3-9３-９]{_D}(?:{_SEP}?{_D}){{8}}(?![0-9０-９])")
_LANDLINE = re.compile(rf"(?<![0-9０-９])(?:\(0{_D}{{2,3}}\)|0{_D}{{2,3}}){_SEP}?(?:{_D}{{7,8}}|{_D}{{3,4}}{_SEP}{_D}{{4}})"
                       rf"(?![0-9０-９])")
_QQ = re.compile(r"((?<![A-Za-z])(?:qq|QQ|Qq|扣扣|企鹅)(?:号码?|号|账号)?\s*(?:是|为|[:：])?\s*)([1-9]\d{4,11})(?!\d)")
_WECHAT = re.compile(r"((?<![A-Za-z])(?:微信|薇信|威信|v信|V信|vx|VX|Vx|wx|WX|Wx|weixin|wechat|WeChat)(?:号码?|号|id|ID|账号)?"
                     r"\s*(?:是|为|[:：])?\s*)([A-Za-z][-_A-Za-z0-9]{5,19}|[1-9]\d{4,11})(?![-_A-Za-z0-9])")

# Address: optional administrative levels, then a street with a number or a compound with a building.
_PLACE = r"[^\s\d０-９〔〕，。、；：！？,.;:!?我你他她的在住是到了和与从去来把被给叫家这那就都也还说想要]"
_NUM = r"[0-9０-９一二三四五六七八九十百零A-Za-z]+"
_ADMIN = (rf"(?:{_PLACE}{{2,6}}?(?:省|自治区))?(?:{_PLACE}{{2,6}}?(?:市|州|盟))?"
          rf"(?:{_PLACE}{{1,6}}?(?:区|县|旗|镇|乡))?(?:{_PLACE}{{1,8}}?(?:街道|村))?")
_UNITS = rf"(?:\s*{_NUM}\s*(?:号楼|栋|幢|座|单元|楼|层|室|号|户))*(?:[\s\-]*[0-9０-９]{{2,5}}(?:室|号|房)?)?"
_STREET = rf"{_PLACE}{{1,10}}?(?:大街|大道|路|街|道|巷|弄|胡同)\s*{_NUM}\s*(?:号|弄)(?:院)?"
_COMPOUND = (rf"{_PLACE}{{2,10}}?(?:小区|花园|公寓|新村|家园|大厦|苑|社区|宿舍|大院)\s*{_NUM}\s*"
             rf"(?:号楼|栋|幢|座|期|区)")
_ADDRESS = re.compile(rf"{_ADMIN}(?:{_STREET}|{_COMPOUND}){_UNITS}")

_SURNAMES_2 = ("欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 令狐 慕容 长孙 宇文 司徒 夏侯 轩辕 端木 南宫 西门 独孤").split()
_SURNAMES_1 = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
               "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫"
               "孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童"
               "凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳穆司卓古吉缪简项连芦麦褚"
               "娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂佟应臧闵苟邬边卞姬师仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查"
               "麻苑迟邝")
_SURNAME = "(?:" + "|".join(_SURNAMES_2) + "|[" + _SURNAMES_1 + "])"
# Characters that end a given name (grammar words, time words, pronouns, punctuation).
_NOT_GIVEN = "脾性话的了是在和与跟也都就还又很太把被给让叫说去来到过着么吗呢吧啊呀哦嘛我你他她它们这那个有没不人今昨年岁月日号点时候里上下前后中总老每一口嘴打骂对会要想"
_GIVEN = rf"(?:[\u4e00-\u9fa5](?<![{_NOT_GIVEN}]))"
_RELATIONS = ("前男友 前女友 男朋友 女朋友 老公 老婆 丈夫 妻子 爱人 男友 女友 前夫 前妻 对象 爸爸 妈妈 父亲 母亲 继父 继母 "
              "哥哥 姐姐 弟弟 妹妹 儿子 女儿 同事 领导 老板 上司 室友 同学 朋友 闺蜜 舅舅 姑姑 叔叔 阿姨 婆婆 公公 "
              "岳父 岳母 班主任 老师 爸 妈 哥 姐 弟 妹").split()
_INTRO = r"(?:我叫|我的名字(?:是|叫)|我名字(?:是|叫)|本人(?:叫|名叫)|名叫|叫做|姓名(?:是|[:：])?)"
_RELATION = r"(?:我|俺)的?(?:" + "|".join(_RELATIONS) + r")(?:叫|是|名叫)?[，,\s]*"
_NAME_INTRO = re.compile(rf"({_INTRO}\s*|{_RELATION})({_SURNAME}{_GIVEN}{{1,{MAX_GIVEN_NAME}}})")
# Words that look like surname + given name but are not names (我老公高兴坏了).
_NOT_NAMES = frozenset((
    "高兴 高考 高中 高三 明天 明白 明年 方便 安全 安心 常常 关心 关系 关于 于是 成绩 成功 文化 白天 "
    "全部 全家 华为 江湖 金钱 时间 应该 单位 路上 连续 毕业 向来 向我 和我 管理 司机 宁愿 童年 任何 "
    "任务 孔子 梁山 宫殿 程序 解决 简单 车上 师傅 商量 查出 沙发 麻烦 池塘 景点 党员 费用 冷静 席位 "
    "米饭 尤其 阳台 古代 吉他 项目 连忙 石头 田地 龙虾 温暖 康复 齐心 易怒 乔迁 包括 尚未 舒服 甘心 "
    "左右 柳树 宁静 纪念 梅花 凌晨 季节 苗条 谷底 盛夏 曲子 蓝色 游戏 辛苦 管教 柴米 蒙在 华丽 房子 "
    "屈服 饶了 艾滋 司法 卓越 古怪 简直 项链 万一 钱包 严重 严格 武汉 戴着 莫名 向往 常见 温柔 施压 "
    "文字 牛奶 安排 齐全 庞大 颜色 章节 鲁莽 殷勤 申请 欧洲 耿耿 关门 焦虑 左边 黄昏 林子 马上 周末 "
    "周围 周年 胡说 胡思 何必 何时 何况 郑重 谢谢 许多 许久 韩国 曾经 董事 余下 杜绝 叶子 程度 苏醒 "
    "任性 钟头 陆续 范围 金额 夏天 付出 付钱 方法 方面 白白 顾虑 毛病 "
).split())


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text.translate(_FULLWIDTH_DIGITS))


def id_checksum_ok(number: str) -> bool:
    """True for an 18-character 身份证 number whose last character is the correct check digit."""
    n = number.translate(_FULLWIDTH_DIGITS).upper()
    n = re.sub(r"[^0-9X]", "", n)
    if len(n) != 18 or not n[:17].isdigit():
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(n[:17], weights))
    return "10X98765432"[total % 11] == n[17]


def luhn_ok(number: str) -> bool:
    """True when the digits of `number` pass the Luhn check (bank cards)."""
    digits = _digits(number)
    if not digits:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid_date(yymmdd: str) -> bool:
    month, day = int(yymmdd[2:4]), int(yymmdd[4:6])
    return 1 <= month <= 12 and 1 <= day <= 31


@dataclass(frozen=True)
class ScrubResult:
    """Scrubbed text and how many items of each kind (`KINDS`) were replaced."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)


def empty_counts() -> dict[str, int]:
    return {kind: 0 for kind in KINDS}


def add_counts(total: dict[str, int], more: Mapping[str, int]) -> dict[str, int]:
    """Add `more` into `total` (in place) and return it; for export manifests."""
    for kind, n in more.items():
        total[kind] = total.get(kind, 0) + n
    return total


def _default_keep_numbers() -> frozenset[str]:
    from mvp.safety.detect import load_resources  # the resources file is owned by the safety module
    return frozenset(_digits(n) for n in load_resources().phone_numbers())


class Scrubber:
    """Replaces PII with typed placeholders; names learned with `learn` are replaced everywhere."""

    def __init__(self, keep_numbers: Iterable[str] | None = None) -> None:
        keep = _default_keep_numbers() if keep_numbers is None else frozenset(_digits(n) for n in keep_numbers)
        self.keep_numbers = keep | frozenset(ALWAYS_KEEP_NUMBERS)
        self.names: set[str] = set()
        self._names_re: re.Pattern | None = None

    def learn(self, text: str) -> None:
        """Remember the names introduced in `text` (我叫…, 我老公…) so `scrub` replaces them anywhere."""
        for m in _NAME_INTRO.finditer(text):
            name = m.group(2)
            if len(name) == 3 and name[:2] not in _SURNAMES_2 and text[m.end():m.end() + 1] == name[-1]:
                name = name[:2]          # 王芳天天: the last character starts a doubled word (天天, 常常)
            for candidate in (name, name[:-1] if len(name) == 3 and name[:2] not in _SURNAMES_2 else ""):
                if len(candidate) >= 2 and candidate[:2] not in _NOT_NAMES:
                    if candidate not in self.names:
                        self.names.add(candidate)
                        self._names_re = None

    def scrub(self, text: str) -> ScrubResult:
        """Scrub one text (also learning the names it introduces)."""
        self.learn(text)
        counts = empty_counts()

        def sub(regex: re.Pattern, kind: str, s: str, valid: Any = None, group: int = 0) -> str:
            def one(m: re.Match) -> str:
                found = m.group(group)
                if valid is not None and not valid(found):
                    return m.group(0)
                counts[kind] += 1
                return m.group(0)[:m.start(group) - m.start(0)] + PLACEHOLDERS[kind] if group else PLACEHOLDERS[kind]
            return regex.sub(one, s)

        t = sub(_EMAIL, "email", text)
        t = sub(_ID18, "id_card", t, valid=lambda s: id_checksum_ok(s) and _valid_date(_digits(s)[8:14]))
        t = sub(_ID15, "id_card", t, valid=lambda s: _valid_date(_digits(s)[6:12]), group=2)
        t = sub(_CARD, "bank_card", t, valid=lambda s: 16 <= len(_digits(s)) <= 19 and luhn_ok(s))
        t = sub(_MOBILE, "phone", t, valid=self._not_kept)
        t = sub(_LANDLINE, "phone", t, valid=self._not_kept)
        t = sub(_QQ, "qq", t, group=2)
        t = sub(_WECHAT, "wechat", t, group=2)
        t = sub(_ADDRESS, "address", t)
        if self.names:
            if self._names_re is None:
                self._names_re = re.compile("|".join(re.escape(n) for n in sorted(self.names, key=lambda n: (-len(n), n))))
            t = sub(self._names_re, "name", t)
        return ScrubResult(t, counts)

    def _not_kept(self, number: str) -> bool:
        digits = _digits(number)
        if digits.startswith("86") and len(digits) == 13:
            digits = digits[2:]
        return digits not in self.keep_numbers

    def scrub_messages(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Scrub the `content` of role/content dicts (other keys copied unchanged)."""
        for m in messages:
            if isinstance(m.get("content"), str):
                self.learn(m["content"])
        out, total = [], empty_counts()
        for m in messages:
            new = dict(m)
            if isinstance(m.get("content"), str):
                result = self.scrub(m["content"])
                new["content"] = result.text
                add_counts(total, result.counts)
            out.append(new)
        return out, total


def scrub(text: str, keep_numbers: Iterable[str] | None = None) -> ScrubResult:
    """Scrub a single text."""
    return Scrubber(keep_numbers).scrub(text)


def scrub_messages(messages: Sequence[Mapping[str, Any]],
                   keep_numbers: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Scrub a conversation; a name introduced in any message is replaced in all of them."""
    return Scrubber(keep_numbers).scrub_messages(messages)


def scrub_record(record: Mapping[str, Any], fields: Sequence[str] = ("prompt", "chosen", "rejected", "completion", "messages"),
                 keep_numbers: Iterable[str] | None = None) -> tuple[dict[str, Any], dict[str, int]]:
    """Scrub the listed fields of one export row (message lists or strings) with shared names.

    For DPO/KTO rows: prompt, chosen and rejected are scrubbed by one Scrubber, so a name introduced in
    the prompt is the same placeholder in both replies. Fields that are absent are skipped.
    """
    scrubber = Scrubber(keep_numbers)
    present = [f for f in fields if f in record]
    for f in present:
        value = record[f]
        for text in ([value] if isinstance(value, str) else [m.get("content") for m in value if isinstance(m, Mapping)]):
            if isinstance(text, str):
                scrubber.learn(text)
    out, total = dict(record), empty_counts()
    for f in present:
        value = record[f]
        if isinstance(value, str):
            result = scrubber.scrub(value)
            out[f] = result.text
            add_counts(total, result.counts)
        elif isinstance(value, list):
            out[f], counts = scrubber.scrub_messages(value)
            add_counts(total, counts)
    return out, total
