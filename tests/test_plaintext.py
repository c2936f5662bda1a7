"""Answers as LINE shows them: Markdown turned into plain text, reasoning blocks taken out."""
import pytest

from conversations.line.plaintext import to_line_text
from models_registry.reasoning import without_reasoning

CASES = {
    "plain text is left alone": ("Hello there.\nSecond line.", "Hello there.\nSecond line."),
    "ATX headings lose their hashes": ("# Title\n## 小標題 ##\nText", "Title\n小標題\nText"),
    "setext headings lose their underline": ("Title\n=====\nSub\n---\nText", "Title\nSub\nText"),
    "bold, italic and strike markers go": (
        "**bold** *it* __strong__ _em_ ~~old~~ ***both***", "bold it strong em old both"),
    "emphasis around CJK": ("**重要**：請*務必*閱讀~~舊的~~說明。", "重要：請務必閱讀舊的說明。"),
    "underscores inside words stay": ("snake_case_name and __init__.py", "snake_case_name and init.py"),
    "a lone star is arithmetic": ("2 * 3 * 4 = 24 and a*b", "2 * 3 * 4 = 24 and a*b"),
    "bullets become dots, nesting kept": (
        "- one\n* two\n+ three\n  - nested", "• one\n• two\n• three\n  • nested"),
    "CJK bullets": ("- 第一點\n- 第二點", "• 第一點\n• 第二點"),
    "task lists": ("- [ ] todo\n- [x] done", "• ☐ todo\n• ☑ done"),
    "numbered lists are kept": ("1. one\n2) two\n10. ten", "1. one\n2. two\n10. ten"),
    "fenced code keeps its content": (
        "Run:\n```python\nx = **2**  # not bold\n    indented\n```\nDone",
        "Run:\nx = **2**  # not bold\n    indented\nDone"),
    "tilde fences and an unclosed fence": ("~~~\na_b_c\n~~~\n```\nrest *stays*", "a_b_c\nrest *stays*"),
    "inline code keeps its content": ("Use `**kwargs` and `a_b_`.", "Use **kwargs and a_b_."),
    "links read text (URL)": ("See [the docs](https://example.com/a_b \"Title\").",
                              "See the docs (https://example.com/a_b)."),
    "CJK link text": ("請看[說明文件](https://example.com)。", "請看說明文件 (https://example.com)。"),
    "bare URLs are left whole": ("Go to https://x.tw/_p_/a*b*c or http://y.tw/__init__ now",
                                 "Go to https://x.tw/_p_/a*b*c or http://y.tw/__init__ now"),
    "a link whose text is its URL": ("[https://x.tw](https://x.tw)", "https://x.tw"),
    "autolinks and mailto": ("<https://line.me> or <mailto:a@b.tw>", "https://line.me or mailto:a@b.tw"),
    "bold link text": ("[**Bold** link](https://x.tw)", "Bold link (https://x.tw)"),
    "images": ("![圖表](https://x.tw/c.png)", "圖表 (https://x.tw/c.png)"),
    "reference links": ("See [docs][d] and [x].\n\n[d]: https://d.tw\n[x]: <https://x.tw> \"X\"",
                        "See docs (https://d.tw) and [x]."),
    "a two-column table becomes pairs": (
        "| 項目 | 價格 |\n|:---|---:|\n| 蘋果 | 30 元 |\n| **香蕉** | 20 元 |", "項目：價格\n蘋果：30 元\n香蕉：20 元"),
    "a wider table becomes lines of cells": (
        "Name | Age | City\n--- | --- | ---\nAmy | 30 | 台北\nBen | 4 | a \\| b",
        "Name | Age | City\nAmy | 30 | 台北\nBen | 4 | a | b"),
    "a pipe in prose is not a table": ("a | b\nno rule here", "a | b\nno rule here"),
    "block quotes lose their marker": ("> quoted **words**\n>> deeper", "quoted words\ndeeper"),
    "rules vanish": ("above\n\n---\n\nbelow\n\n***\n", "above\n\nbelow"),
    "blank lines collapse to one": ("a\n\n\n\nb\n\n", "a\n\nb"),
    "backslash escapes": (r"\*not italic\* and 1\. not a list", "*not italic* and 1. not a list"),
    "html line breaks": ("one<br>two<br/>three", "one\ntwo\nthree"),
    "windows line ends": ("# T\r\n\r\n- a\r\n", "T\n\n• a"),
    "full-width and emoji text untouched": ("😀 ＡＢＣ，好的！", "😀 ＡＢＣ，好的！"),
}


@pytest.mark.parametrize("markdown, expected", CASES.values(), ids=CASES.keys())
def test_markdown_becomes_line_text(markdown, expected):
    assert to_line_text(markdown) == expected


def test_a_typical_chinese_answer():
    answer = (
        "## 台北一日遊建議\n\n"
        "以下是**推薦行程**：\n\n"
        "1. **上午**：參觀[故宮博物院](https://www.npm.gov.tw)\n"
        "2. **中午**：在*士林夜市*附近用餐\n\n"
        "### 注意事項\n"
        "- 記得帶`悠遊卡`\n"
        "- 天氣資訊：\n\n"
        "| 時段 | 氣溫 |\n| --- | --- |\n| 早上 | 22°C |\n| 下午 | 28°C |\n"
    )
    assert to_line_text(answer) == (
        "台北一日遊建議\n\n"
        "以下是推薦行程：\n\n"
        "1. 上午：參觀故宮博物院 (https://www.npm.gov.tw)\n"
        "2. 中午：在士林夜市附近用餐\n\n"
        "注意事項\n"
        "• 記得帶悠遊卡\n"
        "• 天氣資訊：\n\n"
        "時段：氣溫\n早上：22°C\n下午：28°C"
    )


REASONING = {
    "a think block": ("<think>The user wants a greeting.</think>\n\nHello!", "Hello!"),
    "a thinking block": ("<thinking>\nplan\n</thinking>Answer", "Answer"),
    "capitals and attributes": ("<THINK type=\"x\">hmm</THINK>Ok", "Ok"),
    "several blocks": ("<think>a</think>One <think>b</think>two", "One two"),
    "CJK reasoning": ("<think>使用者在打招呼，我應該回應。</think>你好！", "你好！"),
    "an unclosed leading block is all reasoning": ("<think>I was cut off mid-thought", ""),
    "an unclosed block after the answer": ("Answer.\n<think>more thoughts", "Answer."),
    "a closing tag with no opening one": ("the template opened it\n</think>\nHi", "Hi"),
    "no reasoning": ("Just an answer with <b>tags</b>.", "Just an answer with <b>tags</b>."),
    "a word like thinking outside tags": ("I was thinking about <thinker>", "I was thinking about <thinker>"),
}


@pytest.mark.parametrize("text, expected", REASONING.values(), ids=REASONING.keys())
def test_reasoning_is_taken_out(text, expected):
    assert without_reasoning(text) == expected
