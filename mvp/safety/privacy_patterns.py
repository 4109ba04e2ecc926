"""Pattern detectors for the PII scrubber: numbers, accounts, plates and addresses (no names).

Each detector takes the text and yields `(kind, start, end)` spans on it; mvp/safety/privacy.py merges
them with the name and organisation spans of mvp/safety/privacy_names.py. Numbers are found in the
spellings people use: digits with spaces, dots, dashes or slashes inside (138.0013.8000), full-width
digits and Chinese numerals (一三八零零一三八零零零). Validation keeps ordinary numbers: a 身份证 number
needs a plausible birth date (a wrong check digit is still scrubbed: people mistype), a bank card passes
Luhn or is introduced as a card (卡号 ...), phones are mainland mobiles or landlines with an area code,
and kept numbers (hotlines) are left alone by the caller.
"""
from __future__ import annotations

import re
from typing import Iterator

Span = tuple[str, int, int]

_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")
_CN_DIGITS = str.maketrans("零〇一二三四五六七八九幺两", "0012345678912")
_D = "[0-9０-９]"
_SEP = r"[ \-－–—./·]"
_CN = "[零〇一二三四五六七八九幺两]"


def digits_of(text: str) -> str:
    """The digits of `text` (full-width and Chinese numerals converted), nothing else."""
    return re.sub(r"\D", "", text.translate(_FULLWIDTH).translate(_CN_DIGITS))


def id_checksum_ok(number: str) -> bool:
    """True for an 18-character 身份证 number whose last character is the correct check digit."""
    n = re.sub(r"[^0-9X]", "", number.translate(_FULLWIDTH).upper())
    if len(n) != 18 or not n[:17].isdigit():
        return False
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return "10X98765432"[sum(int(d) * w for d, w in zip(n[:17], weights)) % 11] == n[17]


def luhn_ok(number: str) -> bool:
    """True when the digits of `number` pass the Luhn check (bank cards)."""
    digits = re.sub(r"\D", "", number.translate(_FULLWIDTH))
    if not digits:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def plausible_id(number: str) -> bool:
    """An 18-character number shaped like a 身份证: area code 1-8xxxxx, birth date 1900-2029."""
    n = re.sub(r"[^0-9Xx]", "", number.translate(_FULLWIDTH)).upper()
    if len(n) != 18 or not n[:17].isdigit() or n[0] not in "12345678":
        return False
    year, month, day = int(n[6:10]), int(n[10:12]), int(n[12:14])
    return 1900 <= year <= 2029 and 1 <= month <= 12 and 1 <= day <= 31


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_ID18 = re.compile(rf"(?<![0-9０-９A-Za-z]){_D}{{6}}\s?{_D}{{8}}\s?{_D}{{3}}[0-9０-９Xx](?![0-9０-９A-Za-z])")
_ID15 = re.compile(rf"身份证(?:号码?|号)?\s*(?:是|为|[:：])?\s*([1-9]{_D}{{14}})(?![0-9０-９A-Za-z])")
_CARD = re.compile(rf"(?<![0-9０-９A-Za-z])(?:{_D}{{16,19}}|{_D}{{4}}(?:[ \-]{_D}{{4}}){{3}}(?:[ \-]{_D}{{1,3}})?)"
                   rf"(?![0-9０-９A-Za-z])")
_CARD_CUE = re.compile(r"(?:卡号|银行卡|信用卡|储蓄卡|借记卡|账号|帐号|卡)\s*(?:号码?|号)?\s*(?:是|为|[:：])?\s*$")
_MOBILE = re.compile(rf"(?<![0-9０-９+])(?:\(?(?:\+|＋)?86\)?{_SEP}?)?[1１][3-9３-９]{_D}(?:{_SEP}?{_D}){{8}}(?![0-9０-９])")
_MOBILE_CN = re.compile(rf"(?<![零〇一二三四五六七八九幺两十百千万])[一幺][三四五六七八九](?:\s?{_CN}){{9}}"
                        rf"(?![零〇一二三四五六七八九幺两十百千万])")
_LANDLINE = re.compile(rf"(?<![0-9０-９])(?:\(0{_D}{{2,3}}\)|0{_D}{{2,3}}){_SEP}?(?:{_D}{{7,8}}|{_D}{{3,4}}{_SEP}{_D}{{4}})"
                       rf"(?![0-9０-９])")
_ID_VALUE = r"([A-Za-z][-_A-Za-z0-9]{3,24}|[1-9]\d{4,11})(?![-_A-Za-z0-9])"
_QQ = re.compile(r"(?:(?<![A-Za-z])(?:qq|QQ|Qq|扣扣|企鹅)(?:号码?|号|账号)?\s*(?:是|为|[:：])?\s*)" + _ID_VALUE)
_WECHAT = re.compile(r"(?:(?:(?<![A-Za-z])(?:微信|薇信|威信|v信|V信|vx|VX|Vx|wx|WX|Wx|weixin|wechat|WeChat)"
                     r"(?:号码?|号|id|ID|账号|名)?(?:吧|呀|啊|哈|嘛|呗)?(?:就|也)?(?:是|为)?(?:\s*[:：]\s*|\s*搜一?下?\s*|\s*)"
                     r")|(?:(?<![A-Za-z])(?:加|v|V)(?:我)?\s*[vV]?\s*[:：]\s*)|(?:(?<![A-Za-z])[vV]我\s*[:：]?\s*))" + _ID_VALUE)
_STUDENT = re.compile(r"(?:学号|学生号|学生证号?|学籍号|学生证号码|考号|准考证号|工号)(?:码)?\s*(?:是|为|[:：])?\s*"
                      r"([A-Za-z]?\d[\d\-]{4,16}\d)(?![\dA-Za-z])")
_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"
_PLATE = re.compile(rf"(?<![A-Za-z0-9])[{_PROVINCES}][A-HJ-NP-Z]\s?[·•．.・]?\s?[A-HJ-NP-Z0-9]{{5,6}}(?![A-Za-z0-9])")

# Addresses: optional administrative levels, then a street with a number, a compound with a building,
# or a named place followed by a building and a room (国贸三期 A 座 2501, 望京SOHO T3 1508).
_PLACE = r"[^\s\d０-９〔〕，。、；：！？,.;:!?我你他她们的在住是到了和与从去来把被给叫家这那就也还说想要搬租找]"
_NUM = r"[0-9０-９一二三四五六七八九十百零甲乙丙A-Za-z]+"
_ADMIN = (rf"(?:{_PLACE}{{2,6}}?(?:省|自治区))?(?:{_PLACE}{{2,6}}?(?:市|州|盟))?"
          rf"(?:{_PLACE}{{1,6}}?(?:区|县|旗|镇|乡))?(?:{_PLACE}{{1,8}}?(?:街道|村))?")
_UNIT_WORD = r"(?:号楼|号院|栋|幢|座|单元|楼|层|室|号|户|期|区)"
_UNITS = (rf"(?:\s*(?:{_NUM}\s*{_UNIT_WORD}|[A-Z]\d{{1,2}}(?![0-9])|[0-9]{{1,3}}-[0-9]{{1,3}}-[0-9]{{2,4}}))*"
          rf"(?:[\s\-]*[0-9０-９]{{2,5}}(?:室|号|房)?)?")
_STREET = rf"{_PLACE}{{1,10}}?(?:大街|大道|路|街|道|巷|弄|胡同)\s*{_NUM}\s*(?:号|弄|段\s*{_NUM}\s*号)(?:院)?"
_BUILDING = r"(?:小区|花园|公寓|新村|家园|大厦|苑|社区|宿舍|宿舍楼|大院|广场|小镇|城|中心|软件园|园|里|SOHO|园区|村|府|湾|郡|邸|庭|公馆|居)"
_ZONE = rf"(?:[东南西北中](?:{_NUM})?|{_NUM})区"
_COMPOUND = (rf"(?:{_PLACE}{{1,10}}?{_BUILDING}|宿舍楼|宿舍|公寓|小区|{_PLACE}{{2,8}}?(?={_ZONE}))\s*(?:{_ZONE}\s*)?"
             rf"(?:{_NUM}\s*(?:号楼|号院|栋|幢|座|期|区|层|楼|组)|[东南西北中]座|[A-Z]\d{{1,2}}(?:\s+|\s*-\s*)\d{{3,4}}|\d{{1,3}}-\d{{1,3}}-\d{{2,4}})")
_TOWER = rf"{_PLACE}{{2,10}}?(?:[一二三四五六七八九十\d]+期)?\s*[A-Z]\s*座\s*\d{{3,4}}"
_BARE_UNITS = r"\d{1,3}\s*(?:栋|幢|号楼)\s*\d{1,2}\s*单元\s*\d{3,4}(?:室)?"
_ADDRESS = re.compile(rf"{_ADMIN}(?:{_BARE_UNITS}|{_STREET}(?:{_PLACE}{{2,10}}?(?:大厦|广场|中心)(?:\s*[A-Z]座)?)?|{_COMPOUND}|{_TOWER}){_UNITS}")
_ADDRESS_LEAD = re.compile(r"^(?:地址是|地址|就在|住在|我家在|家在|搬到了|搬到|位于|在|住)")


def _number_spans(text: str) -> Iterator[Span]:
    for m in _EMAIL.finditer(text):
        yield "email", m.start(), m.end()
    for m in _ID18.finditer(text):
        if plausible_id(m.group(0)) or id_checksum_ok(m.group(0)):
            yield "id_card", m.start(), m.end()
    for m in _ID15.finditer(text):
        yield "id_card", m.start(1), m.end(1)
    for m in _CARD.finditer(text):
        number = m.group(0)
        n = len(digits_of(number))
        if 16 <= n <= 19 and not (n == 18 and plausible_id(number)):
            if luhn_ok(number) or _CARD_CUE.search(text[max(0, m.start() - 12):m.start()]):
                yield "bank_card", m.start(), m.end()
    for regex in (_MOBILE, _MOBILE_CN, _LANDLINE):
        for m in regex.finditer(text):
            yield "phone", m.start(), m.end()


def pattern_spans(text: str) -> list[Span]:
    """Every pattern-detected span in `text` (may overlap; the caller resolves overlaps)."""
    spans = list(_number_spans(text))
    for regex, kind in ((_WECHAT, "wechat"), (_QQ, "qq"), (_STUDENT, "student_id")):
        for m in regex.finditer(text):
            value = m.group(1)
            if kind == "wechat" and value.isdigit() and len(value) == 11 and value.startswith("1"):
                kind_here = "phone"       # 我的微信是13912345678: the same number is a phone
            else:
                kind_here = kind
            spans.append((kind_here, m.start(1), m.end(1)))
    for m in _PLATE.finditer(text):
        spans.append(("plate", m.start(), m.end()))
    for m in _ADDRESS.finditer(text):
        start = m.start()
        lead = _ADDRESS_LEAD.match(m.group(0))
        if lead:
            start += lead.end()
        if m.end() - start >= 4:
            spans.append(("address", start, m.end()))
    return spans
