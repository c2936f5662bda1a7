"""Writes pii_corpus.jsonl: hand-written LINE-style messages with hand-marked personal data.

Run `python tests/data/make_pii_corpus.py` from the project root after editing MESSAGES.

Each message marks what a careful human would mask as ⟪K:value⟫, K one of
E (email), P (phone), N (national ID / resident certificate), C (credit card), I (IP).
The script removes the marks and writes, per line:
  {"text": ..., "expected": ..., "spans": [[start, end, kind], ...], "split": ...}
where `expected` is `text` with each marked span replaced by its marker.

The annotation is the ground truth and is independent of conversations/pii.py: nothing
here imports it. Valid national IDs and card numbers are computed below with their own
checksum code so they really pass (and the "bad" ones really fail).
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "pii_corpus.jsonl"

KINDS = {"E": "email", "P": "phone", "N": "national_id", "C": "credit_card", "I": "ip_address"}
MARKERS = {"email": "[EMAIL]", "phone": "[PHONE]", "national_id": "[ID]",
           "credit_card": "[CARD]", "ip_address": "[IP]"}

# --- valid and invalid identifiers ----------------------------------------------------

AREA = dict(zip("ABCDEFGHJKLMNPQRSTUVXYWZIO", range(10, 36)))


def tw_id(first9: str) -> str:
    """Appends the check digit to a letter + 8 characters (national ID or certificate)."""
    code = AREA[first9[0].upper()]
    total = code // 10 + (code % 10) * 9
    second = first9[1]
    total += (AREA[second.upper()] % 10 if second.isalpha() else int(second)) * 8
    total += sum(int(c) * w for c, w in zip(first9[2:], (7, 6, 5, 4, 3, 2, 1)))
    return first9 + str((10 - total % 10) % 10)


def bad_check(valid: str) -> str:
    return valid[:-1] + str((int(valid[-1]) + 3) % 10)


def luhn_complete(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return partial + str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    return luhn_complete(number[:-1]) == number


def group(number: str, sizes, sep=" ") -> str:
    out, i = [], 0
    for size in sizes:
        out.append(number[i : i + size])
        i += size
    return sep.join(out)


# Published examples must agree with the code above.
assert tw_id("A12345678") == "A123456789"
assert tw_id("AA0000000") == "AA00000009"
assert tw_id("A80000001") == "A800000014"

ID = [tw_id(p) for p in (
    "F22345678", "H12098765", "P22013579", "S12468024", "Z10101010", "I23344556",
    "O15550123", "W28765432", "K10293847", "T20817263", "E12233445", "N23456781",
    "Y16677889", "B29988776", "L11357913",
)]
ID_LOWER = tw_id("d12345670").lower()
ARC_NEW = [tw_id("A80012345"), tw_id("F92234567"), tw_id("H87654321"), tw_id("C90001234")]
ARC_OLD = [tw_id("FA1234567"), tw_id("AC2345678"), tw_id("TD9876543"), tw_id("HB0102030")]

rng = random.Random(20240501)


def card(prefix: str, length: int) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    return luhn_complete(body)


VISA = "4111111111111111"
VISA2 = card("4", 16)
VISA13 = card("4", 13)
MC = "5555555555554444"
MC2 = card("53", 16)
MC_2SERIES = card("2223", 16)
AMEX = "378282246310005"
AMEX2 = card("34", 15)
JCB = "3530111333300000"
JCB2 = card("3566", 16)
UNIONPAY = card("62", 16)
UNIONPAY19 = card("6212", 19)
DISCOVER = "6011111111111117"
DISCOVER65 = card("65", 16)
DINERS = "30569309025904"
DINERS36 = card("36", 14)
for number in (VISA, MC, AMEX, JCB, DISCOVER, DINERS):
    assert luhn_ok(number), number

NOT_LUHN_VISA = "4111111111111112"
NOT_LUHN_MC = "5555555555554445"
LUHN_UNKNOWN_IIN = card("9", 16)  # passes Luhn, no card brand starts with 9
LUHN_UNKNOWN_IIN2 = card("12", 16)
assert not luhn_ok(NOT_LUHN_VISA) and not luhn_ok(NOT_LUHN_MC)

# An e-invoice number shaped like an old-style certificate and passing its checksum.
INVOICE_LIKE_ARC = tw_id("CA1234567")
# EAN-13 barcodes of products sold in Taiwan (prefix 471) that also pass Luhn.
EAN_LUHN = next(
    c for c in (luhn_complete("471" + f"{n:09d}") for n in range(100000000, 100000400))
    if sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(c[:12])) % 10
    == (10 - int(c[12])) % 10
)

# --- messages ---------------------------------------------------------------------------

WITH_PII = [
    # email
    "請寄到⟪E:abc.def+tw@mail.example.com.tw⟫謝謝",
    "⟪E:jenny.lin@gmail.com⟫ 是我的信箱",
    "我的email是⟪E:chen_xiaoming1988@yahoo.com.tw⟫，有問題再聯絡",
    "Please send the invoice to ⟪E:billing@acme-corp.co.jp⟫.",
    "報名表請回傳至「⟪E:signup2024@events.ntu.edu.tw⟫」",
    "メールは⟪E:tanaka.hiroshi@docomo.ne.jp⟫までお願いします。",
    "cc ⟪E:ops+alerts@sub.domain.example.org⟫ and ⟪E:Team.Lead@Example.COM⟫ please",
    "信箱：⟪E:wang.dawei@hotmail.com⟫（請勿公開）",
    "寄給⟪E:service@shop.example.tw⟫或⟪E:support@shop.example.tw⟫都可以",
    "聯絡窗口 ⟪E:lee-mei@company.com.tw⟫ / 分機 23",
    "我換信箱了→⟪E:newmail2025@outlook.com⟫",
    "老師的信箱是⟪E:prof.huang@csie.ntu.edu.tw⟫嗎？",
    "Email: ⟪E:john.smith@company.io⟫ Phone: ⟪P:+1 415 555 0100⟫",
    "客服回覆說寄到⟪E:cs@momo.example.com.tw⟫就好",
    "帳號是⟪E:abc123@gmail.com⟫，密碼我私訊給你",
    "⟪E:yuki.sato＠example.jp⟫ って全角で書いたほうがいい？",
    "通知會寄到⟪E:noreply+order123@mail.shopee.tw⟫",
    "請用⟪E:ming_hsu@ms1.hinet.net⟫寄給我",
    "⟪E:hr@startup.ai⟫收到履歷會回覆",
    "兩個都試過了：⟪E:li.na@qq.com⟫、⟪E:lina88@163.com⟫",
    "忘記密碼的信寄到⟪E:user.name+line@gmail.com⟫了",
    "docomoの「⟪E:taro..yamada.@docomo.ne.jp⟫」でも届きますか",
    "請問⟪E:admin@example.com⟫這個信箱還有在用嗎",
    "(⟪E:kevin.wu@nycu.edu.tw⟫)",
    "請把檔案寄到 ⟪E:design-team@studio.example.com⟫ ，標題寫【提案】",
    "mailto:⟪E:press@example.org⟫ 這個連結點不開",
    "我的工作信箱⟪E:amy_chang@tsmc.example.com⟫私人信箱⟪E:amy.chang.tw@gmail.com⟫",
    "⟪E:S1234567@stu.example.edu.tw⟫ 是學校給的信箱",
    # phone: Taiwan mobiles
    "我的手機是⟪P:0912-345-678⟫",
    "⟪P:0912345678⟫ 有事打給我",
    "電話 ⟪P:0912 345 678⟫，晚上十點前都可以",
    "打⟪P:+886 912 345 678⟫找我",
    "WhatsApp ⟪P:+886-912-345-678⟫",
    "國外打回來要撥⟪P:886912345678⟫嗎？",
    "媽媽的手機⟪P:0933-123-456⟫，爸爸的⟪P:0987-654-321⟫",
    "電話⟪P:0912345678⟫或⟪P:0922-333-444⟫",
    "下午3點打⟪P:0955-123-456⟫給王先生",
    "阿姨的電話是⟪P:0912-345-678⟫，2024-05-01下午2:30會到",
    "My number is ⟪P:0912 345 678⟫, call me after 6pm.",
    "聯絡人：陳先生 ⟪P:0921-234-567⟫ / 林小姐 ⟪P:0910-111-222⟫",
    "LINE 不通的話打 ⟪P:0968-888-777⟫",
    "手機號碼：⟪P:0978123456⟫。",
    "⟪P:0912.345.678⟫ 這樣寫也行嗎",
    "⟪P:０９１２３４５６７８⟫（全形）",
    "收件人 王小明 ⟪P:0936-000-111⟫ 台北市大安區忠孝東路四段100號5樓",
    "如果找不到我就打⟪P:0911222333⟫，這是我同事的",
    # phone: Taiwan landlines
    "公司電話⟪P:(02) 2345-6789⟫#123",
    "台北辦公室 ⟪P:02-2345-6789⟫，台中 ⟪P:04-2234-5678⟫",
    "總機 ⟪P:+886 2 2345 6789⟫ 轉 301",
    "苗栗的店 ⟪P:037-123456⟫",
    "南投民宿電話⟪P:049-2345678⟫，老闆姓林",
    "台東 ⟪P:089-345678⟫ 記得先預約",
    "高雄門市 ⟪P:07-123-4567⟫",
    "新竹 ⟪P:03-5123456⟫ 花蓮 ⟪P:03-8123456⟫",
    "台南的老家 ⟪P:06-2345678⟫，嘉義 ⟪P:05-2345678⟫",
    "金門的旅館 ⟪P:082-312345⟫",
    "客服專線 ⟪P:0800-080-123⟫（免付費）",
    "請撥⟪P:(04)2234-5678⟫",
    "傳真 ⟪P:02-2345-6790⟫",
    "預約專線⟪P:04-2345-6789⟫#2",
    "地址台北市信義路五段7號，電話⟪P:(02)8101-2345⟫",
    "從國外打：⟪P:+886 (0)2 2345 6789⟫",
    "屏東 ⟪P:08-8123456⟫ 找張老師",
    "⟪P:+886 4 2234 5678⟫ is our Taichung office",
    "馬祖 ⟪P:0836-22345⟫",
    "新店家電話改成⟪P:02-27208889⟫了",
    # phone: international and Japan
    "東京の携帯は⟪P:+81 90-1234-5678⟫です",
    "US office: ⟪P:+1 415 555 0100⟫",
    "日本の番号 ⟪P:090-1234-5678⟫ に電話してください",
    "会社の電話は⟪P:03-1234-5678⟫です",
    "香港朋友 ⟪P:+852 9123 4567⟫",
    "上海分公司 ⟪P:+86 138 0013 8000⟫",
    "新加坡 ⟪P:+65 8123 4567⟫",
    "London ⟪P:+44 20 7946 0958⟫",
    "大阪 ⟪P:+81 6-6123-4567⟫",
    "電話は⟪P:０９０－１２３４－５６７８⟫です",
    "飯店電話⟪P:+81-3-1234-5678⟫",
    "電話番号：⟪P:0120-123-456⟫（フリーダイヤル）",
    "call ⟪P:+1 (415) 555-0100⟫ ext. 22",
    "韓國朋友 ⟪P:+82 10-1234-5678⟫",
    "泰國導遊 ⟪P:+66 81 234 5678⟫",
    "私の携帯⟪P:080-1234-5678⟫、妻は⟪P:070-2345-6789⟫",
    "大阪のお店⟪P:06-6123-4567⟫に予約しました",
    # national ID and resident certificates
    f"身分證字號 ⟪N:{ID[0]}⟫",
    f"我的身分證是⟪N:{ID[1]}⟫，生日1990/05/12",
    f"報名資料：王小明，⟪N:{ID[2]}⟫，⟪P:0912-345-678⟫",
    f"身分證⟪N:{ID_LOWER}⟫（小寫也算嗎）",
    f"⟪N:{ID[3]}⟫ 這是我太太的",
    f"居留證號碼 ⟪N:{ARC_NEW[0]}⟫",
    f"ARC No.: ⟪N:{ARC_NEW[1]}⟫",
    f"舊的居留證 ⟪N:{ARC_OLD[0]}⟫，新的是⟪N:{ARC_NEW[2]}⟫",
    f"幫我查⟪N:{ID[4]}⟫的保單",
    f"統一證號⟪N:{ARC_NEW[3]}⟫",
    f"身分證字號：⟪N:{ID[5]}⟫。",
    f"「⟪N:{ID[6]}⟫」是身分證嗎？",
    f"媽媽 ⟪N:{ID[7]}⟫ 爸爸 ⟪N:{ID[8]}⟫",
    f"ID: ⟪N:{ID[9]}⟫ / card ⟪C:{group(VISA, (4, 4, 4, 4))}⟫",
    f"台湾の居留証番号は⟪N:{ARC_OLD[1]}⟫です",
    f"健保卡上的身分證號⟪N:{ID[10]}⟫跟卡號不一樣喔",
    f"⟪N:{ID[11]}⟫",
    f"訂房需要身分證，我的是⟪N:{ID[12]}⟫，電話⟪P:0922-111-333⟫",
    f"外籍配偶居留證 ⟪N:{ARC_OLD[2]}⟫ 快到期了",
    f"小孩的身分證⟪N:{ID[13]}⟫，請幫忙加保",
    f"ID number ⟪N:{ID[14]}⟫ for the booking",
    f"老闆要我填⟪N:{ID[0].lower()}⟫這樣可以嗎",
    f"舊式統一證號⟪N:{ARC_OLD[3]}⟫還能用到2030年底",
    # credit cards
    f"卡號 ⟪C:{group(VISA, (4, 4, 4, 4))}⟫",
    f"信用卡⟪C:{VISA2}⟫，有效期限 12/27",
    f"MasterCard ⟪C:{group(MC, (4, 4, 4, 4), '-')}⟫",
    f"用這張刷：⟪C:{group(MC2, (4, 4, 4, 4))}⟫",
    f"新的Master卡 ⟪C:{MC_2SERIES}⟫",
    f"AMEX ⟪C:{group(AMEX, (4, 6, 5))}⟫ 到期 03/26",
    f"美國運通⟪C:{group(AMEX2, (4, 6, 5), '-')}⟫",
    f"JCB卡號⟪C:{group(JCB, (4, 4, 4, 4))}⟫",
    f"JCBカード ⟪C:{group(JCB2, (4, 4, 4, 4), '-')}⟫ で払います",
    f"銀聯卡 ⟪C:{UNIONPAY}⟫",
    f"銀聯19碼 ⟪C:{UNIONPAY19}⟫",
    f"Discover ⟪C:{group(DISCOVER, (4, 4, 4, 4))}⟫",
    f"Discover ⟪C:{DISCOVER65}⟫ also works",
    f"大來卡 ⟪C:{group(DINERS, (4, 6, 4))}⟫",
    f"Diners ⟪C:{DINERS36}⟫",
    f"舊的Visa卡 ⟪C:{VISA13}⟫ 停用了",
    f"⟪C:{group(VISA2, (4, 4, 4, 4), '-')}⟫ 安全碼 123",
    f"卡號是⟪C:{VISA}⟫，到期日05/28，背面三碼我等等傳",
    f"幫我訂機票，用⟪C:{group(MC, (4, 4, 4, 4))}⟫這張",
    f"Card: ⟪C:{AMEX}⟫ exp 11/25",
    f"刷卡失敗的那張是⟪C:{group(JCB, (4, 4, 4, 4), '-')}⟫，換⟪C:{group(VISA2, (4, 4, 4, 4), '-')}⟫",
    f"クレジットカード番号：⟪C:{group(VISA, (4, 4, 4, 4))}⟫",
    f"付款資訊 ⟪C:{group(MC2, (4, 4, 4, 4), '-')}⟫ 王小明",
    # IP addresses
    "伺服器IP是⟪I:192.168.1.10⟫",
    "連不上 ⟪I:10.0.0.1⟫:8080",
    "請把 ⟪I:203.0.113.45⟫ 加到白名單",
    "ssh root@⟪I:172.16.0.5⟫ 密碼跟之前一樣",
    "http://⟪I:192.168.0.1⟫/admin 打不開",
    "DNS 設 ⟪I:8.8.8.8⟫ 跟 ⟪I:1.1.1.1⟫",
    "內網範圍 ⟪I:10.0.0.0⟫/8",
    "IPv6 位址 ⟪I:2001:db8::1⟫",
    "本機 ⟪I:::1⟫ 可以連，外面不行",
    "完整的是⟪I:2001:0db8:85a3:0000:0000:8a2e:0370:7334⟫",
    "[⟪I:2001:db8::1⟫]:8080 連線逾時",
    "登入紀錄顯示 ⟪I:114.34.56.78⟫，不是我",
    "我家IP⟪I:61.220.10.3⟫被封鎖了",
    "防火牆擋了⟪I:192.168.1.1⟫-⟪I:192.168.1.255⟫",
    "router 在 ⟪I:192.168.50.1⟫，NAS 在 ⟪I:192.168.50.20⟫",
    "link-local ⟪I:fe80::1ff:fe23:4567:890a⟫",
    "對方的IP：⟪I:140.112.8.116⟫。",
    "IPv4-mapped ⟪I:::ffff:192.0.2.128⟫",
    "サーバーのIPは⟪I:198.51.100.7⟫です",
    "gateway ⟪I:2001:db8:0:1::1⟫ と ⟪I:10.1.2.3⟫",
    # more formats, written before checking them against the matcher
    "手機:⟪P:0912-345-678⟫",
    "tel:⟪P:+886912345678⟫",
    "我手機 ⟪P:0912-345678⟫ 白天比較好找",
    "⟪P:(07)123-4567⟫ 是舊號碼，新的是⟪P:(07)234-5678⟫",
    "⟪P:02 2345-6789⟫ 找會計",
    "⟪P:02-2345 6789⟫ 這支電話",
    "⟪P:+886 912-345-678⟫ 是我的 WhatsApp",
    "⟪P:+886-2-2345-6789⟫",
    "⟪P:886-912-345-678⟫ 這樣寫對嗎",
    "電話：⟪P:02-2345-6789⟫ 分機 123",
    "我的新號碼⟪P:0912-345-678⟫。",
    "⟪P:+81 (0)3-1234-5678⟫ までどうぞ",
    "⟪P:+81 80 1234 5678⟫",
    "⟪P:+886 912345678⟫",
    "⟪E:INFO@EXAMPLE.COM.TW⟫ 全大寫也收得到",
    "寄件者 <⟪E:user@example.com⟫>",
    "⟪E:user@123.example.com⟫",
    "取消訂閱 https://example.com/unsubscribe?email=⟪E:abc@example.com⟫",
    "Contact: ⟪E:sales@example.com⟫. 謝謝",
    f"身分證 ⟪N:{ID[6]}⟫ 電話 ⟪P:0912345678⟫",
    f"ID:⟪N:{ID[7]}⟫",
    f"(⟪N:{ID[8]}⟫)",
    f"身分證⟪N:{ID[9].translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})}⟫（全形）",
    f"⟪C:{group(VISA, (4, 4, 4, 4), '-')}⟫ 到期 12/27 CVV 123",
    f"⟪C:{group(VISA2, (4, 4, 4, 4))}⟫的卡被盜刷",
    f"卡號:⟪C:{VISA}⟫",
    "IP:⟪I:192.168.1.1⟫",
    "子網路 ⟪I:192.168.1.0⟫/24",
    "ping ⟪I:8.8.4.4⟫ 看看",
    "⟪I:2001:DB8::FF00:42:8329⟫ 是哪台？",
    "⟪I:fe80::1%eth0⟫ 只能在區網用",
    "localhost ⟪I:127.0.0.1⟫ 跑起來了",
    "路由器頁面顯示 ⟪I:192.168.001.001⟫",
    # several kinds at once
    f"姓名：林小美 身分證：⟪N:{ID[3]}⟫ 手機：⟪P:0912-000-111⟫ Email：⟪E:mei.lin@example.com⟫",
    f"退款請匯到卡號⟪C:{VISA}⟫，有問題打⟪P:02-2345-6789⟫或寫信到⟪E:refund@shop.example.tw⟫",
    "log: user=⟪E:amy@example.com⟫ ip=⟪I:203.0.113.9⟫ status=401",
    "⟪E:0912345678a.b@c.com⟫（手機號碼當帳號）",
    "⟪P:0912345678⟫，⟪E:a.b@c.com⟫",
    "⟪E:0912345678@gmail.com⟫ 是我的信箱",
    f"資料如下\n電話：⟪P:0933-123-456⟫\n身分證：⟪N:{ID[1]}⟫\n卡號：⟪C:{group(MC, (4, 4, 4, 4), '-')}⟫",
    "新同事 ⟪E:tom.chen@example.com⟫ 分機 1234，手機 ⟪P:0911-222-333⟫",
    "お問い合わせは⟪P:03-1234-5678⟫または⟪E:info@example.co.jp⟫まで",
    f"⟪N:{ARC_NEW[0]}⟫ ⟪P:+81 90-1234-5678⟫",
    "VPN ⟪I:10.8.0.1⟫ 帳號 ⟪E:vpn-user@corp.example.com⟫",
    f"我是王大明⟪P:0912345678⟫⟪N:{ID[2]}⟫",
]

WITHOUT_PII = [
    # dates and times
    "明天2024-05-01下午14:30見",
    "2024/05/01 到 2024/05/07 放假",
    "113年5月1日開會，地點在三樓",
    "會議改到 05/12 09:30-11:00",
    "令和6年5月1日（水）14時30分から",
    "生日是1990.05.12",
    "20240501 那天的照片傳給你",
    "時間 2024-05-01T14:30:00+08:00",
    "倒數 00:05:32",
    "2024年12月31日23:59:59截止",
    "營業時間 0900-2100，週一公休",
    "早上0800-1200有空",
    "「2024-05-01 ~ 2024-05-31」活動期間",
    "5/1、5/2、5/3 三天都可以",
    "下週三 19:00～21:00 讀書會",
    "2024.05.01 12:30 出發",
    "民國113年05月01日",
    "1990年生，今年34歲",
    "航班 CI 100 07:50 起飛 11:45 抵達",
    "明日10時〜12時は会議です",
    # prices and amounts
    "總共 NT$1,234,567 元",
    "這台 iPhone 15 Pro 要 NT$36,900",
    "月薪 45,000，年終 2.5 個月",
    "¥12,800（税込）",
    "3,990元含運",
    "價格 1234567 元",
    "房貸 8,880,000 利率 2.185%",
    "電話費 1,299 元",
    "總金額 NT$ 12,345,678",
    "股票 2330 台積電 收盤 1,085",
    "市值 25,000,000,000,000 元",
    "捐了 100000 元",
    "USD 1,000.50 = TWD 32,516.25",
    "今天營業額 98765432 元",
    # invoices, tax IDs, orders, tracking
    "統一發票 AB-12345678 中了兩百元",
    "發票號碼 AB12345678",
    f"發票號碼 {INVOICE_LIKE_ARC}",
    "統編 12345678",
    "統一編號：04595252",
    "公司統編 53212539，抬頭寫我們公司",
    "載具 /ABC1234",
    "訂單編號 20240501123456",
    "蝦皮訂單 240501ABCD1234",
    "黑貓宅急便 9012-3456-7890",
    "郵局掛號 12345678901234567890",
    "順豐單號 SF1234567890123",
    "EMS EE123456789TW 已出貨",
    "追蹤碼 0123 4567 8901 2345",
    "order #A123456 shipped",
    "訂單號碼 1123456789012 請查收",
    "注文番号 1234-5678-9012",
    "Order No. 4000-1234-5678",
    "7-11 取貨編號 F12345678901",
    "商品條碼 4710088432113",
    f"國際條碼 {EAN_LUHN}",
    "ISBN 978-986-123-456-7",
    "帳號 012-34-567890-1",
    "匯款帳號 (822) 012345678901",
    "報稅案件編號 112A0123456789",
    "掛號號碼 27 號，還要等很久",
    # failing checksums and look-alike IDs
    f"身分證 {bad_check(ID[0])} 系統說格式錯誤",
    f"這個 {bad_check(ID[5])} 打錯了吧",
    "範例 A323456789 第二碼不能是3",
    f"居留證 {bad_check(ARC_NEW[0])} 查不到",
    f"舊證號 {bad_check(ARC_OLD[0])} 也不對",
    "學號 B12345678",
    "學號 r12345678 選課失敗",
    "護照號碼 312345678",
    f"XA{ID[0]}9",
    f"序號 {ID[0]}X 是產品序號",
    "型號 A123456789B",
    "車牌 ABC-1234",
    "座位 A12 B13",
    # card-like numbers that fail Luhn or have no brand
    f"卡號 {group(NOT_LUHN_VISA, (4, 4, 4, 4))} 刷不過",
    f"{group(NOT_LUHN_MC, (4, 4, 4, 4), '-')} 這樣對嗎",
    "1234 5678 9012 3456",
    f"禮物卡序號 {group(LUHN_UNKNOWN_IIN, (4, 4, 4, 4), '-')}",
    f"兌換碼 {LUHN_UNKNOWN_IIN2}",
    "悠遊卡號 1234567890",
    "4111 1111 1111 我只記得前面",
    "信用卡末四碼 1111",
    "卡號前六碼 411111",
    "兌換碼 ABCD-1234-EFGH",
    # versions
    "請更新到 v1.2.3",
    "Python 3.11.7 / Django 5.2.19",
    "LINE 版本 14.5.1",
    "iOS 17.4.1 有 bug",
    "version 1.2.3.4 已發布",
    "更新到 v1.2.3.4 就好了",
    "Chrome 124.0.6367.91",
    "韌體 2.0.1.15 可以升級",
    "node v20.11.0",
    "版本號：10.2.0.1",
    "Windows 10.0.19045.3803",
    "バージョン 2.1.0.3 にアップデートしてください",
    # IP look-alikes
    "256.1.1.1 不是合法的 IP",
    "999.999.999.999",
    "192.168.1 少一段",
    "1.2.3.4.5 是 OID 的一部分",
    "IP 有4段，像 a.b.c.d 這樣",
    "MAC 00:1A:2B:3C:4D:5E",
    "C++ 的 std::vector 怎麼用",
    "時間 12:30:45",
    "Ruby 的 Foo::Bar::Baz",
    "比例 16:9 跟 4:3",
    # scores, math
    "比數 3:2，延長賽 12:10",
    "3+4=7, 2*3=6",
    "1/3 ≈ 0.333",
    "(1+2)*3 = 9",
    "12.5 + 7.25 = 19.75",
    "2^10 = 1024",
    "圓周率 3.14159265358979",
    "100% 確定",
    "98.6°F 是 37°C",
    "座標 25.0330, 121.5654",
    "大樂透 03 12 25 33 41 45 特別號 08",
    "今彩539：05 11 23 36 38",
    "+1 同意",
    "+886 是台灣的國碼",
    "我們 +81 的朋友",
    # URLs, mentions, LINE IDs
    "https://example.com/path?id=1234567890",
    "https://line.me/R/ti/p/@abc123",
    "https://www.google.com/maps/@25.0330,121.5654,15z",
    "https://ntu.edu.tw/~b12345678/",
    "@陳小明 明天記得帶東西",
    "@Bot 幫我翻譯這句",
    "加我LINE：@abc123",
    "@all 今晚聚餐 19:30",
    "我的 IG 是 @jenny_lin.tw",
    "推特 @elonmusk",
    "群組裡 @王大明 @李小華 看一下",
    "LINE ID: @shop.tw",
    "用 @gmail.com 結尾的都可以",
    "寄到 user@ 後面忘了",
    "email 欄位寫 foo@bar 會報錯",
    # more look-alikes, written before checking them against the matcher
    "第 3.2.1.4 節有說明",
    "10:00-12:00 開放",
    "計時 12:30:45.123",
    "0920 要開會",
    "開會時間 0930-1130",
    "郵局帳號 0001234-0567890",
    "帳號 00412345678901",
    "〒150-0002 渋谷区渋谷2-21-1",
    "平成2年3月4日生まれ",
    "ISBN 9789861234567",
    "1999 市民專線、165 反詐騙",
    "身分證後四碼 6789",
    "Windows 11 23H2",
    "圖檔要 icon@2x.png 跟 icon@3x.png",
    "$1.234.567 是歐洲的寫法",
    "座號 12 號 成績 95.5",
    "電話號碼格式是 09XX-XXX-XXX",
    "手機末三碼 678",
    "請輸入 A 開頭 10 碼的身分證字號",
    "統計: 2023年 1,234,567 人次，2024年 1,345,678 人次",
    # addresses and other numbers
    "郵遞區號 10617",
    "〒100-0001 東京都千代田区千代田1-1",
    "台北市大安區羅斯福路四段1號",
    "東京都港区六本木6-10-1",
    "身高 175 體重 68",
    "房號 1203，密碼 0000",
    "溫度 28.5°C",
    "電話 0912-345 後面忘了",
    "0912 開頭的都是手機",
    "請打 119 或 110",
    "客服電話請見官網",
    "分機 1234",
    "第 3 頁第 12 行",
    "血壓 120/80",
    "0.5 + 0.25 = 0.75",
    "壓縮檔密碼 20240501",
    "學年度 112-2 課程代碼 CSIE1212",
    "12345 上山打老虎",
    "身分證正反面影本請帶來",
    "請提供身分證字號與生日",
    "我的信箱是我名字加生日，你知道的",
    "信用卡帳單 5 月 20 日到期",
    "IP 位址要問網管",
    "Hello! 今天天氣很好 ☀️",
    "好的，謝謝你～",
    "晚點再說吧😂",
    "ありがとうございます！また明日。",
    "這週末要不要去九份？",
    "Meeting moved to 3pm, room 1203.",
]


# Written after the matcher was tuned on the lists above, and not used to tune it: the
# "holdout" split gives a less optimistic reading of precision and recall.
HOLDOUT_WITH_PII = [
    "明天寄合約到⟪E:contract.2024@law-firm.com.tw⟫，副本給⟪E:boss@law-firm.com.tw⟫",
    "電話沒接，我再打一次⟪P:0937-246-810⟫",
    "店家電話⟪P:（02）2771-1234⟫",
    "⟪P:+886.912.345.678⟫",
    "聯絡電話:⟪P:02-2771-1234⟫轉567",
    "手機⟪P:０９３７－２４６８１０⟫",
    "ご連絡は⟪P:080-9876-5432⟫まで",
    "⟪P:+1 604 555 0199⟫ (Vancouver)",
    "Mobile ⟪P:+886 988 123 456⟫",
    "她的號碼⟪P:0958 765 432⟫你存一下",
    f"⟪N:{ID[10]}⟫王小明 男 1985/03/02",
    f"申請人統一證號：⟪N:{ARC_NEW[1]}⟫（新式）",
    f"身分證號碼為⟪N:{ID[11].lower()}⟫，請核對",
    f"訂單付款卡號⟪C:{VISA2}⟫",
    "card number ⟪C:5105 1051 0510 5100⟫ (test)",
    f"⟪C:{JCB2}⟫",
    f"卡片 ⟪C:{AMEX2}⟫、⟪C:{group(DINERS, (4, 6, 4), '-')}⟫",
    "server ⟪I:52.68.123.4⟫ 在東京區",
    "⟪I:2404:6800:4004:80a::200e⟫ は Google の IPv6",
    "允許 ⟪I:172.31.255.255⟫ 連入",
    "IP：⟪I:100.64.0.1⟫（CGNAT）",
    "請在⟪I:::1⟫跟⟪I:127.0.0.1⟫都測試",
    "轉寄到⟪E:tw.support@example.com⟫並附上手機⟪P:0912-876-543⟫",
    f"客戶：⟪N:{ID[12]}⟫／⟪P:04-2345-6789⟫／⟪E:client@example.net⟫",
    "請撥打⟪P:0800-000-123⟫或⟪P:(02)2345-6789⟫",
    "電話📞⟪P:0912-345-678⟫",
    "⟪E:jane.doe@example.museum⟫",
    "⟪E:王小明@example.com⟫ 這種中文信箱收得到嗎",
    "我的Gmail: ⟪E:Peter.Pan.1990@Gmail.com⟫",
    "⟪P:0912345678⟫/⟪P:0987654321⟫",
    "⟪P:02-2345-6789⟫ ext.123",
    "⟪P:+81 3 1234 5678⟫（東京オフィス）",
    "台中 ⟪P:04-22345678⟫",
    "⟪P:(037)123456⟫",
    "Phone: ⟪P:+886 2 2771 1234⟫ / Fax: ⟪P:+886 2 2771 1235⟫",
    f"刷⟪C:{group(UNIONPAY, (4, 4, 4, 4), '-')}⟫這張銀聯",
    f"⟪N:{ARC_OLD[2]}⟫是我以前的居留證號",
    "IPv6 ⟪I:2001:db8:85a3::8a2e:370:7334⟫",
    "收件信箱：⟪E:abc_123@sub-domain.example.co.uk⟫",
    f"LINE Pay 綁的卡 ⟪C:{group(VISA, (4, 4, 4, 4))}⟫ 要換掉",
    f"我的身分證字號⟪N:{ID[13]}⟫、生日 1988/8/8、電話⟪P:0912-345-678⟫",
    # longer messages (100-250 characters), as people paste them into a chat
    "大家好，明天下午兩點在台北車站東三門集合，記得帶身分證影本和兩張照片。如果臨時有問題可以打我手機⟪P:0912-345-678⟫或寄信到⟪E:jenny.lin@gmail.com⟫，報名費NT$1,200請在5/1前匯款，謝謝大家！",
    f"【訂房資料】姓名：張志明\n身分證字號：⟪N:{ID[4]}⟫\n手機：⟪P:0988-765-432⟫\n入住：2024/06/14（五）15:00\n退房：2024/06/16（日）11:00\n人數：2大1小\n備註：需要加床，房價每晚NT$3,600",
    "Hi team, the staging box moved to ⟪I:10.20.30.40⟫ (was 10.20.30.4x). If SSH fails, ping ⟪E:devops@example.com⟫ or call ⟪P:+886 2 2345 6789⟫ ext. 301. Build 2.4.1 is deployed; version 2.4.1.7 ships on 5/20.",
    f"上次刷卡失敗，客服說要重新綁定。新卡號是⟪C:{group(MC2, (4, 4, 4, 4))}⟫，有效期限 09/28，安全碼我不傳在這裡。帳單地址：台中市西屯區台灣大道三段99號12樓之3，統編 53212539。",
    "お世話になっております。来週の打ち合わせの件ですが、5月15日（水）14:00〜15:30で調整しました。ご不明点は⟪P:03-1234-5678⟫（代表）または担当の⟪E:sato.k@example.co.jp⟫までご連絡ください。よろしくお願いいたします。",
    f"媽，你要的資料我整理好了：爸的身分證⟪N:{ID[5]}⟫、健保卡號 0000 1234 5678、你的手機⟪P:0933-456-789⟫，醫院預約在 6/3 早上 09:30，門診號碼 27 號，掛號費 150 元。",
    "伺服器清單：web1 ⟪I:192.168.10.11⟫、web2 ⟪I:192.168.10.12⟫、db ⟪I:192.168.10.20⟫（port 5432），IPv6 都在 ⟪I:2001:db8:10::20⟫ 底下。監控告警請寄 ⟪E:noc@corp.example.com⟫，值班電話 ⟪P:0800-000-123⟫。",
]

HOLDOUT_WITHOUT_PII = [
    "會議室 A-1203 / B-0912",
    "發票 XY-87654321 已開立",
    "統一編號 22099131",
    "訂單 #202405010912345678",
    "請在 09/12 前回覆",
    "0912 見",
    "比分 21:19、21:15",
    "版本 2.10.3.1",
    "python==3.11.4",
    "價格：¥1,980〜¥2,980",
    "總計 1,234.56 USD",
    "身分證 Z123456789",
    "卡號 3530 1113 3330 0001",
    "序號 4111-1111-1111-1111-2222",
    "IP 位址是 192.168.x.x",
    "2001:db8 是文件用的前綴",
    "時間 23:59:59",
    "比例 1:2:3",
    "手機殼 iPhone 15 / 6.1 吋",
    "郵遞區號 100-01",
    "電話欄位請填 09 開頭 10 碼",
    "我的 LINE ID 是 abc0912",
    "https://shopee.tw/product/12345678/9876543210",
    "統一發票 2024年3-4月 中獎號碼 12345678 / 87654321",
    "年度 2023/2024",
    "這台筆電序號 5CG1234567",
    "捷運 1.2.3 號出口",
    "電費 NT$1,024 度數 256",
    "匯率 1 USD = 32.45 TWD",
    "溫度 -3.5 到 12.0 度",
    "身份證影本 x1、照片 x2",
    "ID: abc-123-xyz",
    "10.5.2 版的 App 有問題",
    "2024-05-01 到 2024-05-03 的訂單共 1,234 筆",
    "email 我 @Amy 她會轉給你",
    "ssh -p 2222 admin@server",
    "5G 網路 3.5GHz",
    # longer messages without personal data
    "今天的會議紀錄：1. Q2 營收 NT$12,345,678，比去年同期成長 12.5%。2. 新版 App 2.3.1 預計 5/20 上架，3.0.0 排在 Q3。3. 下次會議 2024-06-03 14:00，地點 12 樓第 3 會議室。4. 統一編號 53212539 的發票請財務在月底前開立。",
    "Release notes v4.2.0.1: fixed a crash on iOS 17.4.1, bumped Python to 3.12.3, Chrome 124.0.6367.91 support, and the score widget now shows 3:2 instead of 3-2. Order #20240501-0042 will be refunded NT$1,990 by 2024/05/31.",
    "週末行程：週六 08:30 台北車站集合，搭 09:00 自強號 123 次到花蓮（票價 NT$440），中午吃扁食，下午去七星潭。週日 07:00 看日出，10:30 退房，搭 14:20 的車回台北，大約 17:05 到。預算每人 5,000 元以內。",
    "ご注文ありがとうございます。注文番号：1234-5678-9012、合計金額：¥12,800（税込）、お届け予定日：2024年5月20日〜22日。配送状況は追跡番号 4567-8901-2345 でご確認いただけます。",
    "@all 今天晚上 19:30 在公司 3F 聚餐，已訂 12 人的位子，每人先收 800 元，用 LINE Pay 轉給 @小美 就好。停車場在 B2，車位 23~35 號可以停。比賽轉播 20:00 開始，目前比數 2:1。",
    "大樂透第 113000045 期開獎號碼：03 12 25 33 41 45，特別號 08。威力彩第 113000038 期：第一區 05 11 23 28 31 36，第二區 07。頭獎 1 注，獎金 NT$235,678,901。",
    "Server stats 2024-05-01 12:00:00 UTC: cpu 73.5%, mem 12.3/16.0 GB, disk 450.2 GB, uptime 12:03:45:10, requests 1,234,567, p99 0.245 s, build 5.12.0.42, kernel 6.1.0-18-amd64.",
]


MARK = re.compile(r"⟪([EPNCI]):(.*?)⟫", re.S)


def parse(marked: str) -> dict:
    text, expected, spans = [], [], []
    pos = cursor = 0
    for m in MARK.finditer(marked):
        plain = marked[cursor : m.start()]
        text.append(plain)
        expected.append(plain)
        pos += len(plain)
        kind = KINDS[m.group(1)]
        value = m.group(2)
        spans.append([pos, pos + len(value), kind])
        text.append(value)
        expected.append(MARKERS[kind])
        pos += len(value)
        cursor = m.end()
    text.append(marked[cursor:])
    expected.append(marked[cursor:])
    assert "⟪" not in "".join(text) and "⟫" not in "".join(text), marked
    return {"text": "".join(text), "expected": "".join(expected), "spans": spans}


def main() -> None:
    rows = []
    for split, messages, with_pii in (
        ("dev", WITH_PII, True),
        ("dev", WITHOUT_PII, False),
        ("holdout", HOLDOUT_WITH_PII, True),
        ("holdout", HOLDOUT_WITHOUT_PII, False),
    ):
        for marked in messages:
            row = parse(marked)
            assert bool(row["spans"]) == with_pii, marked
            rows.append({**row, "split": split})
    texts = [r["text"] for r in rows]
    assert len(texts) == len(set(texts)), "duplicate messages"
    # Interleave so any slice of the file has both kinds of message.
    random.Random(7).shuffle(rows)
    with OUT.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with_pii = sum(bool(r["spans"]) for r in rows)
    print(f"{len(rows)} messages ({with_pii} with PII) -> {OUT}")


if __name__ == "__main__":
    main()
