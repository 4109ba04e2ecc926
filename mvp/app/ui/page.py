"""What the page carries besides its components: the CSS, the script in the page head, the small
JavaScript snippets that events run in the browser, and the Chinese toast titles."""

SHOW_COMPARE_JS = "() => { const b = document.querySelector('#compare-box'); if (b) b.scrollIntoView({block: 'center'}); }"
# Gradio's chatbot follows new text only while its scroll position is near the bottom; sending a
# message after reading further up brings it back down, so the reply that follows is in view.
FOLLOW_CHAT_JS = "() => { const w = document.querySelector('#chatbot .bubble-wrap'); if (w) w.scrollTo(0, w.scrollHeight); }"
# Opening a flagged conversation from the review queue: scroll to the flagged message and mark it for a
# few seconds (the chat renders after the tab switch, hence the retries).
FOCUS_MESSAGE_JS = """(i) => {
  if (i === null || i === undefined || i < 0) return;
  let tries = 0;
  const go = () => {
    // one element per message, in order (consecutive messages of one role share a .message-row)
    const rows = document.querySelectorAll('#chatbot [data-testid="user"], #chatbot [data-testid="bot"]');
    if (rows.length <= i) { if (tries++ < 20) setTimeout(go, 150); return; }
    const row = rows[i];
    const wrap = row.closest('.bubble-wrap');
    // centre it inside the chat's own scroll area; again once the chat has settled (its autoscroll
    // may run after a late render)
    const centre = () => { if (wrap) wrap.scrollTop += row.getBoundingClientRect().top - wrap.getBoundingClientRect().top
                                                      - wrap.clientHeight / 2 + row.offsetHeight / 2; };
    centre(); setTimeout(centre, 400); setTimeout(centre, 1200);
    row.classList.add('flag-focus');
    setTimeout(() => row.classList.remove('flag-focus'), 8000);
  };
  setTimeout(go, 150);
}"""
# Gradio's status tracker says "queue: 2/3 |" and "processing |" in English while a reply waits for the
# one model slot: shown in Chinese instead, so a clinician sees their place in the queue.
HEAD = """<script>
(() => {
  const QUEUE = /^queue: (\\d+)\\/(\\d*) \\|$/;
  const say = (node) => {
    const text = node.nodeValue;
    if (!text) return;
    const m = text.match(QUEUE);
    if (m) node.nodeValue = m[2] ? `排队中：第 ${m[1]} 位（共 ${m[2]} 位）|` : `排队中：第 ${m[1]} 位 |`;
    else if (text === 'processing |') node.nodeValue = '生成中 |';
  };
  const walk = (root) => {
    if (root.nodeType === Node.TEXT_NODE) return say(root);
    const it = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = it.nextNode(); n; n = it.nextNode()) say(n);
  };
  new MutationObserver((records) => records.forEach((r) => {
    if (r.type === 'characterData') say(r.target); else r.addedNodes.forEach(walk);
  })).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
})();
</script>"""
TOAST_TITLES = {"info": "提示", "warning": "注意", "error": "无法完成", "success": "完成"}
CSS = """
#disclaimer {background:#fff4e5;border:1px solid #f0b35a;border-radius:6px;padding:6px 12px;}
#disclaimer p {margin:0;color:#7a4b00;}
#demo-notice p {color:#8a1c1c;}
#cmp-choices button {min-width:60px;}
#chatbot .flag-focus {outline:3px solid #d9534f;outline-offset:2px;border-radius:8px;}
""" + "".join(  # Gradio 6.31 titles every toast with its English type ("Info"): show the Chinese one instead
    f".toast-title.{kind} {{font-size:0 !important;}} .toast-title.{kind}::before {{content:'{title}';font-size:var(--text-md);}}\n"
    for kind, title in TOAST_TITLES.items())
