"""Word lists for the PII scrubber (mvp/safety/privacy.py), declared once here.

Plain data, no logic: surnames, the relation and role words that introduce a person, titles that follow
a surname (王老师), organisation suffixes, well-known employers, and the common words that look like a
name or an organisation but are not (高兴, 我们学校). Edit a list, then run
`python -m bench.bench_privacy` and `pytest tests/test_privacy.py` to see what the change does.
"""
from __future__ import annotations

SURNAMES_2: tuple[str, ...] = tuple("欧阳 司马 上官 诸葛 东方 皇甫 尉迟 公孙 令狐 慕容 长孙 宇文 司徒 夏侯 轩辕 端木 "
                                    "南宫 西门 独孤".split())
SURNAMES_1 = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
              "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫"
              "孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童"
              "凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳穆司卓古吉缪简项连芦麦褚"
              "娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂佟应臧闵苟邬边卞姬师仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查"
              "麻苑迟邝萧杭柯")

# People a client talks about: "我老婆（陈美玲）", "我们主管钱磊", "博导吴志刚". Longest first when compiled.
RELATIONS: tuple[str, ...] = tuple((
    "前男友 前女友 男朋友 女朋友 老公 老婆 丈夫 妻子 爱人 男友 女友 前夫 前妻 前任 对象 初恋 未婚夫 未婚妻 那口子 "
    "爸爸 妈妈 父亲 母亲 继父 继母 后妈 后爸 养父 养母 哥哥 姐姐 弟弟 妹妹 儿子 女儿 孩子 大儿子 小儿子 大女儿 小女儿 "
    "爷爷 奶奶 外公 外婆 姥姥 姥爷 舅舅 舅妈 姑姑 姑父 叔叔 婶婶 伯伯 伯母 阿姨 小姨 姨妈 姨父 表哥 表姐 表弟 表妹 "
    "堂哥 堂姐 堂弟 堂妹 姐夫 嫂子 妹夫 弟媳 婆婆 公公 岳父 岳母 老丈人 丈母娘 "
    "同事 领导 老板 老板娘 上司 上级 主管 经理 总监 组长 班长 队长 师父 师傅 师兄 师姐 师弟 师妹 导师 博导 硕导 "
    "室友 舍友 同学 同桌 朋友 好朋友 闺蜜 发小 网友 邻居 房东 债主 客户 "
    "班主任 老师 辅导员 校长 院长 所长 主任 咨询师 医生 主治医生 教练 心理老师 "
    "爸 妈 哥 姐 弟 妹").split())
# Titles after a surname: 王老师, 李医生, 徐总, 老张 is handled separately.
TITLES: tuple[str, ...] = tuple((
    "老师 医生 大夫 主任 经理 主管 教授 博士 老板 先生 女士 小姐 阿姨 叔叔 师傅 教练 校长 院长 局长 处长 科长 "
    "部长 书记 队长 律师 警官 护士 总监 所长 老总 总 姐 哥 姨 叔").split())
# Words that introduce the name right after them.
INTRODUCERS: tuple[str, ...] = ("我叫", "我的名字是", "我的名字叫", "我名字是", "我名字叫", "本人叫", "本人名叫", "名叫",
                                "叫做", "姓名是", "姓名", "全名是", "全名叫", "大名", "叫", "我是", "名字是")

# Organisation suffixes; the part before must be a real name (not 我们/新/小/一家).
ORG_SUFFIXES: tuple[str, ...] = tuple((
    "精神卫生中心 心理健康中心 心理咨询中心 心理中心 信用卡中心 客服中心 研究中心 卫生中心 研究所 研究院 "
    "股份有限公司 有限公司 分公司 公司 集团 基地 银行 分行 支行 医院 保健院 卫生院 中学 小学 大学 学院 学校 附中 附小 "
    "幼儿园 高中 职高 技校 中专 园区 事务所 律所 出版社 电视台 分局 局 厂 总部 实验室").split())
# Well-known employers, matched as they are (字节跳动, 阿里巴巴 ...).
EMPLOYERS: tuple[str, ...] = tuple((
    "字节跳动 阿里巴巴 阿里云 阿里 腾讯 华为 百度 京东 美团点评 美团 拼多多 小米 网易 快手 滴滴 蚂蚁集团 蚂蚁金服 "
    "富士康 比亚迪 中石油 中石化 中海油 中国石化 中国石油 中国海油 国家电网 南方电网 中国移动 中国联通 中国电信 大疆 海康威视 联想 小红书 携程 "
    "顺丰 中通 圆通 韵达 苏宁 国美 万达 万科 恒大 碧桂园 格力 海尔 宁德时代 蔚来 理想汽车 小鹏 吉利 长城汽车 "
    "上汽 一汽 中兴 OPPO vivo 新浪 搜狐 爱奇艺 优酷 得物 shein SHEIN 米哈游 "
    "招商证券 中信证券 平安保险 中国平安 中国人寿 太平洋保险 星巴克 麦当劳 肯德基 三星 苹果公司 微软 谷歌 亚马逊 "
    "特斯拉 德勤 普华永道 安永 毕马威 中建三局 中铁 中建 中交 宝钢 鞍钢 首钢").split())
# What may follow an employer and still be part of the organisation (京东物流, 网易游戏, 华为松山湖基地).
EMPLOYER_TAILS: tuple[str, ...] = tuple("物流 游戏 速运 快递 集团 电子 创新 证券 保险 科技 金融 汽车 点评 云 外卖 总部 "
                                        "研究院 分公司".split())

# The part before an organisation suffix that says nothing about which one it is.
GENERIC_ORG_PREFIXES: frozenset[str] = frozenset((
    "我们 他们 她们 你们 咱们 我 你 他 她 这 那 这个 那个 这家 那家 一家 一个 一所 这所 那所 哪个 哪家 什么 每个 每家 "
    "新 旧 老 好 大 小 坏 烂 破 普通 一般 正规 私立 公立 民办 重点 名牌 普通的 好的 三甲 专科 综合 综合性 市级 省级 "
    "精神病 精神科 心理 心理科 神经科 儿童 妇幼 中医 西医 附近 附近的 本地 当地 外地 城里 镇上 村里 县里 市里 老家 家里 "
    "孩子 女儿 儿子 孩子的 弟弟 妹妹 朋友 同学 私人 外企 国企 央企 民营 互联网 科技 贸易 培训 补习 辅导 职业 技术 "
    "购物 活动 服务 客服 社区 政府 公安 派出 国外 国内 整个 整 全 上 下 本 原 前 现 别的 其他 另一 另一家 一家小 "
    "大公司 小公司 工作 研究 结 格 布 饭 赌 骗 当 开 进 在 去 换 回 这种 那种 这些 那些 学习 学 考 上大 读大 "
    "名 同 谈 打 有 没 的 是 了 考上 考进 考到 考入 进入 去了 上了 转到 转学 回到 来到 离开 退出 辞职 "
    "喜欢 讨厌 想去 要去 想上 要上 上 读").split())
# Characters that end the name part of an organisation when scanning left from its suffix.
ORG_STOP_CHARS = ("我你他她它们的在是了与跟从到去把被给叫读进做住、，。！？；：（）()“”\"' \t\n,.!?;:"
                  "想说要就也还又很太刚曾已再只每个家那这哪")

# Two-character words that start with a surname character but are ordinary words (我老公高兴坏了).
NOT_NAMES: frozenset[str] = frozenset((
    "高兴 高考 高中 高三 高二 高一 明天 明白 明年 明明 方便 安全 安心 常常 关心 关系 关于 于是 成绩 成功 文化 白天 "
    "全部 全家 华为 江湖 金钱 时间 应该 单位 路上 连续 毕业 向来 向我 和我 管理 司机 宁愿 童年 任何 任务 孔子 梁山 "
    "宫殿 程序 解决 简单 车上 师傅 商量 查出 沙发 麻烦 池塘 景点 党员 费用 冷静 席位 米饭 尤其 阳台 古代 吉他 项目 "
    "连忙 石头 田地 龙虾 温暖 康复 齐心 易怒 乔迁 包括 尚未 舒服 甘心 左右 柳树 宁静 纪念 梅花 凌晨 季节 苗条 谷底 "
    "盛夏 曲子 蓝色 游戏 辛苦 管教 柴米 蒙在 华丽 房子 屈服 饶了 艾滋 司法 卓越 古怪 简直 项链 万一 钱包 严重 严格 "
    "武汉 戴着 莫名 向往 常见 温柔 施压 文字 牛奶 安排 齐全 庞大 颜色 章节 鲁莽 殷勤 申请 欧洲 耿耿 关门 焦虑 左边 "
    "黄昏 林子 马上 周末 周围 周年 胡说 胡思 何必 何时 何况 郑重 谢谢 许多 许久 韩国 曾经 董事 余下 杜绝 叶子 程度 "
    "苏醒 任性 钟头 陆续 范围 金额 夏天 付出 付钱 方法 方面 白白 顾虑 毛病 单休 卫星 阳光 江南 黎明前 成长 成熟 "
    "成年 成人 成为 成天 成了 高级 高温 高速 高大 高手 高铁 高层 高度 高峰 高价 安静 安慰 安排 安定 常年 常态 平安 "
    "文件 文章 文科 明星 明显 明确 石油 华人 华中 江西 江苏 东方 龙飞凤 钱财 钱款 雷同 雷雨 温度 温馨 康熙 向前 向上 "
    "向下 成都 邵阳 孟子 毛衣 毛巾 毛发 金子 金融 金牌 申报 关注 关掉 关机 关键 关上 宁可 宋朝 唐朝 汤圆 牛逼 牛肉 "
    "马路 马虎 周一 周二 周三 周四 周五 周六 周日 周边 周期 黄色 黄金 林业 陈述 陈旧 房东 房贷 房租 房间 房产 "
    "简历 简介 简称 游泳 游玩 游客 包子 包容 包装 包袱 包包 邱比 甘愿 甘蔗 曲线 童话 童鞋 连接 连累 连锁 段位 段落 "
    "贺卡 柯南 秦朝 叶酸 万分 万能 万物 史上 史诗 卜卦 冷漠 冷淡 冷战 晏起 席子 卫生 米粉 米线 柏油 宗教 桂花 应付 "
    "应对 应酬 应聘 边上 边缘 姬子 师生 师范 商业 商场 商品 沙子 荣誉 郎中 巩固 明朝 查看 查询 查到 迟到 迟早 苑里 "
    "于此 付款 熊孩 雷人 严厉 严肃 程度 谷歌 苏州 温州 杭州 常州 江门 祁连 石家 乔丹 甄别 池子 仲裁 敖包 佘山 "
    "毕竟 毕设 季度 裴多 霍乱 涂改 成本 苗头 盛开 曲折 翁婿 骆驼 路过 辛亥 靳东 管不 柴火 蒙古 鲍鱼 喻义 蒲公 滕王 "
    "解释 解脱 解压 牟利 艾灸 尤为 穆斯 卓然 古典 吉林 缪斯 简单 项羽 连带 芦苇 麦子 褚橙 娄底 窦性 戚家 岑寂 景色 "
    "党课 宫颈 费劲 卜算 冷水 晏殊 席卷 卫衣 米其 柏拉 宗旨 瞿塘 桂林 佟丽 应用 臧否 闵行 苟且 邬镇 边界 卞之 姬圈 "
    "荣耀 师兄 师姐 师弟 师妹 师父 师范 仇恨 栾川 隋朝 商人 刁难 沙漠 荣幸 巫婆 寇准 桑拿 郎朗 甄嬛 丛林 仲夏 虞美 敖德 巩俐 明亮 佘太 池州 查理 "
    "麻将 苑子 迟疑 邝海 萧瑟 杭州 柯基 江河 龙卷 史料 陶瓷 黎族 贺岁 顾客 毛线 郝建 龚自 邵逸 万岁 钱塘 严冬 覃塘 "
    "武器 戴上 莫非 孔雀 向日 汤药 常规 温和 康乃 施工 文学 牛仔 樊胜 葛优 邢台 安徽 齐鲁 易经 乔布 伍佰 庞然 颜值 "
    "倪妮 庄稼 聂小 章鱼 鲁迅 岳阳 翟天 殷切 詹姆 申城 欧美 耿直 关羽 兰州 焦急 俞敏 左手 柳州 甘肃 祝福 包头 宁夏 "
    "尚且 符合 舒适 阮籍 柯尔 纪律 梅雨 童年 凌乱 毕加 单纯 单独 单身 单亲 单元 季节 裴勇 霍金 涂鸦 成语 苗族 谷雨 "
    "盛大 曲靖 翁同 冉冉 骆宾 蓝天 路人 游泳 辛迪 靳尚 管用 柴油 蒙娜 鲍勃 华山 喻体 祁东 蒲松 房屋 滕州 屈原 饶舌 "
    "解决 牟平 艾米 尤其 阳光 穆桂 司令 卓别 古镇 吉祥 缪缪 简易 项目 连夜 芦花 麦当 褚时 白总是 高中生 余额 "
    "金秋 金色 史密 黄河 张家 王者 王国 王子 王八 李子 陈皮 杨梅 杨树 朱红 胡子 胡同 郭德 罗马 宋体 唐山 "
    "许可 韩剧 冯小 邓紫 曹操 彭于 曾几 肖战 田野 董卿 袁隆 潘多 蒋介 蔡徐 余生 杜甫 叶落 程咬 魏晋 吕布 丁点 任由 "
    "沈阳 姚明 卢浮 姜汤 崔健 钟表 钟声 谭咏 陆地 汪洋 范冰 石榴 廖凡 贾玲 夏季 韦小 付了 傅雷 方向 方案 白色 邹城 "
    "孟加 熊猫 秦岭 邱淑 江山 尹天 薛之 闫妮 段子 雷锋 侯门 龙虾 史记 陶渊 贺喜 顾及 毛主 郝蕾 龚琳 邵氏 万家 "
    "钱钟 严禁 戴佩 莫言 孔乙 向阳 汤姆 常识 温饱 康德 施舍 文明 牛顿 樊登 葛朗 邢道 安吉 齐白 易烊 乔峰 伍兹 庞统 "
    "颜真 倪萍 庄子 聂鲁 章子 鲁豫 岳飞 翟欣 殷桃 詹青 申雪 欧文 耿乐 关晓 兰花 焦点 俞灏 左宗 柳岩 甘露 祝英 包拯 "
    "宁波 尚雯 符号 舒淇 阮经 柯震 纪晓 梅西 童瑶 凌潇 毕福 单田 季羡 裴秀 霍建 涂磊 成龙 苗圃 谷爱 盛世 曲婉 翁虹 "
    "冉莹 骆驼 蓝色 路遥 游本 辛芷 靳东 管虎 柴静 蒙曼 鲍蕾 华晨 喻恩 祁同 蒲巴 房祖 滕华 屈楚 饶雪 解小 牟其 艾伦 "
    "尤长 穆铁 司马 卓伟 古天 吉克 缪杰 简爱 项少 连战 芦淞 麦迪 时光 时候 江湖 高低 林林 安安 平平 "
).split())
# Reduplicated words that are not nicknames (天天, 常常, 妈妈).
NOT_NICKNAMES: frozenset[str] = frozenset((
    "天天 常常 刚刚 慢慢 好好 偷偷 默默 渐渐 妈妈 爸爸 哥哥 姐姐 弟弟 妹妹 爷爷 奶奶 宝宝 谢谢 星星 看看 想想 试试 "
    "说说 聊聊 走走 等等 人人 处处 时时 个个 年年 统统 明明 往往 仅仅 纷纷 悄悄 轻轻 乖乖 狠狠 紧紧 早早 久久 多多 "
    "点点 些些 哈哈 呵呵 嘿嘿 嘻嘻 呜呜 叨叨 舅舅 姑姑 叔叔 伯伯 婶婶 姥姥 公公 婆婆 太太 娃娃 宝贝 稍稍 渐渐 "
    "匆匆 淡淡 深深 大大 小小 白白 冷冷 静静地 常常 老老 实实 干干 净净 清清 楚楚 平平 安安 快快 乐乐地 亲亲 抱抱 "
    "扣扣 拜拜 嗯嗯 哦哦 啊啊 好好的 每每 区区 face 刚刚好 妞妞 家家 户户 事事 样样 门门 天天的 日日 夜夜 声声 步步 "
    "层层 重重 连连 频频 隐隐 微微 略略 足足 整整 满满 漫漫 茫茫 蒙蒙 绵绵 默默地 瑟瑟 滔滔 津津 洋洋 款款 念念 "
    "依依 恋恋 惶惶 悻悻 怏怏 郁郁 闷闷 忧忧 戚戚 切切 喃喃 嗷嗷 哇哇 咚咚 啪啪 嘟嘟 汪汪 喵喵 咩咩 嘎嘎 拉拉 巴巴 "
    "看看吧 试试看 想想看 天天都 爸爸妈妈 奶奶家 姥姥家 心心 念心 次次 回回 顿顿 口口 句句 字字 件件 条条 张张 片片 "
    "个个都 人人都 谁谁 某某 啥啥 么么 哒哒 滴滴 旺旺 乐乐呵 嘻嘻哈 哈哈哈 呵呵呵 ").split())
# Characters that start a 小X / 阿X word that is not a nickname (小时, 小区, 阿姨).
NOT_NICK_AFTER_XIAO = frozenset("时心区孩学说事组伙猫狗米吃姐朋红王声型便腿屁镇三气店城白菜费偷号数妹时半部分份些"
                                "儿子女姑舅叔姨婶爷奶弟哥宝样票题品卖贩摊包车路道巷门口鸟虫鱼羊马牛猪兔熊"
                                "脸手脚嘴眼头肚腰胖瘦个高矮步款额量点块张支瓶盒杯碗天月年周时刻会儿"
                                "学生初高幼中麦提琴号")
NOT_NICK_AFTER_A = frozenset("姨婆公伯叔妈爸爹娘嫂哥姐弟妹谀拉门弥莫斯尔司根富胶片里")
# Capitalised Latin words that are not people's names.
NOT_ENGLISH_NAMES: frozenset[str] = frozenset((
    "I OK Ok App APP iPhone iPad Mac Windows Excel Word Python Java Google Apple Wifi WiFi Android Bilibili Steam "
    "Switch Xbox PlayStation Office Zoom Teams Email Emo Kpi KPI PPT PUA MBTI INFP INFJ ENFP ISTJ ENTJ ADHD PTSD OCD "
    "CBT AI Chatgpt ChatGPT Gpt GPT The A B C D E T SOHO Soho VIP Vlog Plog Tiktok TikTok Instagram Facebook Twitter "
    "Boss Hr HR Ceo CEO Cto Offer Deadline Ddl DDL Hello Hi Sorry Yes No Wow Bug Bye Ins Wechat WeChat Weixin Qq QQ "
    "Vx Wx Jd Taobao Meituan Didi Uber Starbucks Kfc KFC Mcdonald Nike Adidas Tesla Huawei Xiaomi Oppo Vivo Honor Bmw "
    "Ipad Iphone Airpods Macbook Mba Phd PhD Master Bachelor Gpa GPA Ielts IELTS Toefl TOEFL Gre GRE Sat SAT Ok啦").split())
# Common English given names, found without an introducing word (Mark不让我带孩子回国).
ENGLISH_NAMES: frozenset[str] = frozenset((
    "Jack Tom Mike Mark David John James Peter Paul Kevin Jason Eric Tony Alex Andy Leo Sam Ben Max Ryan Daniel Brian "
    "Chris Steven Frank Henry Jerry Bob Bill Allen Alan Simon Vincent Victor Oscar Louis Lucas Ethan Jimmy Sean Ivan "
    "Amy Lucy Lily Lisa Emma Emily Grace Alice Anna Angela Cindy Coco Doris Eva Fiona Gina Helen Iris Jane Jenny "
    "Jessica Joyce Judy Julia Karen Kelly Kitty Linda Mary May Nancy Nina Olivia Rachel Rose Sarah Sophia Sophie "
    "Stella Susan Tina Vicky Wendy Yoyo Zoe Cherry Candy Sunny Sally Ella Ada Abby Annie Bella Carol Daisy Elsa "
    "Hannah Irene Ivy Jasmine Kate Laura Lena Mia Molly Monica Nora Penny Ruby Sandy Tracy Vivian Winnie").split())
# Medications clients name (舍曲林 has 曲林 in it, which looks like a name): never scrubbed.
MEDICATIONS: tuple[str, ...] = tuple((
    "舍曲林 氟西汀 帕罗西汀 西酞普兰 艾司西酞普兰 氟伏沙明 文拉法辛 度洛西汀 米氮平 安非他酮 阿戈美拉汀 伏硫西汀 曲唑酮 "
    "喹硫平 奥氮平 利培酮 阿立哌唑 氯氮平 齐拉西酮 帕利哌酮 鲁拉西酮 碳酸锂 丙戊酸钠 丙戊酸镁 拉莫三嗪 卡马西平 奥卡西平 "
    "劳拉西泮 阿普唑仑 氯硝西泮 地西泮 艾司唑仑 佐匹克隆 右佐匹克隆 唑吡坦 坦度螺酮 丁螺环酮 普萘洛尔 哌甲酯 托莫西汀 "
    "褪黑素 安眠药 百忧解 左洛复 怡诺思 再普乐 思瑞康 维思通").split())
# Words after which a bare name is unlikely (太冷清了: 冷清 is tagged as a name by jieba).
NOT_BEFORE_BARE_NAME: frozenset[str] = frozenset("太 很 真 好 挺 蛮 最 更 越 有点 那么 这么 非常 特别 比较 十分 极 超 够 多么 "
                                                 "不 没 别 也 都 还 就 才".split())
