"""Text normalisation that every message goes through before the crisis rules (and the classifier) see it.

What it is for: people disguise or simply type the key words in many ways. `normalise(text)` maps them
to one spelling so that one rule catches them all, and returns an index map back to the original so
that evidence is cut from what the client wrote:
  - traditional -> simplified for the characters crisis phrasing uses; full width -> half width;
    ASCII letters to lower case; ASCII punctuation -> Chinese punctuation;
  - whitespace, zero-width characters and separators inside Chinese words removed
    (自 杀, 自/杀, 自-杀, 自*杀 -> 自杀), a space kept between Latin words;
  - emoji of pills, knives, blood, rope, guns -> words (💊 -> 药; two or more 💊 -> 很多药);
  - pinyin of the key phrases (wo xiang si, zisha, bu xiang huo le) -> characters;
  - digit and letter stand-ins for 死 after 想/去/要 (想s了, 想4, 想si, 想鼠了, 亖) -> 死.
Every step is one left-to-right pass (linear in the length of the message).

    from mvp.safety.normalise import normalise
    norm, index = normalise("我想s了")     # ("我想死了", None) - index is None when lengths agree
"""
from __future__ import annotations

import re

# Traditional -> simplified for characters that occur in crisis phrasing (pairs: trad, simp).
_T2S_PAIRS = (
    "殺杀 殘残 傷伤 樓楼 藥药 遺遗 書书 囑嘱 結结 東东 來来 時时 會会 說说 話话 這这 個个 們们 麼么 為为 無无 覺觉 "
    "幾几 見见 離离 別别 從从 裡里 裏里 邊边 點点 兒儿 經经 氣气 車车 錢钱 媽妈 當当 聽听 關关 兩两 條条 準准 備备 "
    "決决 嚴严 訴诉 誰谁 錯错 憂忧 鬱郁 緒绪 壓压 問问 題题 應应 該该 電电 報报 導导 聞闻 課课 學学 療疗 醫医 師师 "
    "診诊 斷断 燒烧 顆颗 農农 劑剂 劃划 槍枪 繩绳 橋桥 陽阳 臺台 層层 頂顶 軌轨 衝冲 強强 姦奸 褻亵 腦脑 暈晕 護护 "
    "絕绝 謝谢 辦办 處处 貓猫 託托 寫写 錄录 讓让 對对 給给 還还 過过 難难 頭头 開开 現现 後后 沒没 著着 於于 與与 "
    "並并 嗎吗 實实 進进 發发 帶带 壞坏 戀恋 態态 讀读 試试 夢梦 睏困 懶懒 醜丑 熱热 餓饿 凍冻 擠挤 窮穷 嚇吓 羨羡 "
    "尷尴 悶闷 噁恶 鬆松 緊紧 淚泪 煩烦 厭厌 樣样 種种 樂乐 劇剧 遊游 戲戏 機机 線线 黨党 臉脸 靜静 隨随 腳脚 輕轻 "
    "嘔呕 脫脱 擊击 鎖锁 綁绑 蹤踪 脅胁 騷骚 擾扰 盡尽 儘尽 飯饭 鍋锅 燙烫 煙烟 針针 續续 刪删 許许 誤误 嗚呜 "
    "鬧闹 罵骂 歲岁 級级 愛爱 懷怀 婦妇 爺爷 堅坚 撐撑 極极 彈弹 聯联 繫系 願愿 瘋疯 蟲虫 魚鱼 雞鸡 "
    "驚惊 慘惨 隻只 雙双 萬万 億亿 裝装 際际 趕赶 鋒锋 癒愈 痺痹 毀毁 滅灭 顧顾 類类 縮缩 剛刚 纔才 "
    "歡欢 喚唤 暫暂 鐵铁 軟软 麗丽 慮虑 歷历 憶忆 體体 內内 鬥斗 濟济 盤盘 爛烂 齊齐 擔担 憑凭 "
    "義义 價价 計计 畫画 歸归 潰溃 辭辞 總总 屍尸 頸颈 動动 脈脉 勢势 毆殴 摳抠 撓挠 癢痒 嚨咙 臟脏 終终 憤愤 "
    "滾滚 罷罢 親亲 舊旧 闆板 員员 業业 專专 險险 擋挡 攔拦 勸劝 喪丧 墳坟 靈灵 掛挂 淒凄 記记 講讲 談谈 變变 "
    "聲声 號号 運运 遠远 選选 懼惧 慣惯 憐怜 戰战 擇择 廢废 滿满 濕湿 獨独 獄狱 產产 監监 眾众 礙碍 禮礼 筆笔 "
    "紅红 約约 紙纸 細细 組组 統统 網网 緣缘 練练 繼继 罰罚 習习 職职 腸肠 膽胆 興兴 舉举 蓋盖 術术 補补 觀观 "
    "設设 詞词 語语 請请 調调 謀谋 證证 識识 負负 財财 責责 買买 賣卖 費费 資资 轉转 輩辈 週周 違违 鄉乡 釋释 "
    "銀银 長长 門门 閉闭 間间 陰阴 隱隐 雜杂 響响 頓顿 預预 領领 顯显 風风 飛飞 餘余 館馆 馬马 驗验 髒脏 鳥鸟 "
    "黃黄 龍龙 墜坠 勞劳 據据 驅驱 險险 糾纠 纏缠 懲惩 罪罪 孫孙 認认 錶表 鍵键 閃闪 陣阵 陸陆 雲云 頁页 頻频 "
    "顏颜 飽饱 駕驾 齒齿 麵面 攢攒 囤囤 剎刹 嚥咽 喫吃 殯殡 葬葬 窩窝 僅仅 倆俩 幫帮 參参 啟启 嗎吗 嘗尝 團团 圍围 "
    "塊块 壯壮 夠够 奪夺 孤孤 寧宁 寶宝 將将 尋寻 對对 屆届 岡冈 島岛 帳帐 帶带 廣广 張张 彎弯 徹彻 恆恒 悅悦 "
    "愛爱 慚惭 懇恳 懸悬 懺忏 揮挥 損损 搖摇 撞撞 擺摆 擾扰 數数 斃毙 棄弃 槓杠 標标 歐欧 殼壳 毆殴 決决 沒没 "
    "淺浅 測测 湧涌 溝沟 滅灭 漲涨 澀涩 灑洒 災灾 爭争 狀状 獎奖 現现 瑣琐 療疗 癥症 盜盗 睜睁 矯矫 碼码 確确 "
    "穩稳 窺窥 籠笼 糧粮 緩缓 罵骂 聖圣 膚肤 艱艰 藉借 蘇苏 虧亏 衛卫 複复 覆覆 誇夸 誕诞 謊谎 譴谴 豬猪 貝贝 "
    "賴赖 趨趋 跡迹 躍跃 輸输 辯辩 農农 逼逼 遞递 遷迁 邏逻 醞酝 釀酿 鎮镇 陳陈 隨随 雖虽 離离 顫颤 飢饥 騙骗 鬍胡"
)
_T2S = {ord(pair[0]): pair[1] for pair in _T2S_PAIRS.split() if len(pair) == 2 and pair[0] != pair[1]}
_PUNCT = {",": "，", "!": "！", "?": "？", ";": "；", ":": "：", "\uff0e": "."}
_TABLE: dict[int, str] = {}
for _c in range(0xFF01, 0xFF5F):                      # full-width ASCII -> ASCII ...
    _TABLE[_c] = chr(_c - 0xFEE0).lower()
for _c in "，！？；：":                                   # ... except the Chinese punctuation itself
    _TABLE.pop(ord(_c), None)
_TABLE.update({ord(k): v for k, v in _PUNCT.items()})
_TABLE.update({c: chr(c).lower() for c in range(ord("A"), ord("Z") + 1)})
_TABLE[0x3000] = " "
_TABLE[ord("亖")] = "死"
_TABLE.update(_T2S)

# Emoji that stand for the words of a method (one code point each; variation selectors are dropped
# with the zero-width characters). A run of two or more pills reads as "many pills".
_EMOJI = {"💊": "药", "🔪": "刀", "🗡": "刀", "🩸": "血", "🪢": "绳子", "🔫": "枪", "⚰": "棺材", "🪦": "墓碑",
          "☠": "死", "🧪": "毒药", "🩹": "伤口"}
_PILL_RUN = re.compile("💊(?:[\\s\ufe0f]*💊)+")
_EMOJI_RE = re.compile("|".join(map(re.escape, _EMOJI)))

_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\ufe0f\ufe0e"
_WHITESPACE = re.compile(f"[\\s{_INVISIBLE}]+")
# Separators people put inside a word to slip past filters: removed between two Chinese characters.
_SEPARATORS = re.compile(f"(?<=[\u4e00-\u9fff])[\\s{_INVISIBLE}/\\\\|_\\-*·•+#^=@$%&]+(?=[\u4e00-\u9fff])")

# Pinyin of the words crisis phrasing is made of. A run of Latin letters is converted only when it
# splits entirely into these syllables and says something (see _convert_pinyin).
_SYLLABLES = {
    "wo": "我", "xiang": "想", "si": "死", "zi": "自", "sha": "杀", "qu": "去", "bu": "不", "huo": "活",
    "yao": "要", "hao": "好", "zhen": "真", "de": "的", "le": "了", "ge": "割", "wan": "腕", "tiao": "跳",
    "lou": "楼", "shang": "上", "diao": "吊", "xia": "下", "suan": "算", "jie": "结", "shu": "束",
    "zhi": "直", "mei": "没", "yi": "意", "yisi": "意思", "zai": "在", "ren": "人", "shi": "是",
}
_KEY_SYLLABLES = frozenset({"si", "sha", "huo", "wan", "diao", "lou"})
_PINYIN_RUN = re.compile(r"(?<![a-z])[a-z]+(?: [a-z]+)*(?![a-z])")
_KNOWN_SHORT = frozenset({"zisha", "xiangsi", "qusi", "sile", "gewan", "tiaolou", "shangdiao"})
# Stand-ins for 死 after a verb of wanting: 想s了, 想4, 想si, 想sǐ, 想鼠了, 去s.
_DEATH_STANDIN = re.compile(r"(?<=[想去要找])(?:si|sǐ|sì|s|4|鼠|屎)(?![a-z0-9点个天号月岁年次遍本块])")


def _is_cjk(ch: str) -> bool:
    return "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef"


def _split_syllables(word: str) -> list[str] | None:
    """Split a Latin word into known syllables (longest first); None if it does not split."""
    out: list[str] = []
    i = 0
    while i < len(word):
        for size in (5, 4, 3, 2):
            piece = word[i:i + size]
            if len(piece) == size and piece in _SYLLABLES:
                out.append(piece)
                i += size
                break
        else:
            return None
    return out


def _convert_pinyin(run: str) -> tuple[str, list[int]] | None:
    """Characters for a run of pinyin, with the offset in `run` each character comes from."""
    syllables: list[str] = []
    offsets: list[int] = []
    pos = 0
    for word in run.split(" "):
        parts = _split_syllables(word)
        if parts is None:
            return None
        for part in parts:
            offsets.append(pos)
            pos += len(part)
        pos += 1
        syllables += parts
    if not _KEY_SYLLABLES.intersection(syllables):
        return None
    if len(syllables) < 3 and run.replace(" ", "") not in _KNOWN_SHORT and " " not in run:
        return None                                    # "side", "sile" in English text stay as they are
    chars: list[str] = []
    char_offsets: list[int] = []
    for syllable, offset in zip(syllables, offsets):
        word = _SYLLABLES[syllable]
        chars.append(word)
        char_offsets += [offset] * len(word)
    char_offsets[-1] = len(run) - 1                   # evidence ends where the run ends
    return "".join(chars), char_offsets


def _rewrite(text: str, index: list[int], pattern: re.Pattern, repl) -> tuple[str, list[int]]:
    """One pass of `pattern` over `text`, replacing each match by repl(match) (None keeps it)."""
    out: list[str] = []
    new_index: list[int] = []
    pos = 0
    for m in pattern.finditer(text):
        new = repl(m)
        if new is None:
            continue
        new, offsets = new if isinstance(new, tuple) else (new, None)
        out.append(text[pos:m.start()])
        new_index.extend(index[pos:m.start()])
        out.append(new)
        span, n = m.end() - m.start(), len(new)     # spread the new characters over the replaced span
        if offsets is None:
            offsets = [(k * (span - 1)) // max(1, n - 1) for k in range(n)]
        new_index.extend(index[m.start() + k] for k in offsets)
        pos = m.end()
    out.append(text[pos:])
    new_index.extend(index[pos:])
    return "".join(out), new_index


def _whitespace(m: re.Match) -> str:
    text = m.string
    before = text[m.start() - 1] if m.start() else ""
    after = text[m.end()] if m.end() < len(text) else ""
    visible = m.group().strip(_INVISIBLE)
    return " " if visible and before and after and not (_is_cjk(before) or _is_cjk(after)) else ""


def normalise(text: str) -> tuple[str, list[int] | None]:
    """Return the normalised text and, when lengths differ, a map from its indices to the original's."""
    t = text.translate(_TABLE)
    index: list[int] | None = None
    passes = []
    if any(ch in t for ch in "💊🔪🗡🩸🪢🔫⚰🪦☠🧪🩹"):
        passes += [(_PILL_RUN, lambda m: "很多药"), (_EMOJI_RE, lambda m: _EMOJI[m.group()])]
    passes.append((_SEPARATORS, lambda m: ""))
    passes.append((_WHITESPACE, _whitespace))
    passes.append((_PINYIN_RUN, lambda m: _convert_pinyin(m.group())))
    passes.append((_DEATH_STANDIN, lambda m: "死"))
    for pattern, repl in passes:
        if pattern.search(t) is None:                   # one C-speed scan; most messages skip most passes
            continue
        if index is None:
            index = list(range(len(t)))
        new_t, index = _rewrite(t, index, pattern, repl)
        t = new_t
    if index is not None and len(index) == len(text) and index == list(range(len(text))):
        index = None
    return t, index
